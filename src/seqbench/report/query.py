"""Reading runs: MLflow selection (experiment, sweep, filter), runs -> records, stale and
excluded runs, and the per-group aggregation behind the table."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from seqbench.config.store import sqlite_path
from seqbench.report.core import (
    _NOT_FINISHED,
    COLUMNS,
    DEFAULT_GROUP_BY,
    DEFAULT_METRIC,
    REPORT_KIND,
    REPORT_KIND_TAG,
    Excluded,
    Report,
    ReportError,
)
from seqbench.report.core import row_label as _label
from seqbench.report.statistics import add_statistics
from seqbench.run.heartbeat import DEFAULT_STALE_AFTER, liveness


def open_client(tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri``; refuses a missing SQLite file rather than creating an empty store."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ReportError(
            f"no MLflow store at {path} (tracking URI {tracking_uri}); train something first, "
            "or pass --tracking-uri / set MLFLOW_TRACKING_URI"
        )
    return MlflowClient(tracking_uri)


def _experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        state = "is deleted" if exp is not None else "does not exist"
        raise ReportError(
            f"experiment {name!r} {state} at {client.tracking_uri}; "
            f"existing experiments: {', '.join(repr(n) for n in names) or '(none)'}"
        )
    return exp.experiment_id


def _search(
    client: MlflowClient,
    experiment_id: str,
    filter_string: str = "",
    order_by: list[str] | None = None,
) -> Iterator[Run]:
    """All runs matching the filter, page by page (servers cap a page at 1000 runs)."""
    token = None
    while True:
        try:
            page = client.search_runs(
                [experiment_id],
                filter_string,
                max_results=1000,
                order_by=order_by,
                page_token=token,
            )
        except MlflowException as exc:
            if filter_string and "INVALID_PARAMETER_VALUE" in str(exc.error_code):
                raise ReportError(
                    f"invalid MLflow filter {filter_string!r}: {exc.message}"
                ) from exc
            raise
        yield from page
        token = page.token
        if not token:
            return


def _is_report_run(run: Run) -> bool:
    return run.data.tags.get(REPORT_KIND_TAG) == REPORT_KIND


def latest_sweep_id(
    client: MlflowClient, experiment_id: str, filter_string: str | None = None
) -> str:
    """``sweep_id`` tag of the most recently started training run that has one (matching the filter).

    Done client-side: an MLflow ``!=``/``LIKE`` tag filter silently drops runs without the tag on
    some stores and not others."""
    for run in _search(client, experiment_id, filter_string or "", ["attributes.start_time DESC"]):
        sweep = run.data.tags.get("sweep_id")
        if sweep and not _is_report_run(run):
            return sweep
    raise ReportError(
        "no run in this experiment has a sweep_id tag (runs from `seqbench-train -m ...` have one); "
        "drop --latest-sweep to report every run"
    )


def _combined_filter(sweep_id: str | None, filter_string: str | None) -> str:
    clauses = []
    if sweep_id:
        if "'" in sweep_id:
            raise ReportError(f"sweep id {sweep_id!r} must not contain a single quote")
        clauses.append(f"tags.sweep_id = '{sweep_id}'")
    if filter_string and filter_string.strip():
        clauses.append(filter_string.strip())
    return " and ".join(clauses)


def _key_value(run: Run, key: str) -> str | None:
    """A grouping key's value: ``params.x`` / ``tags.x`` explicitly, else a param, else a tag.

    The default key ``model`` is a tag (the flattened config has ``model.arch``, no ``model``)."""
    params, tags = run.data.params, run.data.tags
    if key.startswith("params."):
        return params.get(key.removeprefix("params."))
    if key.startswith("tags."):
        return tags.get(key.removeprefix("tags."))
    return params.get(key, tags.get(key))


def _history(client: MlflowClient, run_id: str, key: str) -> np.ndarray:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return np.array([m.value for m in points], dtype=float)


def _sort_key(column: pd.Series) -> pd.Series:
    """Numeric order for numeric-looking keys (hidden sizes, epochs), otherwise alphabetical."""
    numeric = pd.to_numeric(column, errors="coerce")
    return numeric if numeric.notna().all() else column.astype(str)


def _parse_group_by(group_by: str | Sequence[str] | None) -> tuple[str, ...]:
    if group_by is None:
        return DEFAULT_GROUP_BY
    keys = group_by.split(",") if isinstance(group_by, str) else list(group_by)
    keys = [k.strip() for k in keys if k and k.strip()]
    if not keys:
        return DEFAULT_GROUP_BY
    clash = sorted(set(keys) & {*COLUMNS, "run_id", "run_name", "test_acc", "val_acc_best"})
    if clash:
        raise ReportError(f"cannot group by {clash}: the names are used by the table's own columns")
    if len(set(keys)) != len(keys):
        raise ReportError(f"duplicate grouping keys in {keys}")
    return tuple(keys)


def build_table(
    client_or_uri: MlflowClient | str,
    experiment: str,
    sweep_id: str | None = None,
    filter_string: str | None = None,
    group_by: str | Sequence[str] | None = None,
    *,
    latest_sweep: bool = False,
    stale_after: float = DEFAULT_STALE_AFTER,
    metric: str = DEFAULT_METRIC,
    baseline: str | None = None,
) -> Report:
    """Select an experiment's training runs and aggregate them per group (``model`` tag by default).

    ``sweep_id`` restricts to one multirun (``tags.sweep_id``); ``latest_sweep`` picks the newest
    sweep instead; ``filter_string`` is any MLflow search filter, ANDed with the sweep clause.
    ``metric`` other than ``test/acc`` (e.g. ``test/f1``) adds its mean and std per group as
    ``<metric>_mean``/``_std`` (``/`` as ``_``) and ranks the rows by it, best (highest) first.
    Summary runs made by this tool are skipped; a RUNNING run whose process is gone, or whose
    heartbeat is older than ``stale_after`` seconds, is listed as stale. Every row gets a 95%
    confidence interval of its mean test accuracy; ``baseline`` (a row label, e.g. ``lstm``)
    adds each row's difference from it and Welch's p-value (see ``seqbench.report.statistics``).
    Raises ``ReportError`` when the experiment is unknown, no selected run finished with a
    ``test/acc``, or ``baseline`` names no row."""
    client = open_client(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    keys = _parse_group_by(group_by)
    experiment_id = _experiment_id(client, experiment)
    if sweep_id and latest_sweep:
        raise ReportError("give either a sweep id or latest_sweep, not both")
    if latest_sweep:
        sweep_id = latest_sweep_id(client, experiment_id, filter_string)
    selection = _combined_filter(sweep_id, filter_string)

    records: list[dict] = []
    excluded: list[Excluded] = []
    curves: dict[str, list[np.ndarray]] = {}
    for run in _search(client, experiment_id, selection, ["attributes.start_time ASC"]):
        if _is_report_run(run):
            continue
        info, metrics = run.info, run.data.metrics
        name = info.run_name or run.data.tags.get("mlflow.runName") or info.run_id
        if info.status != RunStatus.to_string(RunStatus.FINISHED):
            reason = _NOT_FINISHED.get(info.status, "not finished")
            if info.status == "RUNNING":
                alive = liveness(run, stale_after)
                reason = (
                    f"still running ({alive.reason})"
                    if alive.alive
                    else f"stale: {alive.reason}; relaunch the same command to resume it"
                )
            excluded.append(Excluded(info.run_id, name, info.status, reason))
            continue
        if "test/acc" not in metrics:
            reason = "finished without a test/acc metric (trained with test=false?)"
            excluded.append(Excluded(info.run_id, name, info.status, reason))
            continue
        if metric not in metrics:
            reason = f"finished without a {metric} metric"
            excluded.append(Excluded(info.run_id, name, info.status, reason))
            continue
        values = {key: _key_value(run, key) for key in keys}
        missing = [key for key, value in values.items() if value is None]
        if missing:
            reason = f"has no param or tag {', '.join(missing)} to group by"
            excluded.append(Excluded(info.run_id, name, info.status, reason))
            continue

        val_acc = _history(client, info.run_id, "val/acc")
        seconds = _history(client, info.run_id, "perf/epoch_seconds")
        epochs = (
            float(len(val_acc))
            if len(val_acc)
            else _float(run.data.params.get("trainer.max_epochs"))
        )
        records.append(
            {
                **values,
                "run_id": info.run_id,
                "run_name": name,
                "test_acc": metrics["test/acc"],
                **({"metric": metrics[metric]} if metric != DEFAULT_METRIC else {}),
                "val_acc_best": metrics.get("val/acc_best", math.nan),
                "params": metrics.get("model/trainable_params", math.nan),
                "epochs": epochs,
                "sec_per_epoch": float(seconds.mean()) if len(seconds) else math.nan,
            }
        )
        if len(val_acc):
            curves.setdefault(_label(list(values.values())), []).append(val_acc)

    if not records:
        detail = "".join(f"\n  {e.run_name} ({e.run_id}): {e.status}, {e.reason}" for e in excluded)
        raise ReportError(
            f"experiment {experiment!r} has no finished runs with test/acc"
            + (f" matching {selection!r}" if selection else "")
            + (f"; not included:{detail}" if excluded else "")
        )

    runs = pd.DataFrame.from_records(records)
    table = (
        runs.groupby(list(keys), sort=False)
        .agg(
            n=("test_acc", "size"),
            test_acc_mean=("test_acc", "mean"),
            test_acc_std=("test_acc", "std"),  # pandas: ddof=1, NaN for one run
            val_acc_best_mean=("val_acc_best", "mean"),
            params=("params", "mean"),
            epochs=("epochs", "mean"),
            sec_per_epoch=("sec_per_epoch", "mean"),
        )
        .reset_index()
        .sort_values(list(keys), key=_sort_key, kind="stable", ignore_index=True)
    )
    table = add_statistics(table, runs, keys, baseline)[[*keys, *COLUMNS]]
    if metric != DEFAULT_METRIC:  # rank by the chosen metric
        stats = runs.groupby(list(keys), sort=False)["metric"].agg(["mean", "std"])
        name = metric_column(metric)
        stats.columns = [f"{name}_mean", f"{name}_std"]
        table = table.merge(stats.reset_index(), on=list(keys), how="left")
        table = table.sort_values(f"{name}_mean", ascending=False, kind="stable", ignore_index=True)
    # Whole numbers stay whole in the CSV (57829, not 57829.0).
    for column in ("params", "epochs"):
        present = table[column].dropna()
        if len(present) and (present % 1 == 0).all():
            table[column] = table[column].round().astype("Int64")
    order = [_label([row[k] for k in keys]) for _, row in table.iterrows()]
    curves = {label: curves[label] for label in order if label in curves}
    return Report(
        experiment=experiment,
        experiment_id=experiment_id,
        tracking_uri=str(client.tracking_uri),
        sweep_id=sweep_id,
        filter_string=filter_string or None,
        group_by=keys,
        table=table,
        runs=runs,
        excluded=excluded,
        curves=curves,
        metric=metric,
        baseline=baseline,
    )


def metric_column(metric: str) -> str:
    """Table column stem of a metric: ``test/f1`` -> ``test_f1``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan
