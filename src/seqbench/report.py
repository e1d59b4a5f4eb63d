"""``seqbench-report``: the paper-style comparison table, built from an experiment's MLflow runs.

    seqbench-report --experiment imdb --latest-sweep --reference conf/reference/published.yaml
    seqbench-report --experiment imdb --sweep-id 2026-01-02_03-04-05 --group-by model.arch,data.padding
    seqbench-report --experiment synthetic --filter "params.trainer.max_epochs = '10'"

Runs are read only through MLflow's API, so any tracking URI works (SQLite file, server).
The Markdown document goes to stdout (pipeable); progress and errors go to stderr. Files written
to ``--out``: ``table.md``, ``table.csv``, ``table.tex``, ``curves.png`` and ``runs.csv`` (one row
per included run, for auditing). The same files are logged to a *summary run* in the experiment
(run name ``report-<sweep id or all>``, tag ``seqbench.kind=report``), which later reports skip.

Conventions, stated once because the files outlive this code:

- Accuracies in the DataFrame and in the CSV files are fractions in [0, 1], as logged;
  Markdown and LaTeX show percentages.
- ``test_acc_std`` is the sample standard deviation (ddof=1) over the group's runs. For a single
  run it is blank (NaN in the DataFrame, an empty CSV cell), not 0: one run says nothing about spread.
- ``val_acc_best_mean``: mean over runs of ``val/acc_best``. ``params``: mean of
  ``model/trainable_params`` (identical across seeds). ``epochs``: mean over runs of the number of
  ``val/acc`` points (``trainer.max_epochs`` when a run has no history); it can be fractional when
  early stopping ends seeds at different epochs. ``sec_per_epoch``: mean over runs of each run's
  mean ``perf/epoch_seconds`` (training steps only, validation excluded).
- Published reference rows (``--reference``) appear in Markdown and LaTeX only, marked
  "published"; ``table.csv`` holds measured rows only, so its columns are exactly the grouping
  keys plus ``n, test_acc_mean, test_acc_std, val_acc_best_mean, params, epochs, sec_per_epoch``.
- Runs that are not FINISHED, lack ``test/acc`` or lack a grouping key are never dropped silently:
  they are listed under "Not included" with their status and reason.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from seqbench import registry
from seqbench.heartbeat import DEFAULT_STALE_AFTER, liveness
from seqbench.paths import config_dir, project_root

REPORT_KIND_TAG = "seqbench.kind"
REPORT_KIND = "report"
DEFAULT_GROUP_BY: tuple[str, ...] = ("model",)
DEFAULT_METRIC = "test/acc"
COLUMNS: tuple[str, ...] = (
    "n",
    "test_acc_mean",
    "test_acc_std",
    "val_acc_best_mean",
    "params",
    "epochs",
    "sec_per_epoch",
)
OUTPUT_FILES = ("table.md", "table.csv", "table.tex", "curves.png", "runs.csv")
MAX_TAG_VALUE = 8000  # MLflow's limit on a tag value (the run description is a tag)

_NOT_FINISHED = {
    "FAILED": "the run raised an error",
    "KILLED": "the run was interrupted",
    "RUNNING": "not finished (still training, or its process died without a final status)",
    "SCHEDULED": "scheduled but never started",
}


class ReportError(Exception):
    """A problem the user can fix (unknown experiment, nothing to report, bad reference file);
    the CLI prints it as one message and exits non-zero instead of showing a traceback."""


@dataclass(frozen=True)
class Excluded:
    """A selected run left out of the table, and why (so nothing disappears silently)."""

    run_id: str
    run_name: str
    status: str
    reason: str


@dataclass(frozen=True)
class Reference:
    """A published figure shown beside measured rows; never mixed into the statistics."""

    name: str
    arch: str | None
    test_acc: float  # fraction in [0, 1]
    source: str


@dataclass
class Report:
    """Everything a table is made of: the grouped table, the per-run rows behind it, the runs left
    out, and the validation-accuracy histories for the curves figure."""

    experiment: str
    experiment_id: str
    tracking_uri: str
    sweep_id: str | None
    filter_string: str | None
    group_by: tuple[str, ...]
    table: pd.DataFrame  # one row per group: group_by columns + COLUMNS
    runs: pd.DataFrame  # one row per included run
    excluded: list[Excluded] = field(default_factory=list)
    curves: dict[str, list[np.ndarray]] = field(
        default_factory=dict
    )  # group label -> val/acc per run
    metric: str = DEFAULT_METRIC  # --metric: another metric adds <name>_mean/_std and ranks by it

    @property
    def selection(self) -> str:
        """Human-readable description of which runs were asked for."""
        parts = [f"experiment `{self.experiment}`"]
        if self.sweep_id:
            parts.append(f"sweep `{self.sweep_id}`")
        if self.filter_string:
            parts.append(f"filter `{self.filter_string}`")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Reading runs


def default_tracking_uri() -> str:
    """Same default as ``seqbench-train``: ``$MLFLOW_TRACKING_URI``, else the project's SQLite store."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{project_root()}/outputs/mlflow/mlflow.db"
    )


def open_client(tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri``; refuses a missing SQLite file rather than creating an empty store."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
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


def _label(values: Sequence[str]) -> str:
    return " / ".join(str(v) for v in values)


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
) -> Report:
    """Select an experiment's training runs and aggregate them per group (``model`` tag by default).

    ``sweep_id`` restricts to one multirun (``tags.sweep_id``); ``latest_sweep`` picks the newest
    sweep instead; ``filter_string`` is any MLflow search filter, ANDed with the sweep clause.
    ``metric`` other than ``test/acc`` (e.g. ``test/f1``) adds its mean and std per group as
    ``<metric>_mean``/``_std`` (``/`` as ``_``) and ranks the rows by it, best (highest) first.
    Summary runs made by this tool are skipped; a RUNNING run whose process is gone, or whose
    heartbeat is older than ``stale_after`` seconds, is listed as stale. Raises ``ReportError``
    when the experiment is
    unknown or no selected run finished with a ``test/acc``."""
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
    table = table[[*keys, *COLUMNS]]
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
    )


def metric_column(metric: str) -> str:
    """Table column stem of a metric: ``test/f1`` -> ``test_f1``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


# ---------------------------------------------------------------------------------------------
# Published reference figures


def resolve_reference_path(path: str | Path | None) -> Path:
    """``None`` means the bundled ``conf/reference/published.yaml``; a relative path is tried
    against the working directory, then the project root (so ``make`` and any folder both work)."""
    if path is None:
        return config_dir() / "reference" / "published.yaml"
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    rooted = project_root() / candidate
    return rooted if rooted.exists() else candidate


def load_reference(path: str | Path) -> list[Reference]:
    """Published figures from a YAML list of ``{name, arch, test_acc, source}``; ``test_acc`` is a
    fraction in [0, 1], like MLflow's ``test/acc`` (a percentage is rejected, not guessed)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"reference file {path} does not exist")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"reference file {path} is not valid YAML: {exc}") from exc
    if not isinstance(entries, list):
        raise ReportError(
            f"reference file {path} must be a YAML list of {{name, arch, test_acc, source}}"
        )
    fields = {"name", "arch", "test_acc", "source"}
    rows = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i + 1}"
        if not isinstance(entry, dict) or set(entry) != fields:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ReportError(f"{where}: expected exactly the keys {sorted(fields)}, got {got}")
        acc = entry["test_acc"]
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
            hint = (
                f" (looks like a percentage; write {acc / 100:.4f})"
                if isinstance(acc, int | float)
                else ""
            )
            raise ReportError(f"{where}: test_acc must be a fraction in [0, 1], got {acc!r}{hint}")
        arch = entry["arch"]
        rows.append(
            Reference(
                str(entry["name"]),
                None if arch is None else str(arch),
                float(acc),
                str(entry["source"]),
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Rendering


def _pct(x: float, digits: int = 2) -> str:
    return "" if pd.isna(x) else f"{100 * x:.{digits}f}"


def _number(x: float, fmt: str) -> str:
    return "" if pd.isna(x) else format(x, fmt)


HEADERS = {
    "n": "n",
    "test_acc": "test acc (%)",
    "val_acc_best_mean": "best val acc (%)",
    "params": "params",
    "epochs": "epochs",
    "sec_per_epoch": "s/epoch",
    "source": "source",
}


def _display_rows(
    report: Report, reference: Sequence[Reference], pm: str
) -> tuple[list[dict], int]:
    """String cells for Markdown/LaTeX (percentages); returns the rows and how many are measured."""
    keys = report.group_by
    rows = []
    for _, r in report.table.iterrows():
        acc = _pct(r["test_acc_mean"])
        if not pd.isna(r["test_acc_std"]):
            acc += f" {pm} {_pct(r['test_acc_std'])}"
        extra = {}
        if report.metric != DEFAULT_METRIC:
            name = metric_column(report.metric)
            extra["metric"] = _number(r[f"{name}_mean"], ".4f")
            if not pd.isna(r[f"{name}_std"]):
                extra["metric"] += f" {pm} {_number(r[f'{name}_std'], '.4f')}"
        rows.append(
            {
                **{k: str(r[k]) for k in keys},
                "n": str(int(r["n"])),
                "test_acc": acc,
                **extra,
                "val_acc_best_mean": _pct(r["val_acc_best_mean"]),
                "params": _number(r["params"], ",.0f"),
                "epochs": _number(r["epochs"], "g"),
                "sec_per_epoch": _number(r["sec_per_epoch"], ".2f"),
                "source": "measured",
            }
        )
    measured = len(rows)
    for ref in reference:
        name = f"{ref.name} (published" + (f", cf. {ref.arch})" if ref.arch else ")")
        rows.append(
            {
                **{k: (name if i == 0 else "") for i, k in enumerate(keys)},
                "n": "",
                "test_acc": _pct(ref.test_acc),
                "val_acc_best_mean": "",
                "params": "",
                "epochs": "",
                "sec_per_epoch": "",
                "source": ref.source,
            }
        )
    return rows, measured


def _display_frame(
    report: Report, rows: list[dict], with_source: bool
) -> tuple[pd.DataFrame, list[str]]:
    """Display columns (the source column only when published rows need it) and their alignment."""
    headers = {k: v for k, v in HEADERS.items() if with_source or k != "source"}
    if report.metric != DEFAULT_METRIC:  # the ranking metric right after test accuracy
        headers = dict(list(headers.items())[:2] + [("metric", report.metric)])
        headers |= {k: v for k, v in HEADERS.items() if with_source or k != "source"}
    frame = pd.DataFrame(rows, columns=[*report.group_by, *headers]).rename(columns=headers)
    measured = len(headers) - with_source
    align = ["left"] * len(report.group_by) + ["right"] * measured + ["left"] * with_source
    return frame, align


def render_table_markdown(report: Report, reference: Sequence[Reference] = ()) -> str:
    """Just the Markdown table (pipe format, via tabulate)."""
    rows, _ = _display_rows(report, reference, "±")
    frame, align = _display_frame(report, rows, bool(reference))
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def render_markdown(report: Report, reference: Sequence[Reference] = ()) -> str:
    """The printed document: heading, table, how to read it, and every run left out."""
    n_runs = len(report.runs)
    lines = [
        f"# {report.experiment}: test accuracy by {', '.join(report.group_by)}"
        + (f", ranked by {report.metric}" if report.metric != DEFAULT_METRIC else ""),
        "",
        f"{n_runs} finished run{'s' * (n_runs != 1)} of {report.selection} ({report.tracking_uri}).",
        "",
        render_table_markdown(report, reference),
        "",
        "Test accuracy: mean ± sample std (ddof=1) over runs, std omitted for a single run; "
        "best val acc: mean of each run's best validation accuracy; s/epoch: training steps only. "
        + (
            "Rows marked *published* are figures quoted from their source, not runs. "
            if reference
            else ""
        ),
    ]
    lines[-1] = lines[-1].rstrip()
    lines += ["", f"## Not included ({len(report.excluded)})", ""]
    if report.excluded:
        lines += [f"- `{e.run_name}` ({e.run_id}): {e.status}, {e.reason}" for e in report.excluded]
    else:
        lines.append("Every selected run is in the table.")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (run names, sources, param values)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def render_latex(report: Report, reference: Sequence[Reference] = ()) -> str:
    """A booktabs ``tabular`` for ``\\input`` into a paper; published rows below a ``\\midrule``."""
    rows, measured = _display_rows(report, reference, "\x00")
    escaped = [
        {k: latex_escape(v).replace("\x00", r"$\pm$") for k, v in row.items()} for row in rows
    ]
    frame, align = _display_frame(report, escaped, bool(reference))
    frame.columns = [latex_escape(c) for c in frame.columns]
    column_format = "".join(a[0] for a in align)
    body = frame.to_latex(index=False, escape=False, column_format=column_format).splitlines()
    if reference:  # separate published figures from measured ones
        first_row = body.index(r"\midrule") + 1
        body.insert(first_row + measured, r"\midrule")
    selection = " ".join(report.selection.split())  # one comment line, whatever the filter
    header = f"% seqbench-report: {selection}; needs \\usepackage{{booktabs}}"
    return "\n".join([header, *body]) + "\n"


def plot_curves(curves: dict[str, list[np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Validation accuracy per epoch: mean over a group's runs with a ±1 std band (ddof=1).

    Uses ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot global state), so it is safe
    in headless jobs and never changes the caller's backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, histories in curves.items():
        length = max(len(h) for h in histories)
        grid = np.full((len(histories), length), np.nan)
        for i, h in enumerate(histories):
            grid[i, : len(h)] = h
        count = np.sum(~np.isnan(grid), axis=0)
        mean = np.nanmean(grid, axis=0)
        deviation = np.where(count > 1, np.nansum((grid - mean) ** 2, axis=0), 0.0)
        std = np.sqrt(deviation / np.maximum(count - 1, 1))
        x = np.arange(1, length + 1)
        (line,) = ax.plot(
            x,
            100 * mean,
            marker="o" if length <= 30 else None,
            ms=3,
            label=f"{label} (n={len(histories)})",
        )
        ax.fill_between(
            x, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.2, lw=0
        )
    if not curves:
        ax.text(
            0.5,
            0.5,
            "no val/acc history in the selected runs",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        ax.legend(fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_outputs(
    report: Report, out_dir: str | Path, reference: Sequence[Reference] = ()
) -> dict[str, Path]:
    """Write table.md/csv/tex, curves.png and runs.csv; returns their paths by file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in OUTPUT_FILES}
    files["table.md"].write_text(render_markdown(report, reference), encoding="utf-8")
    report.table.to_csv(files["table.csv"], index=False)
    files["table.tex"].write_text(render_latex(report, reference), encoding="utf-8")
    plot_curves(
        report.curves,
        files["curves.png"],
        f"{report.experiment}: validation accuracy by {', '.join(report.group_by)}",
    )
    report.runs.to_csv(files["runs.csv"], index=False)
    return files


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "_"


def default_out_dir(experiment: str, sweep_id: str | None = None) -> Path:
    """``outputs/reports/<experiment>[/<sweep id>]`` under the project root (never the cwd)."""
    out = project_root() / "outputs" / "reports" / _safe_name(experiment)
    return out / _safe_name(sweep_id) if sweep_id else out


def log_summary_run(
    client: MlflowClient, report: Report, files: dict[str, Path], markdown: str
) -> str:
    """Record the report as its own run (tag ``seqbench.kind=report``) so the table, CSV, LaTeX
    and figure can be browsed in the MLflow UI; the Markdown becomes the run's description."""
    if len(markdown) > MAX_TAG_VALUE:
        markdown = markdown[: MAX_TAG_VALUE - 40] + "\n\n… (truncated; see table.md)\n"
    tags = {
        REPORT_KIND_TAG: REPORT_KIND,
        "mlflow.source.name": "seqbench-report",
        "mlflow.note.content": markdown,
        "seqbench.report.group_by": ",".join(report.group_by),
    }
    # Not the plain `sweep_id` tag: that would make this run the "latest sweep" run.
    if report.sweep_id:
        tags["seqbench.report.sweep_id"] = report.sweep_id
    if report.filter_string:
        tags["seqbench.report.filter"] = report.filter_string[:MAX_TAG_VALUE]
    run_id = client.create_run(
        report.experiment_id, run_name=f"report-{report.sweep_id or 'all'}", tags=tags
    ).info.run_id
    try:
        client.log_metric(run_id, "report/runs_included", len(report.runs))
        client.log_metric(run_id, "report/runs_excluded", len(report.excluded))
        for path in files.values():
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="seqbench-report",
        description="Paper-style comparison table (Markdown to stdout; CSV, LaTeX and a curves "
        "figure to --out) from an experiment's MLflow runs, logged as a summary run too.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (e.g. imdb)")
    sweep = parser.add_mutually_exclusive_group()
    sweep.add_argument("--sweep-id", help="only runs of this multirun (tag sweep_id)")
    sweep.add_argument(
        "--latest-sweep",
        action="store_true",
        help="only runs of the most recently started sweep (matching --filter)",
    )
    parser.add_argument(
        "--filter",
        dest="filter_string",
        help="extra MLflow search filter, e.g. \"params.data.padding = 'pre'\"",
    )
    parser.add_argument(
        "--group-by",
        default=",".join(DEFAULT_GROUP_BY),
        help="comma-separated keys: params (model.arch, data.padding) or tags (model); "
        "prefix params./tags. to disambiguate (default: model)",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="rank the groups by this logged metric, e.g. test/f1 (macro-F1 for many classes), "
        "shown beside test accuracy (default: test/acc)",
    )
    parser.add_argument(
        "--reference",
        nargs="?",
        const="",
        default=None,
        metavar="YAML",
        help="add published figures; without a value, the bundled conf/reference/published.yaml",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<project>/outputs/mlflow/mlflow.db)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <project>/outputs/reports/<experiment>[/<sweep id>])",
    )
    parser.add_argument(
        "--no-summary-run", action="store_true", help="do not log the report as an MLflow run"
    )
    parser.add_argument(
        "--register",
        metavar="NAME",
        help="register the best run by validation accuracy (val/acc_best, never test) as a new "
        "version of model NAME with the alias champion",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="SECONDS",
        help="a RUNNING run on another host without a heartbeat for this long is listed as stale "
        f"(default {DEFAULT_STALE_AFTER:.0f}; on this host a run is stale once its process is gone)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 on success, 1 with a one-line message for user errors."""
    args = parse_args(argv)
    try:
        reference = (
            load_reference(resolve_reference_path(args.reference or None))
            if args.reference is not None
            else []
        )
        client = open_client(args.tracking_uri or default_tracking_uri())
        report = build_table(
            client,
            args.experiment,
            sweep_id=args.sweep_id,
            filter_string=args.filter_string,
            group_by=args.group_by,
            latest_sweep=args.latest_sweep,
            stale_after=args.stale_after,
            metric=args.metric,
        )
        out = args.out or default_out_dir(report.experiment, report.sweep_id)
        files = write_outputs(report, out, reference)
        markdown = files["table.md"].read_text(encoding="utf-8")
        print(markdown, end="", flush=True)
        print(f"seqbench-report: wrote {', '.join(files)} to {out}", file=sys.stderr)
        if not args.no_summary_run:
            run_id = log_summary_run(client, report, files, markdown)
            print(
                f"seqbench-report: summary run report-{report.sweep_id or 'all'} ({run_id}) in "
                f"experiment {report.experiment!r}",
                file=sys.stderr,
            )
        registry.after_report(client, report, args.register, files["table.md"])
    except ReportError as exc:
        print(f"seqbench-report: error: {exc}", file=sys.stderr)
        return 1
    except MlflowException as exc:
        print(f"seqbench-report: error: MLflow: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
