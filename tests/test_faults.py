"""Faults in the middle of a run lose nothing: failed checkpoint writes, corrupt checkpoints on
resume, tracking-server outages (issue 19). Real training runs, real stores, real servers."""

from __future__ import annotations

import resource
from pathlib import Path
from uuid import uuid4

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from omegaconf import open_dict

from helpers import make_config, tiny
from seqbench.run import tracking
from seqbench.run.checkpoint_io import CheckpointWriteError
from seqbench.train import train


class FileSizeLimit(L.Callback):
    """At the end of epoch ``epoch`` (index), after its metrics are logged and before Lightning's
    checkpoint callbacks (which it runs last) save, this process may no longer write files
    past ``limit`` bytes (RLIMIT_FSIZE; Python ignores SIGXFSZ, so writes fail with EFBIG): a
    full disk, as the file layer reports it to the checkpoint writer. Lifted when the trainer
    stops, so the run's end reaches the store."""

    def __init__(self, epoch: int, limit: int) -> None:
        self.epoch, self.limit = epoch, limit
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.saved[1]))

    def _lift(self) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self.saved)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._lift()

    def on_train_end(self, trainer, pl_module) -> None:
        self._lift()


def _cfg(tmp_path: Path, *overrides: str):
    cfg = make_config(
        tmp_path,
        [
            *tiny(epochs=3),
            f"logger.experiment_name=faults-{uuid4().hex[:8]}",
            "+logger.log_model=false",
            "heartbeat.interval=0",
            *overrides,
        ],
    )
    return cfg


def _runs(cfg) -> list:
    client = MlflowClient(cfg.logger.tracking_uri)
    exp = client.get_experiment_by_name(cfg.logger.experiment_name)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_fails_the_run(tmp_path):
    cfg = _cfg(tmp_path)
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    with open_dict(cfg):  # at the second epoch's checkpoint, no file may grow past 4 KiB
        cfg.callbacks.disk_full = {
            "_target_": f"{__name__}.FileSizeLimit",
            "epoch": 1,
            "limit": 4096,
        }
    with pytest.raises(CheckpointWriteError, match="last.ckpt|epoch"):
        train(cfg)
    last = ckpt_dir / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)  # whole, from epoch 1
    assert state["epoch"] == 0
    assert not list(ckpt_dir.glob(".*.tmp")), "a temporary file was left behind"
    for path in ckpt_dir.glob("*.ckpt"):  # whatever is there under a checkpoint's name is whole
        torch.load(path, map_location="cpu", weights_only=True)
    (run,) = _runs(cfg)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.FAILURE_REASON_TAG] == "checkpoint write failed"
    assert "could not write checkpoint" in run.data.tags[tracking.ERROR_TAG]


class CrashOnce(L.Callback):
    """Raises at the start of epoch ``epoch`` (index) the first time only (``marker`` records
    it), as a crash after that epoch's checkpoints: the same config then resumes unharmed."""

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = epoch, Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.touch()
            raise RuntimeError("simulated crash")


def _crashing_cfg(tmp_path: Path, experiment: str):
    """3 epochs that crash once at the third; ``output_dir`` tagged as Hydra's runs tag it, so
    the resume looks for the local ``last.ckpt`` first."""
    cfg = _cfg(
        tmp_path,
        f"logger.experiment_name={experiment}",
        f"+logger.tags.output_dir={tmp_path}/outputs/run",
    )
    with open_dict(cfg):
        cfg.callbacks.crash = {
            "_target_": f"{__name__}.CrashOnce",
            "epoch": 2,
            "marker": str(tmp_path / "crashed"),
        }
    return cfg


def _epochs_logged(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(int(m.step) for m in client.get_metric_history(run_id, "val/acc"))


@pytest.mark.slow
def test_a_truncated_last_checkpoint_resumes_from_the_artifact_copy(tmp_path, caplog):
    experiment = f"faults-{uuid4().hex[:8]}"
    cfg = _crashing_cfg(tmp_path, experiment)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    last = tmp_path / "outputs" / "run" / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])  # a crash in the middle of the write
    (failed,) = _runs(cfg)
    caplog.set_level("WARNING", logger="seqbench.run.checkpoints")
    result = train(_crashing_cfg(tmp_path, experiment))
    assert result.run_id == failed.info.run_id  # the same run, continued
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and str(last) in warnings[0] and "\n" not in warnings[0]
    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    steps = _epochs_logged(client, result.run_id)
    assert len(steps) == 3 and len(set(steps)) == 3  # each epoch exactly once
    resumed_from = int(run.data.tags["seqbench.resumed_from_step"])
    assert resumed_from == steps[1] + 1 or resumed_from == steps[1]  # after epoch 2, not 0


@pytest.mark.slow
def test_no_readable_checkpoint_trains_the_job_again_as_a_new_run(tmp_path):
    experiment = f"faults-{uuid4().hex[:8]}"
    cfg = _crashing_cfg(tmp_path, experiment)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
        cfg.callbacks.crash.epoch = 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    (failed,) = _runs(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    artifacts = Path(failed.info.artifact_uri.removeprefix("file://"))
    local = tmp_path / "outputs" / "run" / "checkpoints"
    copies = [*local.glob("*.ckpt"), *artifacts.rglob("*.ckpt")]  # last and best, both places
    assert len(copies) == 4, copies
    for path in copies:
        path.write_bytes(path.read_bytes()[:1000])
    result = train(cfg)
    runs = {r.info.run_id: r for r in _runs(cfg)}
    assert result.run_id != failed.info.run_id and len(runs) == 2
    assert runs[result.run_id].info.status == "FINISHED"
    assert _epochs_logged(client, result.run_id) == sorted(
        set(_epochs_logged(client, result.run_id))
    )
    assert len(_epochs_logged(client, result.run_id)) == 2
    old = runs[failed.info.run_id]
    assert old.info.status == "FAILED"
    assert old.data.tags[tracking.FAILURE_REASON_TAG] == "no readable checkpoint"
