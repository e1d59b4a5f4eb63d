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


class Server:
    """``mlflow server`` over one SQLite store, stopped and started again on the same port."""

    def __init__(self, root: Path) -> None:
        from helpers import free_port

        self.root, self.port, self.proc = root, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import subprocess
        import sys

        from helpers import wait_healthy

        cmd = [sys.executable, "-m", "mlflow", "server", "--workers", "1"]
        cmd += ["--backend-store-uri", f"sqlite:///{self.root}/mlflow.db"]
        cmd += ["--artifacts-destination", str(self.root / "artifacts")]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        log = self.root / "server.log"
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_healthy(self.uri + "/health", self.proc, log, timeout=120)

    def kill(self) -> None:
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        from helpers import stop_process_group

        if self.proc is not None:
            stop_process_group(self.proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


def _launch(root: Path, server: Server, experiment: str, *overrides: str):
    """``seqbench-train`` against ``server`` as a process; its log is ``root/launch-N.log``."""
    import os
    import subprocess
    import sys

    from helpers import cli_env

    n = len(list(root.glob("launch-*.log")))
    env = {**cli_env(root), **SHORT_RETRIES}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    args = [
        *tiny(console=True),
        f"logger.tracking_uri={server.uri}",
        f"logger.experiment_name={experiment}",
        "+logger.log_model=false",
        "heartbeat.interval=2",
        "test=false",
        f"+callbacks.slow._target_={__name__}.SleepEachEpoch",
        "+callbacks.slow.seconds=1.0",
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


def _val_points(server: Server, experiment: str) -> tuple[list, list]:
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    points = client.get_metric_history(runs[0].info.run_id, "val/acc") if len(runs) == 1 else []
    return runs, points


def _checkpoint_epoch(root: Path) -> int:
    (last,) = root.glob("outputs/**/checkpoints/last.ckpt")
    return int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])


def _log(root: Path, n: int) -> str:
    return (root / f"launch-{n}.log").read_text()


@pytest.mark.scenario
@pytest.mark.slow
def test_training_goes_on_while_the_server_is_away_and_nothing_is_lost(tmp_path, server):
    import time

    from helpers import wait_until

    experiment = f"outage-{uuid4().hex[:8]}"
    proc = _launch(tmp_path, server, experiment, "trainer.max_epochs=30")
    try:
        wait_until(lambda: _checkpoint_epoch(tmp_path) >= 2, proc, 240, "3 epochs")
        server.kill()
        down, killed_at = time.monotonic(), time.time() * 1000
        time.sleep(20)  # longer than MLflow's (shortened) retries last
        back_at = time.time() * 1000
        server.start()
        outage = time.monotonic() - down
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = _log(tmp_path, 0)
    assert proc.returncode == 0, text[-3000:]
    assert "unreachable" in text and "training continues" in text and "is back after" in text
    (run,), points = _val_points(server, experiment)
    assert run.info.status == "FINISHED"
    steps = [p.step for p in points]
    assert len(steps) == 30 and len(set(steps)) == 30, steps  # every epoch once, in the store
    # logged (timestamped by the trainer) while the server was away: training went on
    during = [p.step for p in points if killed_at < p.timestamp < back_at]
    assert len(during) >= 5, f"training stood still while the server was away: {during}"
    assert "unreachable" in run.data.tags["seqbench.outage"]
    assert outage > 20


@pytest.mark.scenario
@pytest.mark.slow
def test_past_the_outage_limit_the_run_stops_and_the_same_command_resumes_it(tmp_path, server):
    import time

    from helpers import wait_until

    experiment = f"outage-{uuid4().hex[:8]}"
    overrides = ("trainer.max_epochs=12", "logger.outage_limit_s=6")
    proc = _launch(tmp_path, server, experiment, *overrides)
    try:
        wait_until(lambda: _checkpoint_epoch(tmp_path) >= 2, proc, 240, "3 epochs")
        server.kill()
        proc.wait(timeout=90)  # gives up by itself, ~6 s after the server went away
        stopped = _log(tmp_path, 0)
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
    again = _launch(tmp_path, server, experiment, *overrides)
    again.wait(timeout=180)
    assert again.returncode == 0, _log(tmp_path, 1)[-3000:]
    (run,), points = _val_points(server, experiment)
    assert run.info.status == "FINISHED" and run.data.tags["seqbench.resume_count"] == "1"
    steps = [p.step for p in points]
    assert len(steps) == 12 and len(set(steps)) == 12, steps  # no gap, no duplicate
    assert "delivered" in _log(tmp_path, 1)
