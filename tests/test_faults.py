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
