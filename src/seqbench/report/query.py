"""``build_table``, the report's entry point: selection (``selection``: which runs) ->
records (``records``: one per included run, the rest excluded with a reason) -> aggregation
(``aggregation``: one row per group)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from mlflow import MlflowClient

from seqbench.config.store import redact_uri
from seqbench.report.aggregation import aggregate, parse_group_by
from seqbench.report.core import DEFAULT_METRIC, Report, ReportError, row_label
from seqbench.report.records import collect
from seqbench.report.selection import (
    combined_filter,
    experiment_id,
    latest_sweep_id,
    open_client,
    training_runs,
)
from seqbench.run.heartbeat import DEFAULT_STALE_AFTER
from seqbench.run.optuna_trial import is_pruned


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
    include_pruned: bool = False,
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
    Runs that Optuna's pruner stopped (tag ``seqbench.pruned``: partial, never tested) are left
    out and only counted (``Report.pruned``), unless ``include_pruned`` lists them as the others.
    Raises ``ReportError`` when the experiment is unknown, no selected run finished with a
    ``test/acc``, or ``baseline`` names no row."""
    client = open_client(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    keys = parse_group_by(group_by)
    exp_id = experiment_id(client, experiment)
    if sweep_id and latest_sweep:
        raise ReportError("give either a sweep id or latest_sweep, not both")
    if latest_sweep:
        sweep_id = latest_sweep_id(client, exp_id, filter_string)
    selection = combined_filter(sweep_id, filter_string)
    runs = list(training_runs(client, exp_id, selection))
    pruned = [] if include_pruned else [r for r in runs if is_pruned(r.data.tags)]
    kept = [r for r in runs if not any(r is p for p in pruned)]
    records, excluded, curves = collect(client, kept, keys, metric, stale_after)
    if not records:
        detail = "".join(f"\n  {e.run_name} ({e.run_id}): {e.status}, {e.reason}" for e in excluded)
        raise ReportError(
            f"experiment {experiment!r} has no finished runs with test/acc"
            + (f" matching {selection!r}" if selection else "")
            + (f"; not included:{detail}" if excluded else "")
            + (f"; {len(pruned)} pruned by Optuna (--include-pruned lists them)" if pruned else "")
        )
    runs = pd.DataFrame.from_records(records)
    table = aggregate(runs, keys, metric, baseline)
    order = [row_label([row[k] for k in keys]) for _, row in table.iterrows()]
    return Report(
        experiment=experiment,
        experiment_id=exp_id,
        tracking_uri=redact_uri(str(client.tracking_uri)),  # printed and logged: no secret
        sweep_id=sweep_id,
        filter_string=filter_string or None,
        group_by=keys,
        table=table,
        runs=runs,
        excluded=excluded,
        curves={label: curves[label] for label in order if label in curves},
        metric=metric,
        baseline=baseline,
        pruned=len(pruned),
    )
