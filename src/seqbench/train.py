"""``seqbench-train``: compose the config with Hydra, train and test one model, track it in MLflow.

seqbench-train model=bilstm
seqbench-train model=cnn_lstm seed=2 trainer=gpu trainer.precision=bf16-mixed
seqbench-train -m model=lstm,bilstm seed=1,2,3
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from seqbench.config.paths import config_dir, project_root, register_resolvers
from seqbench.config.validation import ConfigError, check_config
from seqbench.data.archive import ArchiveError
from seqbench.launch import cluster, ddp
from seqbench.run import checkpoints, lineage, plots, resume, tracking
from seqbench.run.checkpoints import TrackedCheckpoint
from seqbench.run.heartbeat import DEFAULT_STALE_AFTER, Heartbeat, HeartbeatEachEpoch, identity_tags
from seqbench.run.interrupt import RunInterrupted, SignalGuard, StopOnSignal, hand_over
from seqbench.run.jobs import JOB_KEY_TAG, job_key, result_params
from seqbench.serving import mlflow_model
from seqbench.training.callbacks import (
    EpochTimer,
    NonFiniteLossError,
    NonFiniteLossGuard,
    RandomStateInCheckpoint,
)
from seqbench.training.hardware import release_freed_memory
from seqbench.training.parallel import BatchSplitter
from seqbench.training.task import ClassificationTask

log = logging.getLogger(__name__)
register_resolvers()
_RUNS_IN_PROCESS = 0
# Errors a user fixes by changing the command: one message, exit status 2, no traceback.
USER_ERRORS = (
    ConfigError,
    tracking.TrackingUnreachable,
    resume.ResumeError,
    ArchiveError,
    NonFiniteLossError,
)
# Lightning noise that says nothing to a seqbench user: metrics are logged per epoch, not per
# step, and the pytree deprecation is internal to Lightning.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
# The DataModule restores the sampler's position itself (SequenceDataModule.state_dict).
warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")


def _hydra_tags() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    tags = {"output_dir": str(hc.runtime.output_dir)}
    if hc.mode == RunMode.MULTIRUN:
        tags |= {
            "sweep_id": Path(hc.sweep.dir).name,
            "sweep_dir": str(hc.sweep.dir),
            "job_num": str(hc.job.num),
        }
    return tags


@dataclass(frozen=True)
class CpuPlan:
    """How a run uses the CPU: torch intra-op threads per batch slice, and the slice count."""

    threads: int  # cores this run may use
    batch_split: int  # batch slices trained in parallel threads (1: off)

    @property
    def threads_per_split(self) -> int:
        return max(1, self.threads // self.batch_split)


def usable_threads(cfg: DictConfig) -> int:
    """``cfg.num_threads``, else the usable cores divided by the launcher's parallel jobs.

    Oversubscribed OpenMP threads spin against each other and slow a CPU run several-fold.
    """
    threads = cfg.get("num_threads")
    if threads:
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = 1
    if HydraConfig.initialized():
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        if isinstance(n_jobs, int):
            jobs = (cores or 1) if n_jobs < 0 else max(1, n_jobs)
    return max(1, (cores or 1) // jobs)


# Automatic batch slices hold at least this many examples: measured with batch 64 on 2 cores
# (2 slices of 32); thinner slices would spend more on per-slice overhead than they gain.
MIN_AUTO_SLICE = 32


def plan_cpu(cfg: DictConfig) -> CpuPlan:
    """Threads and batch slices. ``cfg.batch_split`` null: when training on the CPU in one
    process, one slice per thread but no slice under ``MIN_AUTO_SLICE`` examples (batch 64:
    2 slices, each with half the threads); else 1 (``seqbench.training.parallel``)."""
    threads = usable_threads(cfg)
    split = cfg.get("batch_split")
    if split is None:
        trainer = cfg.trainer
        one_process = (
            str(trainer.get("devices", 1)) == "1" and int(trainer.get("num_nodes", 1)) == 1
        )
        on_cpu = trainer.get("accelerator") == "cpu" and trainer.get("strategy") in (None, "auto")
        most = max(1, int(cfg.data.get("batch_size", MIN_AUTO_SLICE)) // MIN_AUTO_SLICE)
        split = min(threads, most) if on_cpu and one_process else 1
    if int(split) < 1:
        raise ValueError(f"batch_split must be null or >= 1, got {split}")
    return CpuPlan(threads=threads, batch_split=min(int(split), threads))


def configure_cpu(cfg: DictConfig) -> CpuPlan:
    """Set torch's intra-op threads and denormal flushing for ``plan_cpu(cfg)``.

    Torch's thread count is per process (OpenMP), so with batch slices every slice's thread
    runs ``threads // batch_split`` of them. ``cfg.flush_denormal``: gradients vanishing
    through hundreds of LSTM steps reach the denormal float range, where x86 arithmetic is
    ~100x slower; flushing them to zero made the recurrent-dropout LSTM's step 3x faster
    (docs/benchmarks.md) without changing what is learned (they are below 1e-38).
    """
    plan = plan_cpu(cfg)
    torch.set_num_threads(plan.threads_per_split)
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))
    return plan


def build_task(cfg: DictConfig, batch_split: int = 1) -> ClassificationTask:
    """The LightningModule for ``cfg.model``: the net, its optimiser and optional scheduler."""
    scheduler = instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None
    splitter = None
    if batch_split > 1:
        splitter = BatchSplitter(batch_split, flush_denormal=bool(cfg.get("flush_denormal", True)))
    return ClassificationTask(
        net=instantiate(cfg.model.net),
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=scheduler,
        batch_splitter=splitter,
        lr_scales=dict(cfg.model.get("lr_scales") or {}),
    )


@dataclass
class TrainResult:
    run_id: str | None  # None on DDP ranks other than 0, which do not track
    metrics: dict[str, float]
    skipped: bool = False  # True: an earlier run of the same job had finished (resume=auto)


# DDP ranks other than 0 do not track: rank 0 passes them the checkpoint to resume from.
_RESUME_CKPT_ENV = "SEQBENCH_RESUME_CKPT"


@dataclass
class TrackedRun:
    """The MLflow run this launch writes to (rank 0 only), and how it came to be."""

    client: Any
    run_id: str
    resumed: int = 0  # how many times this run has been resumed, this launch included
    ckpt_path: str | None = None  # checkpoint to continue from
    logged_steps: dict[str, int] | None = None


def train(cfg: DictConfig) -> TrainResult:
    """Train, test on the best validation checkpoint, and record everything in one MLflow run.

    Nothing is written before the config is valid, the tracking server answers and the data is
    ready: a typo or a corrupt archive leaves no run behind. With ``resume=auto`` a finished run
    of the same job is returned instead of retraining, and an interrupted one is continued
    (``seqbench.run.resume``). The metrics include ``val/acc_best`` (what sweeps optimise).
    """
    check_config(cfg)
    global _RUNS_IN_PROCESS
    # The first run of a process is timed from the process start (imports count); later jobs of
    # a multirun in the same process from here.
    run_origin = None if _RUNS_IN_PROCESS == 0 else time.time()
    _RUNS_IN_PROCESS += 1
    guard = SignalGuard()
    guard.install()
    try:
        L.seed_everything(cfg.seed, workers=True)
        plan = configure_cpu(cfg)
        store = _open_store(cfg) if rank_zero_only.rank == 0 else None
        datamodule = setup_datamodule(cfg)  # bad data fails here, before any MLflow run exists
        tracked = None
        if store is not None:
            planned = _plan_run(cfg, *store)
            if isinstance(planned, TrainResult):
                ddp.publish_decision(cfg.paths.output_root, skip=True, ckpt_path=None)
                return planned  # finished earlier: skipped
            tracked = _start_run(cfg, planned, datamodule, plan)
            ddp.publish_decision(cfg.paths.output_root, False, tracked.ckpt_path)
        elif ddp.slurm_ranks():  # SLURM tasks are not rank 0's children: read its decision
            decision = ddp.await_decision(cfg.paths.output_root)
            if decision["skip"]:
                return TrainResult(None, {}, skipped=True)
            os.environ[_RESUME_CKPT_ENV] = decision["ckpt_path"] or ""
        try:
            with _heartbeat(cfg, tracked) as beat:
                metrics = _fit_and_test(cfg, datamodule, tracked, run_origin, plan, guard, beat)
        except BaseException as exc:
            if tracked is not None:
                tracking.finish(tracked.client, tracked.run_id, exc)
            raise
        if tracked is not None:
            tracking.finish(tracked.client, tracked.run_id)
        return TrainResult(tracked.run_id if tracked else None, metrics)
    finally:
        guard.restore()
        gc.collect()
        release_freed_memory()


@dataclass
class PlannedRun:
    """Rank 0's decision before anything is written: which store, which job, which run."""

    client: Any
    experiment_id: str
    resolved: dict
    key: str
    decision: resume.ResumePlan


def _open_store(cfg: DictConfig) -> tuple[Any, str]:
    """The tracking client and experiment id, after checking that a server answers."""
    uri = cfg.logger.tracking_uri
    tracking.check_reachable(uri)
    return tracking.open_store(uri, cfg.logger.experiment_name, cfg.logger.get("artifact_location"))


def setup_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The data, read, checked and encoded; ``data.num_classes: null`` becomes the number of
    classes found, which the model's ``num_classes: ${data.num_classes}`` then follows."""
    datamodule = instantiate(cfg.data)
    datamodule.sampler_seed = cfg.seed
    datamodule.prepare_data()
    datamodule.setup("fit")
    if cfg.data.get("num_classes") is None:
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes
    return datamodule


def _plan_run(cfg: DictConfig, client: Any, experiment_id: str) -> PlannedRun | TrainResult:
    """Decide (``seqbench.run.resume``) on the config as the data completed it; a finished job
    returns its result."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    key = job_key(resolved)
    heartbeat_cfg = cfg.get("heartbeat") or {}
    try:
        decision = resume.plan(
            client,
            experiment_id,
            key,
            str(cfg.get("resume", "auto")),
            result_params(resolved),
            float(heartbeat_cfg.get("stale_after", DEFAULT_STALE_AFTER)),
        )
    except resume.RunningElsewhere as exc:
        if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise  # a single launch says so and stops
        # Sweeps launched on several machines share the work: leave this job to its owner.
        log.info("skip %s: %s", cfg.logger.run_name, exc)
        return TrainResult(exc.run.info.run_id, {}, skipped=True)
    if decision.action != "skip":
        return PlannedRun(client, experiment_id, resolved, key, decision)
    run = decision.run
    tracking.set_tags(
        client, run.info.run_id, {k: v for k, v in _hydra_tags().items() if k in _SWEEP_TAGS}
    )
    metrics = dict(run.data.metrics)
    log.info(
        "skip %s: finished earlier as MLflow run %s (test/acc %s, val/acc_best %s); "
        "resume=never trains it again",
        cfg.logger.run_name,
        run.info.run_id,
        _fmt(metrics.get("test/acc")),
        _fmt(metrics.get("val/acc_best")),
    )
    return TrainResult(run.info.run_id, metrics, skipped=True)


def _start_run(cfg: DictConfig, planned: PlannedRun, datamodule, plan: CpuPlan) -> TrackedRun:
    """Create this job's MLflow run, or reopen the interrupted one, with its tags."""
    client, decision = planned.client, planned.decision
    launch_tags = {
        **_hydra_tags(),
        **identity_tags(),
        **cluster.scheduler_tags(),
        "torch.num_threads": str(plan.threads_per_split),
        "batch_split": str(plan.batch_split),
        "data.fingerprint": datamodule.fingerprint,
    }
    if decision.action == "resume":
        run = decision.run
        run_id = run.info.run_id
        before = run.data.tags.get("data.fingerprint")
        if before and before != datamodule.fingerprint:
            raise resume.ResumeError(
                f"run {run_id} was trained on other data (data.fingerprint {before}, now "
                f"{datamodule.fingerprint}); launch with resume=never for a new run"
            )
        count = int(run.data.tags.get(resume.RESUME_COUNT_TAG, "0")) + 1
        output_dir = Path(str(cfg.paths.output_dir))
        ckpt = checkpoints.find_checkpoint(client, run, output_dir / "checkpoints" / "downloaded")
        commit = tracking.git_state(project_root()).get("git.commit")
        if commit != run.data.tags.get("git.commit"):
            log.warning(
                "resuming run %s, started at commit %s, under commit %s",
                run_id,
                run.data.tags.get("git.commit"),
                commit,
            )
        step = checkpoints.checkpoint_step(ckpt) if ckpt else 0
        client.update_run(run_id, status="RUNNING")
        tracking.set_tags(
            client,
            run_id,
            {
                **launch_tags,
                resume.RESUME_COUNT_TAG: str(count),
                resume.RESUMED_FROM_STEP_TAG: str(step if step is not None else "unknown"),
            },
        )
        client.log_text(
            run_id, OmegaConf.to_yaml(planned.resolved), f"config/config-resume{count}.yaml"
        )
        log.info(
            "resuming MLflow run %s (%s; %s) from %s",
            run_id,
            cfg.logger.run_name,
            decision.reason,
            ckpt or "the start: no checkpoint was saved",
        )
        return TrackedRun(
            client,
            run_id,
            resumed=count,
            ckpt_path=str(ckpt) if ckpt else None,
            logged_steps=tracking.logged_steps(client, run_id),
        )

    tags = {
        "model": cfg.model.arch,
        "seed": str(cfg.seed),
        "mlflow.source.name": "seqbench-train",
        JOB_KEY_TAG: planned.key,
        resume.RESUME_COUNT_TAG: "0",
        **tracking.git_state(project_root()),
        **tracking.environment_tags(),
        **launch_tags,
        **{str(k): str(v) for k, v in (cfg.logger.get("tags") or {}).items()},
    }
    run_id = client.create_run(
        planned.experiment_id, run_name=cfg.logger.run_name, tags=tags
    ).info.run_id
    tracking.log_params(client, run_id, planned.resolved)
    client.log_text(run_id, OmegaConf.to_yaml(planned.resolved), "config/config.yaml")
    log.info(
        "MLflow run %s (%s) in experiment %r at %s",
        cfg.logger.run_name,
        run_id,
        cfg.logger.experiment_name,
        cfg.logger.tracking_uri,
    )
    return TrackedRun(client, run_id)


_SWEEP_TAGS = ("sweep_id", "sweep_dir", "job_num")  # a skipped run joins the relaunched sweep


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@contextlib.contextmanager
def _heartbeat(cfg: DictConfig, tracked: TrackedRun | None) -> Iterator[Callable[[], None]]:
    """A heartbeat thread for the run (rank 0); yields the per-epoch beat."""
    if tracked is None:
        yield lambda: None
        return
    interval = float((cfg.get("heartbeat") or {}).get("interval", 60))
    with Heartbeat(tracked.client, tracked.run_id, interval) as heartbeat:
        yield heartbeat.beat


def _fit_and_test(
    cfg: DictConfig,
    datamodule,
    tracked: TrackedRun | None,
    run_origin: float | None,
    plan: CpuPlan,
    guard: SignalGuard,
    beat: Callable[[], None],
) -> dict[str, float]:
    task = build_task(cfg, plan.batch_split)
    client, run_id = (tracked.client, tracked.run_id) if tracked else (None, None)
    if tracked is not None and not tracked.resumed:
        lineage.log_data(client, run_id, datamodule)
        client.log_metric(run_id, "model/trainable_params", task.trainable_parameters)
    log.info(
        "model %s: %s trainable parameters; %d CPU thread(s) x %d batch slice(s)",
        cfg.model.arch,
        f"{task.trainable_parameters:,}",
        plan.threads_per_split,
        plan.batch_split,
    )

    logger = tracking.RunLogger(
        experiment_name=cfg.logger.experiment_name,
        tracking_uri=cfg.logger.tracking_uri,
        run_id=run_id,
        logged_steps=tracked.logged_steps if tracked else None,
    )

    def upload(path: Path, name: str = checkpoints.CHECKPOINT_NAME) -> None:
        if client is not None:  # for a resume on another machine
            checkpoints.upload_checkpoint(client, run_id, path, name)

    def fetch(name: str) -> Path | None:
        if client is None:
            return None
        return checkpoints.download_checkpoint(client, run_id, name, checkpoint_dir / "downloaded")

    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    checkpoint_dir = Path(str(cfg.paths.output_dir)) / "checkpoints"
    for callback in callbacks:
        if isinstance(callback, EpochTimer):
            callback.origin = run_origin
        if isinstance(callback, TrackedCheckpoint):
            callback.on_saved, callback.fetch = upload, fetch
            checkpoint_dir = Path(callback.dirpath or checkpoint_dir)
    callbacks += [
        StopOnSignal(guard, checkpoint_dir, upload),
        HeartbeatEachEpoch(beat),
        NonFiniteLossGuard(int((cfg.get("nonfinite_check") or {}).get("every_n_steps", 1))),
        RandomStateInCheckpoint(),
    ]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if tracked is not None:
        ckpt_path = tracked.ckpt_path or cfg.get("ckpt_path")
        os.environ[_RESUME_CKPT_ENV] = ckpt_path or ""
    else:
        ckpt_path = os.environ.get(_RESUME_CKPT_ENV) or cfg.get("ckpt_path")
        if ckpt_path:
            log.info("rank %d continues from %s (rank 0 decided)", rank_zero_only.rank, ckpt_path)
    try:
        launch = tracked.resumed if tracked else 0
        with ddp.one_job_per_child(trainer):  # DDP children run this multirun job only
            return _run_trainer(
                cfg, trainer, task, datamodule, client, run_id, ckpt_path, guard, launch
            )
    finally:
        if task.batch_splitter is not None:  # stop its threads: a multirun builds many tasks
            task.batch_splitter.close()


def _run_trainer(
    cfg: DictConfig,
    trainer: L.Trainer,
    task: ClassificationTask,
    datamodule,
    client,
    run_id,
    ckpt_path: str | None,
    guard: SignalGuard,
    launch: int = 0,
) -> dict[str, float]:
    """Fit, test, log the run-level metrics. They are logged at step ``launch`` (0, then the
    resume count), so a resumed run adds a point instead of a second one at the same step."""
    fit_started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - fit_started
    guard.raise_if_requested("after the last epoch; its checkpoint is saved")

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if best_path and not Path(best_path).is_file():
        # Resumed on another machine after the last epoch: the best checkpoint stayed behind.
        log.warning(
            "best checkpoint %s is not on this machine; testing the final weights", best_path
        )
        best_path = ""
    metrics = {"perf/fit_seconds": fit_seconds} | {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if torch.is_tensor(v) and v.numel() == 1
    }
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["val/acc_best"] = float(checkpoint.best_model_score)
    if cfg.get("test", True):
        results = trainer.test(
            task, datamodule=datamodule, ckpt_path=best_path or None, verbose=False
        )
        metrics |= {k: float(v) for k, v in results[0].items()}
        if client is not None:
            plots.log_confusion_matrix(
                client, run_id, task.confusion_matrix, datamodule.label_names
            )

    if client is not None:
        client.log_metric(run_id, "perf/fit_seconds", fit_seconds, step=launch)
        if "val/acc_best" in metrics:
            client.log_metric(run_id, "val/acc_best", metrics["val/acc_best"], step=launch)
        if best_path:
            client.log_artifact(run_id, best_path, artifact_path="checkpoints")
        mlflow_model.log_run_model(client, run_id, cfg, task, datamodule, best_path)
        log.info("finished: %s", {k: round(v, 4) for k, v in sorted(metrics.items()) if "/" in k})
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> Any:
    """Console entry point; returns ``cfg.optimized_metric`` for sweepers (e.g. Optuna).

    Errors a user can fix (bad config, unreachable server, resume conflicts, bad data) print
    one message and exit with status 2; an interrupted run exits 128 + the signal number, as a
    shell reports a killed process, after saying how to resume it.
    """
    try:
        result = train(cfg)
    except USER_ERRORS as exc:
        log.error("%s", exc)
        sys.exit(2)
    except RunInterrupted as exc:
        log.warning("%s; run the same command again to resume", exc)
        hand_over(exc.signum)  # under submitit: requeue the job (it resumes this run)
        sys.exit(128 + exc.signum)
    key = cfg.get("optimized_metric")
    return result.metrics.get(key) if key else None


if __name__ == "__main__":
    main()
