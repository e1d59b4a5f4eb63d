"""A run's life without a subprocess: ``RunLifecycle`` (skip / new / resume / FAILED / KILLED),
the resume decision table, liveness, the final status, checkpoint state, and the Lightning
internals seqbench relies on. Every run lives in a real SQLite MLflow store under tmp_path and
is read back through ``MlflowClient``."""

from __future__ import annotations

import inspect
import os
import platform
import signal
import time
from pathlib import Path
from uuid import uuid4

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow import MlflowClient
from mlflow.entities import RunTag

from helpers import free_port, make_config
from seqbench.launch import ddp
from seqbench.run import resume, tracking
from seqbench.run.checkpoints import CheckpointUploader, TrackedCheckpoint, upload_checkpoint
from seqbench.run.heartbeat import (
    HEARTBEAT_TAG,
    HOST_TAG,
    PID_START_TAG,
    PID_TAG,
    liveness,
    process_start_time,
)
from seqbench.run.heartbeat_callback import HeartbeatEachEpoch
from seqbench.run.interrupt import RunInterrupted, SignalGuard, StopOnSignal
from seqbench.run.jobs import JOB_KEY_TAG
from seqbench.run.lifecycle import RunLifecycle
from seqbench.run.optuna_trial import PRUNED_TAG
from seqbench.run.outbox import Outbox
from seqbench.training.fit import FitOutcome

STALE = 900.0


@pytest.fixture(autouse=True)
def _no_decision_from_a_parent(monkeypatch):
    """Rank 0 hands its decision to DDP children in the environment: keep it per test."""
    monkeypatch.delenv(ddp.RESUME_CKPT_ENV, raising=False)


# -- a real store ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds);
    every test has its own experiment in it."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture()
def client(store_uri) -> MlflowClient:
    return MlflowClient(store_uri)


@pytest.fixture()
def experiment(client, tmp_path) -> str:
    return client.create_experiment(uuid4().hex, artifact_location=(tmp_path / "art").as_uri())


def _run(client, experiment_id, status="RUNNING", tags=None, key="job"):
    """A real run with ``tags`` in ``status``, read back as MLflow's ``Run``."""
    run_id = client.create_run(experiment_id, tags={JOB_KEY_TAG: key, **(tags or {})}).info.run_id
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return client.get_run(run_id)


def _gone_pid() -> int:
    """A pid no process can have: above the kernel's limit."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def _this_process() -> dict[str, str]:
    return {
        HOST_TAG: platform.node(),
        PID_TAG: str(os.getpid()),
        PID_START_TAG: f"{process_start_time():.0f}",
    }


# -- resume decision table ---------------------------------------------------------------------


def test_a_finished_run_is_skipped_even_beside_an_interrupted_one(client, experiment):
    killed = _run(client, experiment, "KILLED")
    finished = _run(client, experiment, "FINISHED")
    decision = resume._decide([killed, finished], STALE)
    assert (decision.action, decision.run.info.run_id) == ("skip", finished.info.run_id)


def test_a_pruned_run_is_the_result_only_of_a_job_that_prunes(client, experiment):
    """A search without a pruner (or a single run) of a job that a pruned search stopped early
    trains it anew: the partial run is no result for it, and is never resumed (it stays as the
    pruned search's record). A job that prunes skips it, as a relaunched pruned search must."""
    pruned = _run(client, experiment, "FINISHED", tags={PRUNED_TAG: "true"})
    assert resume.plan(client, experiment, "job", "auto", {}, STALE).action == "new"
    decision = resume.plan(client, experiment, "job", "auto", {}, STALE, accept_pruned=True)
    assert (decision.action, decision.run.info.run_id) == ("skip", pruned.info.run_id)
    full = _run(client, experiment, "FINISHED")  # once a full run exists, every launch takes it
    assert resume.plan(client, experiment, "job", "auto", {}, STALE).run.info.run_id == (
        full.info.run_id
    )


@pytest.mark.parametrize("status", ["KILLED", "FAILED"])
def test_a_killed_or_failed_run_is_resumed(client, experiment, status):
    run = _run(client, experiment, status)
    decision = resume._decide([run], STALE)
    assert (decision.action, decision.run.info.run_id, decision.reason) == (
        "resume",
        run.info.run_id,
        status,
    )


def test_a_running_run_whose_process_lives_is_running_elsewhere(client, experiment):
    run = _run(client, experiment, tags=_this_process())
    with pytest.raises(resume.RunningElsewhere, match=f"process {os.getpid()}") as info:
        resume._decide([run], STALE)
    assert info.value.run.info.run_id == run.info.run_id


def test_a_running_run_whose_process_is_gone_is_resumed(client, experiment):
    tags = {**_this_process(), PID_TAG: str(_gone_pid())}
    run = _run(client, experiment, tags=tags)
    decision = resume._decide([run], STALE)
    assert decision.action == "resume" and decision.run.info.run_id == run.info.run_id
    assert decision.reason.startswith("RUNNING but dead") and "is gone" in decision.reason


def test_no_earlier_run_is_a_new_run(client, experiment):
    _run(client, experiment, "FINISHED", key="another-job")  # other jobs do not count
    decision = resume.plan(client, experiment, "job", "auto", {}, STALE)
    assert decision.action == "new" and decision.run is None


def test_auto_finds_the_job_by_its_key(client, experiment):
    run = _run(client, experiment, "KILLED", key="job")
    decision = resume.plan(client, experiment, "job", "auto", {}, STALE)
    assert decision.action == "resume" and decision.run.info.run_id == run.info.run_id


def test_resume_never_starts_a_new_run_whatever_exists(client, experiment):
    _run(client, experiment, "FINISHED")
    assert resume.plan(client, experiment, "job", "never", {}, STALE).action == "new"


def test_resume_run_id_of_another_experiment_is_refused(client, experiment):
    other = client.create_experiment("other")
    run = _run(client, other, "KILLED")
    with pytest.raises(resume.ResumeError, match="another experiment"):
        resume.plan(client, experiment, "job", run.info.run_id, {}, STALE)


def test_resume_run_id_with_another_configuration_is_refused(client, experiment):
    run = _run(client, experiment, "KILLED")
    client.log_param(run.info.run_id, "model.optimizer.lr", "0.001")
    with pytest.raises(resume.ResumeError, match=r"model.optimizer.lr: 0.001 \(run\) -> 0.002"):
        resume.plan(
            client, experiment, "job", run.info.run_id, {"model.optimizer.lr": "0.002"}, STALE
        )
    same = resume.plan(
        client, experiment, "job", run.info.run_id, {"model.optimizer.lr": "0.001"}, STALE
    )
    assert same.action == "resume" and same.run.info.run_id == run.info.run_id


def test_resume_unknown_run_id_is_refused(client, experiment):
    with pytest.raises(resume.ResumeError, match="no such run"):
        resume.plan(client, experiment, "job", "0" * 32, {}, STALE)


# -- liveness ----------------------------------------------------------------------------------


def test_same_host_process_gone_is_dead(client, experiment):
    run = _run(client, experiment, tags={**_this_process(), PID_TAG: str(_gone_pid())})
    alive = liveness(run, STALE)
    assert not alive.alive and "is gone" in alive.reason and "reused" not in alive.reason


def test_same_host_pid_reused_by_another_process_is_dead(client, experiment):
    started = process_start_time()
    tags = {**_this_process(), PID_START_TAG: f"{started - 1000:.0f}"}  # pid now someone else's
    alive = liveness(_run(client, experiment, tags=tags), STALE)
    assert not alive.alive and "pid reused" in alive.reason


def test_same_host_live_process_is_alive_even_without_a_heartbeat(client, experiment):
    run = _run(client, experiment, tags=_this_process())
    alive = liveness(run, STALE, now=time.time() + 10 * STALE)  # heartbeat age does not matter
    assert alive.alive and f"process {os.getpid()}" in alive.reason


def test_other_host_with_a_fresh_heartbeat_is_alive(client, experiment):
    now = time.time()
    tags = {HOST_TAG: "elsewhere", PID_TAG: "1", HEARTBEAT_TAG: f"{now - 60:.0f}"}
    alive = liveness(_run(client, experiment, tags=tags), STALE, now=now)
    assert alive.alive and "heartbeat on elsewhere" in alive.reason


def test_other_host_with_a_stale_heartbeat_is_dead(client, experiment):
    now = time.time()
    tags = {HOST_TAG: "elsewhere", PID_TAG: "1", HEARTBEAT_TAG: f"{now - STALE - 60:.0f}"}
    alive = liveness(_run(client, experiment, tags=tags), STALE, now=now)
    assert not alive.alive and "no heartbeat on elsewhere" in alive.reason


def test_without_a_heartbeat_the_start_time_counts(client, experiment):
    run = _run(client, experiment, tags={HOST_TAG: "elsewhere"})
    started = run.info.start_time / 1000
    assert liveness(run, STALE, now=started + STALE / 2).alive
    assert not liveness(run, STALE, now=started + 2 * STALE).alive


# -- final status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (None, "FINISHED"),
        (ValueError("boom"), "FAILED"),
        (KeyboardInterrupt(), "KILLED"),
        (SIGTERMException(), "KILLED"),
        (RunInterrupted(signal.SIGUSR1, "at epoch 2"), "KILLED"),
    ],
)
def test_finish_maps_how_a_run_ended_to_its_status(client, experiment, exc, status):
    assert tracking.final_status(exc) == status
    run_id = _run(client, experiment).info.run_id
    tracking.finish(client, run_id, exc)
    run = client.get_run(run_id)
    assert run.info.status == status
    if exc is None:
        assert tracking.ERROR_TAG not in run.data.tags
    else:
        assert run.data.tags[tracking.ERROR_TAG].startswith(type(exc).__name__)


# -- the lifecycle -----------------------------------------------------------------------------


@pytest.fixture()
def make_cfg(tmp_path, store_uri):
    """The real composed config, tracking into its own experiment of the module's store."""
    return lambda *overrides: _cfg(tmp_path, f"logger.tracking_uri={store_uri}", *overrides)


def _cfg(tmp_path, *overrides):
    return make_config(
        tmp_path,
        [
            "data=synthetic",
            f"logger.experiment_name=lifecycle-{uuid4().hex}",
            "+logger.log_model=false",
            "heartbeat.interval=0",
            *overrides,
        ],
    )


def _store(cfg) -> MlflowClient:
    return MlflowClient(cfg.logger.tracking_uri)


def _runs(cfg) -> list:
    client = _store(cfg)
    exp = client.get_experiment_by_name(cfg.logger.experiment_name)
    return client.search_runs([exp.experiment_id]) if exp else []


def _outcome(val_best: float = 0.75) -> FitOutcome:
    return FitOutcome({"val/acc_best": val_best, "perf/fit_seconds": 1.5}, 1.5, "", tested=False)


def _train_once(cfg, fingerprint: str = "fp-1") -> str:
    """A complete run through the lifecycle (the trainer's part replaced by its outcome)."""
    with RunLifecycle(cfg, multirun=False) as run:
        assert run.plan()
        run.start(fingerprint, {"batch_split": "1"})
        run.log_result(_outcome(), task=None, datamodule=None)
        return run.run_id


def test_a_new_run_is_created_tagged_and_finished(tmp_path, make_cfg):
    cfg = make_cfg()
    run_id = _train_once(cfg)
    client = _store(cfg)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == cfg.logger.run_name
    tags = run.data.tags
    assert tags[JOB_KEY_TAG] and tags[resume.RESUME_COUNT_TAG] == "0"
    assert tags["data.fingerprint"] == "fp-1" and tags["batch_split"] == "1"
    assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == platform.node()
    assert run.data.params["model.arch"] == cfg.model.arch
    assert [a.path for a in client.list_artifacts(run_id, "config")] == ["config/config.yaml"]
    [point] = client.get_metric_history(run_id, "val/acc_best")
    assert (point.value, point.step) == (0.75, 0)


def test_a_finished_job_is_skipped_and_no_run_is_written(tmp_path, make_cfg):
    cfg = make_cfg()
    first = _train_once(cfg)
    with RunLifecycle(cfg, multirun=False) as run:
        assert not run.plan()
        assert run.result.skipped and run.result.run_id == first
        assert run.result.metrics["val/acc_best"] == 0.75
    assert [r.info.run_id for r in _runs(cfg)] == [first]
    assert _store(cfg).get_run(first).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (ValueError("loss exploded"), "FAILED", "ValueError: loss exploded"),
        (RunInterrupted(signal.SIGTERM, "at epoch 1"), "KILLED", "interrupted by SIGTERM"),
        (KeyboardInterrupt(), "KILLED", "KeyboardInterrupt"),
    ],
)
def test_an_error_or_a_signal_ends_the_run_with_its_reason(tmp_path, make_cfg, exc, status, reason):
    cfg = make_cfg()
    with pytest.raises(type(exc)), RunLifecycle(cfg, multirun=False) as run:
        assert run.plan()
        run.start("fp-1")
        raise exc
    (ended,) = _runs(cfg)
    assert ended.info.status == status
    assert reason in ended.data.tags[tracking.ERROR_TAG]


def test_an_interrupted_run_is_reopened_from_its_uploaded_checkpoint(tmp_path, make_cfg):
    """As on another machine: the checkpoint comes from the run's artifacts."""
    cfg = make_cfg()
    last = tmp_path / "elsewhere" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"global_step": 7}, last)
    with pytest.raises(RunInterrupted), RunLifecycle(cfg, multirun=False) as run:
        run.plan()
        run.start("fp-1")
        first = run.run_id
        run.uploader.upload_last(last)
        raise RunInterrupted(signal.SIGUSR1)
    with RunLifecycle(cfg, multirun=False) as run:
        assert run.plan()
        run.start("fp-1")
        assert run.run_id == first and run.resumed == 1
        assert Path(run.ckpt_path).read_bytes() == last.read_bytes()
        assert Path(run.ckpt_path).is_relative_to(Path(cfg.paths.output_dir))
        assert ddp.from_parent() == run.ckpt_path  # what Lightning's DDP children will read
        assert _store(cfg).get_run(first).info.status == "RUNNING"
        run.log_result(_outcome(0.8), task=None, datamodule=None)
    (after,) = _runs(cfg)
    assert after.info.run_id == first and after.info.status == "FINISHED"
    assert after.data.tags[resume.RESUME_COUNT_TAG] == "1"
    assert after.data.tags[resume.RESUMED_FROM_STEP_TAG] == "7"
    artifacts = [a.path for a in _store(cfg).list_artifacts(first, "config")]
    assert "config/config-resume1.yaml" in artifacts
    points = _store(cfg).get_metric_history(first, "val/acc_best")
    assert sorted((p.step, p.value) for p in points) == [(1, 0.8)]  # first launch logged none


def test_a_resume_on_other_data_is_refused_and_leaves_the_run_as_it_was(tmp_path, make_cfg):
    cfg = make_cfg()
    with pytest.raises(ValueError), RunLifecycle(cfg, multirun=False) as run:
        run.plan()
        run.start("fp-1")
        raise ValueError("first launch failed")
    with (
        pytest.raises(resume.ResumeError, match="other data"),
        RunLifecycle(cfg, multirun=False) as run,
    ):
        assert run.plan()
        run.start("fp-2")
    (failed,) = _runs(cfg)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[tracking.ERROR_TAG] == "ValueError: first launch failed"


def test_a_job_running_in_a_live_process_is_refused_alone_and_skipped_in_a_sweep(
    tmp_path, make_cfg
):
    cfg = make_cfg()
    with RunLifecycle(cfg, multirun=False) as owner:  # this process trains it right now
        owner.plan()
        owner.start("fp-1")
        with RunLifecycle(cfg, multirun=False) as second, pytest.raises(resume.RunningElsewhere):
            second.plan()
        with RunLifecycle(cfg, multirun=True) as sweep_job:
            assert not sweep_job.plan()
            assert sweep_job.result.skipped and sweep_job.result.run_id == owner.run_id
        owner.log_result(_outcome(), task=None, datamodule=None)
    (run,) = _runs(cfg)
    assert run.info.status == "FINISHED"


def test_the_run_lends_the_trainer_its_uploader_signal_stop_and_heartbeat(tmp_path, make_cfg):
    cfg = make_cfg()
    checkpoint = TrackedCheckpoint(dirpath=str(tmp_path / "ckpts"), monitor="val/acc", mode="max")
    with RunLifecycle(cfg, multirun=False) as run:
        run.plan()
        run.start("fp-1")
        added = run.callbacks([checkpoint])
        assert checkpoint.uploader is run.uploader and run.uploader is not None
        (stop,) = [c for c in added if isinstance(c, StopOnSignal)]
        assert stop.uploader is run.uploader and stop.checkpoint_dir == tmp_path / "ckpts"
        assert stop.guard is run.guard
        assert any(isinstance(c, HeartbeatEachEpoch) for c in added)
        assert run.logger().run_id == run.run_id


def test_an_unreachable_server_fails_before_anything_and_gives_the_signals_back(tmp_path, make_cfg):
    cfg = make_cfg(f"logger.tracking_uri=http://127.0.0.1:{free_port()}")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(tracking.TrackingUnreachable), RunLifecycle(cfg, multirun=False):
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_other_slurm_ranks_follow_rank_zero(tmp_path, make_cfg, monkeypatch):
    """Rank 0 decides and writes its decision; another SLURM task (same process here) reads it."""
    for key, value in {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "42"}.items():
        monkeypatch.setenv(key, value)
    cfg = make_cfg()
    with pytest.raises(RunInterrupted), RunLifecycle(cfg, multirun=False) as run:
        run.plan()
        run.start("fp-1")
        last = tmp_path / "last.ckpt"
        torch.save({"global_step": 3}, last)
        run.uploader.upload_last(last)
        raise RunInterrupted(signal.SIGTERM)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued job step
    with RunLifecycle(cfg, multirun=False) as rank0:
        rank0.plan()
        rank0.start("fp-1")
        with RunLifecycle(cfg, tracks=False) as rank1:
            assert rank1.plan() and rank1.ckpt_path == rank0.ckpt_path is not None
            assert rank1.client is None and rank1.run_id is None
        rank0.log_result(_outcome(), task=None, datamodule=None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    with RunLifecycle(cfg, multirun=False) as rank0:
        assert not rank0.plan()  # finished: skipped, and the other rank is told so
        with RunLifecycle(cfg, tracks=False) as rank1:
            assert not rank1.plan() and rank1.result.skipped


def test_a_ddp_child_continues_from_the_checkpoint_rank_zero_names(tmp_path, make_cfg, monkeypatch):
    monkeypatch.setenv(ddp.RESUME_CKPT_ENV, "/shared/last.ckpt")
    with RunLifecycle(make_cfg(), tracks=False) as child:
        assert child.plan() and child.ckpt_path == "/shared/last.ckpt"


# -- checkpoint state --------------------------------------------------------------------------


def _write_checkpoint(path: Path, weight: float) -> None:
    """A small stand-in for a Lightning checkpoint: weights and an optimiser's state."""
    torch.save(
        {
            "state_dict": {"w": torch.full((2,), weight)},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(2)}}}],
            "epoch": 1,
            "global_step": 10,
        },
        path,
    )


def _weights(path: Path) -> float:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in checkpoint, "the best copy keeps only the weights"
    return float(checkpoint["state_dict"]["w"][0])


def _saved_state(tmp_path, score: float = 0.8) -> dict:
    """A ModelCheckpoint state as a first launch saved it, with its best file on disk."""
    old = tmp_path / "old"
    old.mkdir(exist_ok=True)
    best = old / "epoch001.ckpt"
    _write_checkpoint(best, 1.0)
    first = ModelCheckpoint(dirpath=str(old), monitor="val/acc", mode="max")
    first.best_model_path = first.kth_best_model_path = str(best)
    first.best_model_score = first.kth_value = torch.tensor(score)
    first.best_k_models = {str(best): torch.tensor(score)}
    return first.state_dict()


def test_the_best_score_survives_a_resume_into_a_new_folder(tmp_path):
    state = _saved_state(tmp_path)
    plain = ModelCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        plain.load_state_dict(state)
    assert plain.best_model_score is None  # why TrackedCheckpoint exists
    tracked = TrackedCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    tracked.load_state_dict(state)
    assert float(tracked.best_model_score) == pytest.approx(0.8)
    assert tracked.best_model_path == state["best_model_path"]
    assert {k: float(v) for k, v in tracked.best_k_models.items()} == {
        state["best_model_path"]: pytest.approx(0.8)
    }
    assert tracked.dirpath == str(tmp_path / "new")


def test_a_missing_best_checkpoint_is_fetched_from_the_run(tmp_path, client, experiment):
    state = _saved_state(tmp_path)
    run_id = _run(client, experiment).info.run_id
    CheckpointUploader(client, run_id).upload_best(Path(state["best_model_path"]))
    Path(state["best_model_path"]).unlink()  # another machine
    tracked = TrackedCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    tracked.uploader = CheckpointUploader(client, run_id)
    tracked.load_state_dict(state)
    fetched = tmp_path / "new" / "downloaded" / "best.ckpt"
    assert tracked.best_model_path == str(fetched) and _weights(fetched) == 1.0
    assert tracked.kth_best_model_path == str(fetched)
    assert list(tracked.best_k_models) == [str(fetched)]
    assert float(tracked.best_model_score) == pytest.approx(0.8)


def test_a_run_stopped_before_the_move_has_its_best_checkpoint_under_resume(
    tmp_path, client, experiment
):
    state = _saved_state(tmp_path)
    run_id = _run(client, experiment).info.run_id
    upload_checkpoint(client, run_id, Path(state["best_model_path"]), "best.ckpt", "resume")
    Path(state["best_model_path"]).unlink()
    tracked = TrackedCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    tracked.uploader = CheckpointUploader(client, run_id)
    tracked.load_state_dict(state)
    before_the_move = torch.load(tracked.best_model_path, map_location="cpu", weights_only=True)
    assert float(before_the_move["state_dict"]["w"][0]) == 1.0


def test_without_a_copy_the_missing_best_stays_named(tmp_path, client, experiment):
    state = _saved_state(tmp_path)
    Path(state["best_model_path"]).unlink()
    tracked = TrackedCheckpoint(dirpath=str(tmp_path / "new"), monitor="val/acc", mode="max")
    tracked.uploader = CheckpointUploader(client, _run(client, experiment).info.run_id)
    tracked.load_state_dict(state)
    assert tracked.best_model_path == state["best_model_path"]


def test_the_uploader_sends_each_version_of_a_file_once(tmp_path, client, experiment):
    run_id = _run(client, experiment).info.run_id
    uploader = CheckpointUploader(client, run_id)
    path = tmp_path / "epoch000.ckpt"
    _write_checkpoint(path, 1.0)
    uploader.upload_best(path)
    art = tmp_path / "art"
    copy = next(art.rglob("checkpoints/best.ckpt"))
    assert _weights(copy) == 1.0
    copy.write_bytes(b"changed behind the uploader's back")
    uploader.upload_best(path)  # unchanged file: not sent again
    assert copy.read_bytes() == b"changed behind the uploader's back"
    _write_checkpoint(path, 2.0)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1000))
    uploader.upload_best(path)
    assert _weights(copy) == 2.0
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == [
        "checkpoints/best.ckpt"
    ]


# -- Lightning internals seqbench relies on ----------------------------------------------------


class _Tiny(L.LightningModule):
    """Two features, four examples: validation accuracy that changes between epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def _data(self):
        x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
        return torch.utils.data.DataLoader(
            list(zip(x, torch.tensor([1.0, 0.0, 1.0, 0.0]), strict=True))
        )

    train_dataloader = val_dataloader = _data

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.layer(x).squeeze(1), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", ((self.layer(x).squeeze(1) > 0).float() == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _fit_with_checkpoint(
    tmp_path, module: L.LightningModule, epochs: int, uploader: CheckpointUploader | None = None
) -> TrackedCheckpoint:
    """``module`` fitted for ``epochs`` with a ``TrackedCheckpoint`` on val/acc (top 1 + last)."""
    checkpoint = TrackedCheckpoint(
        dirpath=str(tmp_path / "ckpt"), monitor="val/acc", mode="max", save_last=True
    )
    checkpoint.uploader = uploader
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    return checkpoint


def test_model_checkpoint_state_names_the_best_file_as_moved_best_expects(
    tmp_path, client, experiment
):
    """``checkpoints.moved_best`` rewrites these keys; a Lightning upgrade that renames them
    or changes what they hold fails here. A real fit also shows the uploads: one best copy."""
    run_id = _run(client, experiment).info.run_id
    checkpoint = _fit_with_checkpoint(tmp_path, _Tiny(), 2, CheckpointUploader(client, run_id))
    state = checkpoint.state_dict()
    assert {"best_model_path", "best_model_score", "best_k_models", "kth_best_model_path"} <= set(
        state
    )
    assert state["best_k_models"] == {state["best_model_path"]: state["best_model_score"]}
    assert Path(state["best_model_path"]).is_file()
    assert state["kth_best_model_path"] == state["best_model_path"]  # save_top_k=1
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == [
        "checkpoints/best.ckpt"
    ]
    assert [a.path for a in client.list_artifacts(run_id, "resume")] == ["resume/last.ckpt"]


def test_mlflow_logger_finalize_ends_the_run_and_run_logger_does_not(client, experiment):
    """Why ``RunLogger.finalize`` is a no-op: the stock one sets the run's status."""
    stock_id = _run(client, experiment).info.run_id
    stock = MLFlowLogger(tracking_uri=client.tracking_uri, run_id=stock_id)
    assert stock.experiment is not None  # Lightning attaches to the run on first use
    stock.finalize("success")
    assert client.get_run(stock_id).info.status == "FINISHED"
    ours_id = _run(client, experiment).info.run_id
    ours = tracking.RunLogger(tracking_uri=client.tracking_uri, run_id=ours_id)
    assert ours.experiment is not None
    ours.finalize("success")
    ours.finalize("failed")
    assert client.get_run(ours_id).info.status == "RUNNING"


def test_ddp_launcher_keeps_its_children_in_procs():
    """``ddp.child_processes`` reads ``launcher.procs``: a real DDP trainer's launcher has it,
    and it is where Lightning appends the children it starts."""
    from lightning.pytorch.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    launcher = trainer.strategy.launcher
    assert isinstance(launcher, _SubprocessScriptLauncher)
    assert launcher.procs == [] and ddp.child_processes(trainer) == []
    assert "self.procs.append(" in inspect.getsource(_SubprocessScriptLauncher)
    launcher.procs = ["child"]  # what _call_children_scripts appends to
    assert ddp.child_processes(trainer) == ["child"]
    assert ddp.child_processes(L.Trainer(accelerator="cpu", logger=False)) == []


class _Frozen(_Tiny):
    """Learns nothing: validation accuracy never improves after the first epoch."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_last_checkpoint_is_written_every_epoch_even_without_improvement(tmp_path):
    """Lightning 2.6 refreshes ``last.ckpt`` only when a top-k checkpoint was saved;
    ``save_last_if_skipped`` writes it in the other epochs too, so a crash after the last
    improvement loses one epoch, not every epoch since. Fails if an upgrade renames the
    private steps it calls."""
    checkpoint = _fit_with_checkpoint(tmp_path, _Frozen(), 3)
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    last = torch.load(checkpoint.last_model_path, map_location="cpu", weights_only=False)
    assert best["epoch"] == 0  # never improved after the first epoch
    assert (last["epoch"], last["global_step"]) == (2, 12)  # 3 epochs of 4 steps


# -- a checkpoint reaches the store only after the metrics of the epochs it holds ---------------


class _TrainLogged(_Tiny):
    """Logs ``train/loss`` per epoch, as seqbench's task does."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss


class _TimelineLogger(Logger):
    """Records each epoch's logged keys on a shared timeline; raises instead of logging
    ``train/loss`` of epoch ``fail_at`` (a crash between an epoch's save and its logging)."""

    def __init__(self, timeline: list, fail_at: int | None = None) -> None:
        super().__init__()
        self.timeline, self.fail_at = timeline, fail_at

    name, version = "timeline", 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        epoch = int(metrics["epoch"])
        if "train/loss" in metrics and epoch == self.fail_at:
            raise RuntimeError("simulated crash while the epoch's metrics are logged")
        self.timeline.extend(("metric", key, epoch) for key in metrics if key != "epoch")


class _TimelineUploader(CheckpointUploader):
    """Records each checkpoint version it would send (its folder and epoch) on the timeline."""

    def __init__(self, timeline: list) -> None:
        super().__init__(client=None, run_id="timeline")
        self.timeline = timeline

    def _upload(self, path: Path, folder: str, name: str, weights_only: bool = False) -> None:
        if path.is_file() and self._uploaded.get(folder) != self._stamp(path):
            self._uploaded[folder] = self._stamp(path)
            epoch = torch.load(path, map_location="cpu", weights_only=False)["epoch"]
            self.timeline.append(("upload", folder, epoch))


class _CrashAtEpochStart(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _timeline_fit(tmp_path, epochs: int, fail_at: int | None = None, callbacks=()) -> list:
    """What reached the store, in order, while ``_TrainLogged`` was fitted (a crash is caught)."""
    timeline: list = []
    checkpoint = TrackedCheckpoint(
        dirpath=str(tmp_path / "ckpt"), monitor="val/acc", mode="max", save_last=True
    )
    checkpoint.uploader = _TimelineUploader(timeline)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=_TimelineLogger(timeline, fail_at),
        callbacks=[checkpoint, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(_TrainLogged())
    except RuntimeError as exc:
        assert "simulated crash" in str(exc)
    return timeline


def _uploaded_epochs(timeline: list, folder: str = "resume") -> list[int]:
    return [epoch for kind, what, epoch in timeline if kind == "upload" and what == folder]


def test_each_checkpoint_is_uploaded_after_its_epochs_metrics(tmp_path):
    """The outbox delivers in order: a ``resume/last.ckpt`` uploaded before its epoch's
    ``train/loss`` is logged lets a kill in between resume past an epoch with no training
    loss (Lightning logs it after every ``on_train_epoch_end`` hook, where it saves)."""
    timeline = _timeline_fit(tmp_path, 3)
    assert _uploaded_epochs(timeline) == [0, 1, 2]  # every epoch's, the last one included
    for position, (kind, folder, epoch) in enumerate(timeline):
        if kind == "upload":
            logged = {(key, e) for k, key, e in timeline[:position] if k == "metric"}
            assert {("train/loss", epoch), ("val/acc", epoch)} <= logged, (folder, epoch)


def test_a_crash_after_a_complete_epoch_still_uploads_its_checkpoint(tmp_path):
    """A crash at the start of the third epoch: the second epoch's checkpoint (its metrics
    logged) reaches the store, so a relaunch elsewhere repeats nothing."""
    timeline = _timeline_fit(tmp_path, 3, callbacks=[_CrashAtEpochStart(2)])
    assert _uploaded_epochs(timeline) == [0, 1]


def test_a_crash_while_an_epoch_is_logged_keeps_the_earlier_copy(tmp_path):
    """A crash after the second epoch's save but before its ``train/loss`` is logged: its
    checkpoint stays local and the store keeps the first epoch's, whose metrics it holds."""
    timeline = _timeline_fit(tmp_path, 3, fail_at=1)
    assert _uploaded_epochs(timeline) == [0]
    assert ("metric", "train/loss", 1) not in timeline
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()  # written, just not sent


class _SignalInLastBatch(L.Callback):
    """A signal arrives (as ``SignalGuard`` records one) while epoch ``epoch``'s last batch runs."""

    def __init__(self, guard: SignalGuard, epoch: int) -> None:
        self.guard, self.epoch = guard, epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            self.guard.requested = signal.SIGTERM


def test_a_signal_in_an_epochs_last_batch_stops_after_that_epoch_is_logged(tmp_path):
    """Lightning resumes a checkpoint taken at an epoch's last batch in the next epoch, without
    that epoch's validation or training metrics: the stop waits for the next batch, and the
    resumed run has every epoch's ``train/loss`` and ``val/acc``."""
    timeline: list = []
    guard = SignalGuard()

    def fit(*callbacks: L.Callback, ckpt_path: str | None = None) -> None:
        trainer = L.Trainer(
            max_epochs=3,
            accelerator="cpu",
            logger=_TimelineLogger(timeline),
            callbacks=[StopOnSignal(guard, tmp_path), *callbacks],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(_TrainLogged(), ckpt_path=ckpt_path)

    with pytest.raises(RunInterrupted, match="at epoch 3, batch 1;"):
        fit(_SignalInLastBatch(guard, epoch=1))
    guard.requested = None
    fit(ckpt_path=str(tmp_path / "last.ckpt"))
    for key in ("train/loss", "val/acc"):
        logged = sorted(epoch for kind, what, epoch in timeline if (kind, what) == ("metric", key))
        assert logged == [0, 1, 2], key


def test_a_closed_outbox_queues_nothing_more(tmp_path, client, experiment):
    """Once its records are saved for the next launch (``OutageGuard``) no sender is left: a
    checkpoint copy offered then (``TrackedCheckpoint`` on the outage's exception) is not
    staged in the spool, where nothing would ever deliver or remove it."""
    run_id = _run(client, experiment).info.run_id
    box = Outbox(client, f"http://127.0.0.1:{free_port()}", tmp_path / "spool")
    saved = tmp_path / "records.jsonl"
    assert box.save(saved) == 0
    last = tmp_path / "last.ckpt"
    _write_checkpoint(last, 1.0)
    CheckpointUploader(client, run_id, box).upload_last(last)
    box.put_batch(run_id, tags=[RunTag("late", "1")])
    assert box.pending() == 0 and saved.read_text() == ""
    assert not list((tmp_path / "spool").rglob("*.ckpt")) and last.is_file()
    assert client.list_artifacts(run_id, "resume") == []


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_run_drops_its_resume_checkpoint_unless_told_to_keep_it(tmp_path, keep):
    """Once FINISHED a job is never resumed: ``resume/last.ckpt`` (weights and Adam's moments,
    most of a run's stored bytes) is deleted from its artifacts; the best checkpoint stays.
    ``logger.keep_resume_checkpoint=true`` keeps it."""
    from seqbench.job import train

    cfg = make_config(
        tmp_path,
        [
            "data=synthetic",
            "data.n_train=200",
            "data.n_test=50",
            "data.max_len=20",
            "trainer.max_epochs=2",
            f"logger.keep_resume_checkpoint={str(keep).lower()}",
        ],
    )
    result = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    resume_files = [a.path for a in client.list_artifacts(result.run_id, "resume")]
    assert resume_files == (["resume/last.ckpt"] if keep else [])
    best = [a.path for a in client.list_artifacts(result.run_id, "checkpoints")]
    assert best == ["checkpoints/best.ckpt"]
