"""Optuna pruning inside the trainer: report the optimised metric after every validation epoch
to the job's trial and stop the fit at once when the study's pruner says so.

The callback knows nothing of Optuna's storage: it talks to a *reporter* (rank 0's
``seqbench.run.optuna_trial.TrialLink``; None on the other ranks), and every rank takes rank 0's
decision through ``trainer.strategy.broadcast``, so DDP ranks stop together. Steps are
Lightning's 0-based epochs (``trainer.current_epoch``, the ``epoch`` metric MLflow shows), as
in Optuna's own Lightning integration: a pruner's ``n_warmup_steps=k`` never prunes during the
first k epochs.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import lightning as L

log = logging.getLogger(__name__)

BEST_SUFFIX = "_best"  # val/acc_best: the best val/acc so far, a value the trainer never logs


class Reporter(Protocol):
    maximize: bool

    def report(self, value: float, epoch: int) -> bool: ...

    def tell_pruned(self, epoch: int) -> None: ...


class OptunaPruning(L.Callback):
    """Reports ``metric`` (e.g. ``val/acc_best``) to ``reporter`` after every validation epoch
    (not the sanity check) and sets ``trainer.should_stop`` when the trial is pruned;
    ``pruned_epoch`` then holds the epoch, so the test stage is skipped.

    A ``*_best`` metric that the trainer does not log (``val/acc_best``) is the running best of
    its base (``val/acc``) in the study's direction, kept in checkpoints for a resumed run."""

    def __init__(self, metric: str, reporter: Reporter | None) -> None:
        self.metric = metric
        self.reporter = reporter
        self.pruned_epoch: int | None = None
        self.best: float | None = None  # running best of the base metric
        self._warned = False

    def _value(self, trainer: L.Trainer, maximize: bool) -> float | None:
        metrics = trainer.callback_metrics
        if self.metric in metrics:
            return float(metrics[self.metric])
        base = self.metric.removesuffix(BEST_SUFFIX)
        if base != self.metric and base in metrics:
            value = float(metrics[base])
            if self.best is None or math.isnan(self.best):
                self.best = value
            elif not math.isnan(value):
                self.best = max(self.best, value) if maximize else min(self.best, value)
            return self.best
        if not self._warned:
            self._warned = True
            log.warning(
                "optimized_metric %r is not logged during training: no pruning", self.metric
            )
        return None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        prune = False
        if self.reporter is not None:
            value = self._value(trainer, self.reporter.maximize)
            if value is not None and math.isfinite(value):
                prune = self.reporter.report(value, epoch)
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if not prune:
            return
        self.pruned_epoch = epoch
        trainer.should_stop = True
        if self.reporter is not None:
            self.reporter.tell_pruned(epoch)
        log.info("pruned by Optuna after epoch %d (%s); no test", epoch, self.metric)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


def pruned_epoch(trainer: L.Trainer) -> int | None:
    """The epoch after which an ``OptunaPruning`` callback stopped ``trainer``, or None."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, OptunaPruning) and callback.pruned_epoch is not None:
            return callback.pruned_epoch
    return None
