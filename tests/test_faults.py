"""Faults in the middle of a run lose nothing: failed checkpoint writes, corrupt checkpoints on
resume, tracking-server outages (issue 19). Real training runs, real stores, real servers."""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from omegaconf import open_dict

from helpers import LocalPostgres, MlflowServer, make_config, postgres_or_skip, tiny
from seqbench.run import tracking
from seqbench.run.checkpoint_io import CheckpointWriteError
from seqbench.train import train


class FileSizeLimit(L.Callback):
    """At the end of epoch ``epoch`` (index), after its metrics are logged and before Lightning's
    checkpoint callbacks (which it runs last) save, this process may no longer write files
    past ``limit`` bytes (RLIMIT_FSIZE; Python ignores SIGXFSZ, so writes fail with EFBIG): a
    full disk, as the file layer reports it to the checkpoint writer. Lifted when the trainer
    stops, so the run's end reaches the store. ``marker``: only the first time (a file records
    it), so the same command launched again resumes unharmed."""

    def __init__(self, epoch: int, limit: int, marker: str | None = None) -> None:
        self.epoch, self.limit = epoch, limit
        self.marker = Path(marker) if marker else None
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch or (self.marker and self.marker.exists()):
            return
        if self.marker:
            self.marker.touch()
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


# -- tracking-server outages: a real `mlflow server`, killed and restarted on its port ---------

SHORT_RETRIES = {  # MLflow's own retries give up after a few seconds instead of minutes
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",  # a loaded 2-core machine answers slowly
}


class SleepEachEpoch(L.Callback):
    """Makes a tiny epoch last ``seconds`` longer, so a short run spans an outage."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import time

        time.sleep(self.seconds)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


def launch(
    root: Path,
    uri: str,
    experiment: str,
    *overrides: str,
    retries: dict[str, str] | None = SHORT_RETRIES,
    sleep: float = 1.0,
) -> subprocess.Popen:
    """``seqbench-train`` (a tiny synthetic run, each epoch ``sleep`` s longer) against the
    tracking server ``uri`` as a process; its log is ``root/launch-N.log``. ``retries``: the
    MLflow HTTP retry settings (None: MLflow's defaults)."""
    import os
    import sys

    from helpers import cli_env

    n = len(list(root.glob("launch-*.log")))
    env = {**cli_env(root), **(retries or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    args = [
        *tiny(console=True),
        f"logger.tracking_uri={uri}",
        f"logger.experiment_name={experiment}",
        "+logger.log_model=false",
        "heartbeat.interval=2",
        "test=false",
        f"+callbacks.slow._target_={SleepEachEpoch.__module__}.SleepEachEpoch",
        f"+callbacks.slow.seconds={sleep}",
        *overrides,
    ]
    with open(root / f"launch-{n}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "seqbench.train", *args],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def val_points(uri: str, experiment: str) -> tuple[list, list]:
    """The experiment's runs and, when there is exactly one, its ``val/acc`` points."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    points = client.get_metric_history(runs[0].info.run_id, "val/acc") if len(runs) == 1 else []
    return runs, points


def checkpoint_epoch(root: Path) -> int:
    (last,) = root.glob("outputs/**/checkpoints/last.ckpt")
    return int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])


def launch_log(root: Path, n: int) -> str:
    return (root / f"launch-{n}.log").read_text()


@dataclass
class Outage:
    """One run that lived through an outage (``outage_run``)."""

    proc: subprocess.Popen
    wall_s: float  # the run's process, start to exit
    away_ms: float  # epoch milliseconds, as MLflow timestamps points
    back_ms: float
    outage_s: float  # from the fault until the server answered again


def outage_run(
    root: Path,
    uri: str,
    experiment: str,
    away: Callable[[], None],
    back: Callable[[], None],
    seconds: float = 20,
    after_epochs: int = 3,
    overrides: tuple[str, ...] = (),
    **launch_options,
) -> Outage:
    """Launch a 30-epoch tiny run against ``uri``; once ``after_epochs`` epochs are checkpointed,
    ``away()`` (the fault), ``seconds`` later ``back()``; wait for the run to end.
    ``launch_options`` go to ``launch``."""
    import time

    from helpers import wait_until

    started = time.monotonic()
    proc = launch(root, uri, experiment, "trainer.max_epochs=30", *overrides, **launch_options)
    try:
        wait_until(lambda: checkpoint_epoch(root) >= after_epochs - 1, proc, 240, "epochs")
        away()
        down, away_ms = time.monotonic(), time.time() * 1000
        time.sleep(seconds)
        back_ms = time.time() * 1000
        back()
        outage = time.monotonic() - down
        proc.wait(timeout=seconds + 600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Outage(proc, time.monotonic() - started, away_ms, back_ms, outage)


def _nothing_lost(root: Path, uri: str, experiment: str, outage: Outage) -> None:
    """One run, FINISHED, every epoch's ``val/acc`` once, and epochs logged during the outage."""
    text = launch_log(root, 0)
    assert outage.proc.returncode == 0, text[-3000:]
    assert "unreachable" in text and "training continues" in text and "is back after" in text
    (run,), points = val_points(uri, experiment)
    assert run.info.status == "FINISHED"
    steps = [p.step for p in points]
    assert len(steps) == 30 and len(set(steps)) == 30, steps  # every epoch once, in the store
    # logged (timestamped by the trainer) while the server was away: training went on
    during = [p.step for p in points if outage.away_ms < p.timestamp < outage.back_ms]
    assert len(during) >= 5, f"training stood still while the server was away: {during}"
    assert "unreachable" in run.data.tags["seqbench.outage"]
    assert outage.outage_s > 20


@pytest.mark.scenario
@pytest.mark.slow
def test_training_goes_on_while_the_server_is_away_and_nothing_is_lost(tmp_path, server):
    experiment = f"outage-{uuid4().hex[:8]}"
    # 20 s: longer than MLflow's (shortened) retries last
    outage = outage_run(tmp_path, server.uri, experiment, server.kill, server.start, 20)
    _nothing_lost(tmp_path, server.uri, experiment, outage)


@pytest.fixture
def postgres_server(tmp_path_factory):
    """``mlflow server`` on a real PostgreSQL (both on free loopback ports); (server, database).
    Skips when PostgreSQL is missing, fails then under SEQBENCH_REQUIRE_POSTGRES=1."""
    postgres_or_skip()
    database = LocalPostgres()
    srv = None
    try:
        srv = MlflowServer(tmp_path_factory.mktemp("pg-server"), backend=database.start())
        srv.start()
        yield srv, database
    finally:
        if srv is not None:
            srv.stop()
        database.remove()


@pytest.mark.scenario
@pytest.mark.slow
def test_a_postgres_restart_under_the_server_loses_nothing(tmp_path, postgres_server):
    """The database goes away, the server stays: it answers 503 to every write (MLflow's
    TEMPORARILY_UNAVAILABLE for a database error), which the outbox waits out like an outage."""
    server, database = postgres_server
    experiment = f"pg-restart-{uuid4().hex[:8]}"
    outage = outage_run(tmp_path, server.uri, experiment, database.stop, database.start, 20)
    assert server.proc.poll() is None  # the server itself ran throughout
    _nothing_lost(tmp_path, server.uri, experiment, outage)
    assert "503" in launch_log(tmp_path, 0)  # the server answered, saying its store was away


@pytest.mark.scenario
@pytest.mark.slow
def test_past_the_outage_limit_the_run_stops_and_the_same_command_resumes_it(tmp_path, server):
    import time

    from helpers import wait_until

    experiment = f"outage-{uuid4().hex[:8]}"
    overrides = ("trainer.max_epochs=12", "logger.outage_limit_s=6")
    proc = launch(tmp_path, server.uri, experiment, *overrides)
    try:
        wait_until(lambda: checkpoint_epoch(tmp_path) >= 2, proc, 240, "3 epochs")
        server.kill()
        proc.wait(timeout=90)  # gives up by itself, ~6 s after the server went away
        stopped = launch_log(tmp_path, 0)
        assert proc.returncode == 75, stopped[-3000:]  # EX_TEMPFAIL
        assert f"tracking server {server.uri} has been unreachable for" in stopped
        assert "logger.outage_limit_s=6" in stopped and "Traceback" not in stopped
        assert list(tmp_path.glob("outputs/outbox/*/records.jsonl")), "nothing kept"
        time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server.proc.poll() is not None:
            server.start()
    again = launch(tmp_path, server.uri, experiment, *overrides)
    again.wait(timeout=180)
    assert again.returncode == 0, launch_log(tmp_path, 1)[-3000:]
    (run,), points = val_points(server.uri, experiment)
    assert run.info.status == "FINISHED" and run.data.tags["seqbench.resume_count"] == "1"
    steps = [p.step for p in points]
    assert len(steps) == 12 and len(set(steps)) == 12, steps  # no gap, no duplicate
    assert "delivered" in launch_log(tmp_path, 1)
