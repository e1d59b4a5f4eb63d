"""``seqbench-train``: compose the config with Hydra, train and test one model, track it in MLflow.

seqbench-train model=bilstm
seqbench-train model=cnn_lstm seed=2 trainer=gpu trainer.precision=bf16-mixed
seqbench-train -m model=lstm,bilstm seed=1,2,3
"""

from __future__ import annotations

import gc
import logging
import os
import time
import warnings
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
from omegaconf import DictConfig, OmegaConf

from seqbench import mlflow_model, tracking
from seqbench.callbacks import EpochTimer
from seqbench.hardware import release_freed_memory
from seqbench.parallel import BatchSplitter
from seqbench.paths import config_dir, project_root, register_resolvers
from seqbench.task import ClassificationTask

log = logging.getLogger(__name__)
register_resolvers()
_RUNS_IN_PROCESS = 0
# Lightning noise that says nothing to a seqbench user: metrics are logged per epoch, not per
# step, and the pytree deprecation is internal to Lightning.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


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
    2 slices, each with half the threads); else 1 (``seqbench.parallel``)."""
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
    )


@dataclass
class TrainResult:
    run_id: str | None  # None on DDP ranks other than 0, which do not track
    metrics: dict[str, float]


def train(cfg: DictConfig) -> TrainResult:
    """Train, test on the best validation checkpoint, and record everything in one MLflow run.

    The metrics include ``val/acc_best`` (what sweeps optimise; never a test metric).
    """
    global _RUNS_IN_PROCESS
    # The first run of a process is timed from the process start (imports count); later jobs of
    # a multirun in the same process from here.
    run_origin = None if _RUNS_IN_PROCESS == 0 else time.time()
    _RUNS_IN_PROCESS += 1
    L.seed_everything(cfg.seed, workers=True)
    plan = configure_cpu(cfg)
    rank_zero = rank_zero_only.rank == 0
    client = run_id = None
    if rank_zero:
        client, experiment_id = tracking.open_store(
            cfg.logger.tracking_uri, cfg.logger.experiment_name, cfg.logger.get("artifact_location")
        )
        tags = {
            "model": cfg.model.arch,
            "seed": str(cfg.seed),
            "mlflow.source.name": "seqbench-train",
            "torch.num_threads": str(plan.threads_per_split),
            "batch_split": str(plan.batch_split),
            **tracking.git_state(project_root()),
            **tracking.environment_tags(),
            **_hydra_tags(),
            **{str(k): str(v) for k, v in (cfg.logger.get("tags") or {}).items()},
        }
        run_id = client.create_run(
            experiment_id, run_name=cfg.logger.run_name, tags=tags
        ).info.run_id
        log.info(
            "MLflow run %s (%s) in experiment %r at %s",
            cfg.logger.run_name,
            run_id,
            cfg.logger.experiment_name,
            cfg.logger.tracking_uri,
        )
    try:
        metrics = _fit_and_test(cfg, client, run_id, run_origin, plan)
    except BaseException as exc:
        if client is not None:
            tracking.finish(client, run_id, exc)
        raise
    finally:
        gc.collect()
        release_freed_memory()
    if client is not None:
        tracking.finish(client, run_id)
    return TrainResult(run_id, metrics)


def _fit_and_test(
    cfg: DictConfig, client, run_id: str | None, run_origin: float | None, plan: CpuPlan
) -> dict[str, float]:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if client is not None:
        tracking.log_params(client, run_id, resolved)
        client.log_text(run_id, OmegaConf.to_yaml(resolved), "config/config.yaml")

    datamodule = instantiate(cfg.data)
    datamodule.sampler_seed = cfg.seed
    datamodule.prepare_data()
    datamodule.setup("fit")

    task = build_task(cfg, plan.batch_split)
    if client is not None:
        client.set_tag(run_id, "data.fingerprint", datamodule.fingerprint)
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
    )
    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    for callback in callbacks:
        if isinstance(callback, EpochTimer):
            callback.origin = run_origin
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    try:
        return _run_trainer(cfg, trainer, task, datamodule, client, run_id)
    finally:
        if task.batch_splitter is not None:  # stop its threads: a multirun builds many tasks
            task.batch_splitter.close()


def _run_trainer(
    cfg: DictConfig, trainer: L.Trainer, task: ClassificationTask, datamodule, client, run_id
) -> dict[str, float]:
    fit_started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.perf_counter() - fit_started

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
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
        client.log_metric(run_id, "perf/fit_seconds", fit_seconds)
        if "val/acc_best" in metrics:
            client.log_metric(run_id, "val/acc_best", metrics["val/acc_best"])
        if best_path:
            client.log_artifact(run_id, best_path, artifact_path="checkpoints")
        mlflow_model.log_run_model(client, run_id, cfg, task, datamodule, best_path)
        log.info("finished: %s", {k: round(v, 4) for k, v in sorted(metrics.items()) if "/" in k})
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> Any:
    """Console entry point; returns ``cfg.optimized_metric`` for sweepers (e.g. Optuna)."""
    result = train(cfg)
    key = cfg.get("optimized_metric")
    return result.metrics.get(key) if key else None


if __name__ == "__main__":
    main()
