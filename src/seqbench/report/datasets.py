"""``seqbench-report --experiments A,B,C``: one table of models x datasets, one experiment per
dataset (text or numeric alike), with the models ranked across datasets (``ranking``).

Each experiment is read exactly as the single-experiment report reads it (``build_table``: same
sweep, filter, grouping and exclusion rules), so a cell is that report's row for the model: the
mean and sample std of the metric over the model's runs (its seeds) on that dataset.

The best *measured* mean of a column is a choice made on test data. Each column therefore also
names the model validation alone would choose (``<dataset>_chosen``): the highest mean best
validation accuracy, ties to the lower mean validation loss of the weights tested (then fewer
parameters, then the name), the figure to quote for "the best model on this dataset".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from seqbench.report.aggregation import metric_column
from seqbench.report.core import DEFAULT_METRIC, Report, ReportError, row_label
from seqbench.report.query import build_table
from seqbench.report.ranking import ALPHA, Ranking, rank_models
from seqbench.report.selection import Selection, open_client


@dataclass
class DatasetsReport:
    """The cross-dataset table: per-experiment reports, the models x datasets cells and ranks."""

    experiments: list[str]  # one per dataset, in the order asked for
    reports: list[Report]
    group_by: tuple[str, ...]
    metric: str
    table: pd.DataFrame  # the CSV: keys, <dataset>_n/_mean/_std/_rank per dataset, average_rank
    ranking: Ranking
    tracking_uri: str
    sweep_id: str | None = None
    filter_string: str | None = None

    @property
    def selection(self) -> str:
        """Which runs were asked for, in words."""
        names = ", ".join(f"`{e}`" for e in self.experiments)
        parts = [f"experiments {names}"]
        if self.sweep_id:
            parts.append(f"sweep `{self.sweep_id}`")
        elif any(r.sweep_id for r in self.reports):
            parts.append("the latest sweep of each")
        if self.filter_string:
            parts.append(f"filter `{self.filter_string}`")
        return ", ".join(parts)


def parse_experiments(experiments: str | Sequence[str]) -> list[str]:
    """Experiment names from ``A,B,C`` or a list; at least one, no repeats."""
    names = experiments.split(",") if isinstance(experiments, str) else list(experiments)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise ReportError("--experiments needs at least one experiment name (A,B,C)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ReportError(f"--experiments names {', '.join(repeated)} more than once")
    return names


def _cells(report: Report, metric: str) -> pd.DataFrame:
    """One row per model of one experiment: its label, keys, n, mean and std of ``metric``."""
    stem = "test_acc" if metric == DEFAULT_METRIC else metric_column(metric)
    keys = list(report.group_by)
    table = report.table
    return pd.DataFrame(
        {
            "label": [row_label([r[k] for k in keys]) for _, r in table.iterrows()],
            **{k: table[k].astype(str) for k in keys},
            "n": table["n"].astype(int),
            "mean": table[f"{stem}_mean"].astype(float),
            "std": table[f"{stem}_std"].astype(float),
            "val": table["val_acc_best_mean"].astype(float),
            "val_loss": table["val_loss_mean"].astype(float),
            "params": table["params"].astype(float),
        }
    )


def chosen_on_validation(cells: pd.DataFrame) -> str | None:
    """The label validation alone chooses among ``cells`` (indexed by label): the highest mean
    best validation accuracy; ties (common with a few dozen validation series: one series is
    2-12 points) to the lower mean validation loss, then fewer parameters, then the label; None
    without any. A run without a validation loss sorts after one with it."""
    known = cells[cells["val"].notna()]
    if known.empty:
        return None
    loss = known["val_loss"].fillna(math.inf)
    order = sorted(
        known.index, key=lambda m: (-known.at[m, "val"], loss[m], known.at[m, "params"], m)
    )
    return order[0]


def build_datasets_table(
    client_or_uri: MlflowClient | str,
    experiments: str | Sequence[str],
    *args: Any,
    posthoc: str = "nemenyi",
    alpha: float = ALPHA,
    **selection: Any,
) -> DatasetsReport:
    """The models x datasets table of ``metric`` (higher is better), ranked across datasets.

    ``args`` and ``selection`` are ``build_table``'s selection options, positionally or by name
    (``sweep_id``, ``filter_string``, ``group_by``, ``latest_sweep``, ``stale_after``,
    ``metric``; see ``seqbench.report.selection.Selection``). They apply to every experiment;
    ``latest_sweep`` takes each experiment's own latest sweep. Raises ``ReportError`` as
    ``build_table`` does for any experiment (unknown, or no finished run)."""
    client = open_client(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    names = parse_experiments(experiments)
    options = Selection(*args, **selection)
    metric = options.metric
    reports = [build_table(client, name, **options.as_kwargs()) for name in names]
    keys = reports[0].group_by
    cells = {
        name: _cells(report, metric).set_index("label")
        for name, report in zip(names, reports, strict=True)
    }
    labels = list(dict.fromkeys(label for c in cells.values() for label in c.index))
    key_values = pd.concat([c[list(keys)] for c in cells.values()])
    key_values = key_values[~key_values.index.duplicated()].loc[labels]
    scores = pd.DataFrame({name: cells[name]["mean"] for name in names}).reindex(labels)
    ranking = rank_models(scores, posthoc, alpha)

    order = sorted(
        labels, key=lambda m: (pd.isna(ranking.average_rank[m]), ranking.average_rank[m])
    )
    table = key_values.loc[order].reset_index(drop=True)
    for name in names:
        cell = cells[name].reindex(order)
        table[f"{name}_n"] = cell["n"].fillna(0).astype(int).to_numpy()
        table[f"{name}_mean"] = cell["mean"].to_numpy()
        table[f"{name}_std"] = cell["std"].to_numpy()
        ranks = ranking.ranks[name] if name in ranking.used else pd.Series(dtype=float)
        table[f"{name}_rank"] = ranks.reindex(order).to_numpy()
        chosen = chosen_on_validation(cells[name])
        table[f"{name}_chosen"] = [m == chosen for m in order]
    table["average_rank"] = ranking.average_rank.reindex(order).to_numpy()
    ranking.scores = ranking.scores.loc[order]
    return DatasetsReport(
        experiments=names,
        reports=reports,
        group_by=keys,
        metric=metric,
        table=table,
        ranking=ranking,
        tracking_uri=str(client.tracking_uri),
        sweep_id=options.sweep_id,
        filter_string=options.filter_string or None,
    )


def default_name(experiments: Sequence[str]) -> str:
    """The output folder's name: the experiments joined, or a digest when that gets long."""
    joined = "+".join(experiments)
    if len(joined) <= 80:
        return joined
    digest = hashlib.sha1(joined.encode()).hexdigest()[:8]
    return f"{len(experiments)}-datasets-{digest}"
