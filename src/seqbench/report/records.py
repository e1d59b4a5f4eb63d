"""One record per run: whether a selected run is included (and why not, when it is not), its
grouping values, metrics and validation curve. Nothing is dropped silently: every run left out
becomes an ``Excluded`` with its status and reason."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus

from seqbench.report.core import _NOT_FINISHED, DEFAULT_METRIC, Excluded, row_label
from seqbench.run.heartbeat import liveness
from seqbench.run.optuna_trial import PRUNED_EPOCH_TAG, is_pruned


def key_value(run: Run, key: str) -> str | None:
    """A grouping key's value: ``params.x`` / ``tags.x`` explicitly, else a param, else a tag.

    The default key ``model`` is a tag (the flattened config has ``model.arch``, no ``model``)."""
    params, tags = run.data.params, run.data.tags
    if key.startswith("params."):
        return params.get(key.removeprefix("params."))
    if key.startswith("tags."):
        return tags.get(key.removeprefix("tags."))
    return params.get(key, tags.get(key))


def exclusion_reason(
    run: Run, values: dict[str, str | None], metric: str, stale_after: float
) -> str | None:
    """Why ``run`` is left out of the table (not finished, stale, a metric or key missing), or
    None when it is included."""
    info, metrics = run.info, run.data.metrics
    if info.status != RunStatus.to_string(RunStatus.FINISHED):
        if info.status != "RUNNING":
            return _NOT_FINISHED.get(info.status, "not finished")
        alive = liveness(run, stale_after)
        return (
            f"still running ({alive.reason})"
            if alive.alive
            else f"stale: {alive.reason}; relaunch the same command to resume it"
        )
    if is_pruned(run.data.tags) and "test/acc" not in metrics:
        epoch = run.data.tags.get(PRUNED_EPOCH_TAG, "?")
        return f"pruned by Optuna after epoch {epoch} (stopped early, never tested)"
    if "test/acc" not in metrics:
        return "finished without a test/acc metric (trained with test=false?)"
    if metric not in metrics:
        return f"finished without a {metric} metric"
    missing = [key for key, value in values.items() if value is None]
    if missing:
        return f"has no param or tag {', '.join(missing)} to group by"
    return None


def _points(client: MlflowClient, run_id: str, key: str) -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))


def _history(client: MlflowClient, run_id: str, key: str) -> np.ndarray:
    return np.array([m.value for m in _points(client, run_id, key)], dtype=float)


def tested_val_loss(client: MlflowClient, run: Run, val_acc: Sequence) -> float:
    """The validation loss of the weights tested: the last epoch's for a fixed schedule (no
    ``val/acc_best``), else that of the first epoch reaching ``val/acc_best`` (the checkpoint
    kept), found in ``val_acc`` (the run's ``val/acc`` points, read once by ``run_record``).
    With 8-54 validation series, accuracies tie often; the loss still tells them apart
    (``seqbench.report.datasets.chosen_on_validation``)."""
    metrics = run.data.metrics
    if "val/acc_best" not in metrics:
        return metrics.get("val/loss", math.nan)
    best = metrics["val/acc_best"]
    steps = [m.step for m in val_acc if m.value >= best - 1e-6]
    if not steps:
        return math.nan
    losses = {m.step: m.value for m in _points(client, run.info.run_id, "val/loss")}
    return losses.get(steps[0], math.nan)


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def run_record(
    client: MlflowClient, run: Run, name: str, values: dict[str, str | None], metric: str
) -> tuple[dict, np.ndarray]:
    """The table's inputs from one included run, and its ``val/acc`` curve."""
    info, metrics = run.info, run.data.metrics
    acc_points = _points(client, info.run_id, "val/acc")
    val_acc = np.array([m.value for m in acc_points], dtype=float)
    seconds = _history(client, info.run_id, "perf/epoch_seconds")
    epochs = (
        float(len(val_acc)) if len(val_acc) else _float(run.data.params.get("trainer.max_epochs"))
    )
    record = {
        **values,
        "run_id": info.run_id,
        "run_name": name,
        "test_acc": metrics["test/acc"],
        **({"metric": metrics[metric]} if metric != DEFAULT_METRIC else {}),
        # the validation accuracy of the weights tested: the best checkpoint's, or, where no
        # checkpoint was chosen on validation (a fixed schedule, e.g. experiment=ts_suite),
        # the last epoch's
        "val_acc_best": metrics.get("val/acc_best", metrics.get("val/acc", math.nan)),
        "val_loss": tested_val_loss(client, run, acc_points),
        "params": metrics.get("model/trainable_params", math.nan),
        "epochs": epochs,
        "sec_per_epoch": float(seconds.mean()) if len(seconds) else math.nan,
    }
    return record, val_acc


def collect(
    client: MlflowClient,
    runs: Iterable[Run],
    keys: Sequence[str],
    metric: str,
    stale_after: float,
) -> tuple[list[dict], list[Excluded], dict[str, list[np.ndarray]]]:
    """(records of the included runs, the excluded runs, validation curves per row label)."""
    records: list[dict] = []
    excluded: list[Excluded] = []
    curves: dict[str, list[np.ndarray]] = {}
    for run in runs:
        info = run.info
        name = info.run_name or run.data.tags.get("mlflow.runName") or info.run_id
        values = {key: key_value(run, key) for key in keys}
        reason = exclusion_reason(run, values, metric, stale_after)
        if reason is not None:
            excluded.append(Excluded(info.run_id, name, info.status, reason))
            continue
        record, val_acc = run_record(client, run, name, values, metric)
        records.append(record)
        if len(val_acc):
            curves.setdefault(row_label(list(values.values())), []).append(val_acc)
    return records, excluded, curves
