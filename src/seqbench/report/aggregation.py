"""From per-run records to the table: group, aggregate over seeds, add the statistics, rank by
the chosen metric and keep whole numbers whole."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from seqbench.report.core import COLUMNS, DEFAULT_GROUP_BY, DEFAULT_METRIC, ReportError
from seqbench.report.statistics import add_statistics


def parse_group_by(group_by: str | Sequence[str] | None) -> tuple[str, ...]:
    """Grouping keys from ``a,b`` or a list; the default when empty; never a table column."""
    if group_by is None:
        return DEFAULT_GROUP_BY
    keys = group_by.split(",") if isinstance(group_by, str) else list(group_by)
    keys = [k.strip() for k in keys if k and k.strip()]
    if not keys:
        return DEFAULT_GROUP_BY
    clash = sorted(
        set(keys) & {*COLUMNS, "run_id", "run_name", "test_acc", "val_acc_best", "val_loss"}
    )
    if clash:
        raise ReportError(f"cannot group by {clash}: the names are used by the table's own columns")
    if len(set(keys)) != len(keys):
        raise ReportError(f"duplicate grouping keys in {keys}")
    return tuple(keys)


def metric_column(metric: str) -> str:
    """Table column stem of a metric: ``test/f1`` -> ``test_f1``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def _sort_key(column: pd.Series) -> pd.Series:
    """Numeric order for numeric-looking keys (hidden sizes, epochs), otherwise alphabetical."""
    numeric = pd.to_numeric(column, errors="coerce")
    return numeric if numeric.notna().all() else column.astype(str)


def aggregate(
    runs: pd.DataFrame, keys: Sequence[str], metric: str, baseline: str | None
) -> pd.DataFrame:
    """One row per group: ``COLUMNS`` (and ``<metric>_mean``/``_std`` for another metric, ranked
    by it, best first; else ordered by the keys)."""
    table = (
        runs.groupby(list(keys), sort=False)
        .agg(
            n=("test_acc", "size"),
            test_acc_mean=("test_acc", "mean"),
            test_acc_std=("test_acc", "std"),  # pandas: ddof=1, NaN for one run
            val_acc_best_mean=("val_acc_best", "mean"),
            val_loss_mean=("val_loss", "mean"),
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
    return table
