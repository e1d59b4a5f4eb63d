"""Fit, then test on the best validation checkpoint, and collect the run's metrics.

Nothing here knows of MLflow: the run's lifecycle (``seqbench.run.lifecycle``) logs what
``evaluate`` returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from seqbench.training.callbacks import EpochTimer, NonFiniteLossGuard, RandomStateInCheckpoint
from seqbench.training.pruning import pruned_epoch

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    """What a fit and its test produced."""

    metrics: dict[str, float]  # perf/fit_seconds, the last epoch's, val/acc_best, test/*
    fit_seconds: float
    best_path: str  # the best checkpoint on this machine; "" when there is none
    tested: bool
    pruned_epoch: int | None = None  # the epoch Optuna's pruner stopped the fit after


def config_callbacks(cfg: DictConfig, origin: float | None) -> list[L.Callback]:
    """The callbacks ``cfg.callbacks`` names; ``EpochTimer`` times from ``origin`` (None: the
    process start)."""
    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    for callback in callbacks:
        if isinstance(callback, EpochTimer):
            callback.origin = origin
    return callbacks


def guard_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Callbacks every run has: the non-finite loss check and random states in checkpoints."""
    every = int((cfg.get("nonfinite_check") or {}).get("every_n_steps", 1))
    return [NonFiniteLossGuard(every), RandomStateInCheckpoint()]


def fit(trainer: L.Trainer, task: L.LightningModule, datamodule, ckpt_path: str | None) -> float:
    """``trainer.fit`` from ``ckpt_path`` (None: the start); its wall time in seconds."""
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    return time.perf_counter() - started


def evaluate(
    trainer: L.Trainer, task: L.LightningModule, datamodule, fit_seconds: float, test: bool
) -> FitOutcome:
    """The fitted trainer's metrics, and with ``test`` those of the best checkpoint on the test
    split (the final weights when that checkpoint is not on this machine). A fit that Optuna's
    pruner stopped is not tested: its partial result is no table row."""
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
    pruned = pruned_epoch(trainer)
    test = test and pruned is None
    if test:
        results = trainer.test(
            task, datamodule=datamodule, ckpt_path=best_path or None, verbose=False
        )
        metrics |= {k: float(v) for k, v in results[0].items()}
    return FitOutcome(metrics, fit_seconds, best_path, test, pruned)
