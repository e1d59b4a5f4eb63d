"""Which runs a report reads: the store, the experiment, the sweep and the user's MLflow filter.
Summary runs written by ``seqbench-report`` itself are never selected."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from seqbench.config.access import TrackingUnreachable, check_reachable
from seqbench.config.store import redact_uri, sqlite_path
from seqbench.report.core import DEFAULT_METRIC, REPORT_KIND, REPORT_KIND_TAG, ReportError
from seqbench.run.heartbeat import DEFAULT_STALE_AFTER


@dataclass(frozen=True)
class Selection:
    """The options that pick and group a report's runs, as ``build_table`` takes them (in its
    order): built once from the command line or a caller's arguments and passed on unchanged,
    so the single-experiment and cross-dataset reports read runs by the same rules."""

    sweep_id: str | None = None
    filter_string: str | None = None
    group_by: str | Sequence[str] | None = None
    latest_sweep: bool = False
    stale_after: float = DEFAULT_STALE_AFTER
    metric: str = DEFAULT_METRIC
    include_pruned: bool = False  # runs Optuna's pruner stopped: counted only, unless True

    @classmethod
    def from_namespace(cls, args: Any) -> Selection:
        """The options from an object with one attribute per field (parsed ``argparse`` args)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def as_kwargs(self) -> dict[str, Any]:
        """The options as ``build_table`` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def open_client(tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri``; refuses a missing SQLite file rather than creating an empty
    store, and a server that does not answer or rejects our credentials (one line, no retries)."""
    try:
        check_reachable(tracking_uri)
    except TrackingUnreachable as exc:
        raise ReportError(str(exc)) from None
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ReportError(
            f"no MLflow store at {path} (tracking URI {redact_uri(tracking_uri)}); train something first, "
            "or pass --tracking-uri / set MLFLOW_TRACKING_URI"
        )
    return MlflowClient(tracking_uri)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of a live experiment, or a ``ReportError`` listing the ones that exist."""
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        state = "is deleted" if exp is not None else "does not exist"
        raise ReportError(
            f"experiment {name!r} {state} at {redact_uri(str(client.tracking_uri))}; "
            f"existing experiments: {', '.join(repr(n) for n in names) or '(none)'}"
        )
    return exp.experiment_id


def search(
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


def is_report_run(run: Run) -> bool:
    return run.data.tags.get(REPORT_KIND_TAG) == REPORT_KIND


def latest_sweep_id(
    client: MlflowClient, experiment_id: str, filter_string: str | None = None
) -> str:
    """``sweep_id`` tag of the most recently started training run that has one (matching the filter).

    Done client-side: an MLflow ``!=``/``LIKE`` tag filter silently drops runs without the tag on
    some stores and not others."""
    for run in search(client, experiment_id, filter_string or "", ["attributes.start_time DESC"]):
        sweep = run.data.tags.get("sweep_id")
        if sweep and not is_report_run(run):
            return sweep
    raise ReportError(
        "no run in this experiment has a sweep_id tag (runs from `seqbench-train -m ...` have one); "
        "drop --latest-sweep to report every run"
    )


def combined_filter(sweep_id: str | None, filter_string: str | None) -> str:
    """The sweep clause ANDed with the user's filter (either may be absent)."""
    clauses = []
    if sweep_id:
        if "'" in sweep_id:
            raise ReportError(f"sweep id {sweep_id!r} must not contain a single quote")
        clauses.append(f"tags.sweep_id = '{sweep_id}'")
    if filter_string and filter_string.strip():
        clauses.append(filter_string.strip())
    return " and ".join(clauses)


def training_runs(client: MlflowClient, experiment_id: str, selection: str) -> Iterator[Run]:
    """The selected runs in start order, without this tool's summary runs."""
    for run in search(client, experiment_id, selection, ["attributes.start_time ASC"]):
        if not is_report_run(run):
            yield run
