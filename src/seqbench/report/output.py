"""Where a report goes: its files under ``--out`` and a summary run in the experiment."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from seqbench.config.paths import project_root
from seqbench.report.core import (
    MAX_TAG_VALUE,
    OUTPUT_FILES,
    REPORT_KIND,
    REPORT_KIND_TAG,
    Reference,
    Report,
)
from seqbench.report.datasets import DatasetsReport
from seqbench.report.datasets_render import render_datasets_latex, render_datasets_markdown
from seqbench.report.plots import plot_cd_diagram, plot_curves
from seqbench.report.ranking import POSTHOC_NAMES
from seqbench.report.reference import DatasetReference
from seqbench.report.render import render_latex, render_markdown

DATASETS_OUTPUT_FILES = ("table.md", "table.csv", "table.tex", "cd_diagram.png", "runs.csv")


def _write_tables(
    out_dir: str | Path, names: Sequence[str], markdown: str, table: pd.DataFrame, latex: str
) -> dict[str, Path]:
    """Create ``out_dir`` and write the three table files every report has (table.md/csv/tex);
    returns the paths of all ``names`` by file name, for the caller to write the rest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in names}
    files["table.md"].write_text(markdown, encoding="utf-8")
    table.to_csv(files["table.csv"], index=False)
    files["table.tex"].write_text(latex, encoding="utf-8")
    return files


def write_outputs(
    report: Report, out_dir: str | Path, reference: Sequence[Reference] = ()
) -> dict[str, Path]:
    """Write table.md/csv/tex, curves.png and runs.csv; returns their paths by file name."""
    markdown, latex = render_markdown(report, reference), render_latex(report, reference)
    files = _write_tables(out_dir, OUTPUT_FILES, markdown, report.table, latex)
    plot_curves(
        report.curves,
        files["curves.png"],
        f"{report.experiment}: validation accuracy by {', '.join(report.group_by)}",
    )
    report.runs.to_csv(files["runs.csv"], index=False)
    return files


def write_datasets_outputs(
    report: DatasetsReport, out_dir: str | Path, reference: Sequence[DatasetReference] = ()
) -> dict[str, Path]:
    """Write a cross-dataset table's table.md/csv/tex, cd_diagram.png and runs.csv (every
    included run, with its experiment); returns their paths by file name."""
    markdown = render_datasets_markdown(report, reference)
    latex = render_datasets_latex(report, reference)
    files = _write_tables(out_dir, DATASETS_OUTPUT_FILES, markdown, report.table, latex)
    ranking = report.ranking
    test = (
        f"bars: no difference by the pairwise {POSTHOC_NAMES[ranking.posthoc]} test, "
        f"alpha {ranking.alpha:g}"
        if ranking.posthoc_p is not None
        else "no pairwise test possible with so few datasets: one bar joins every model"
    )
    plot_cd_diagram(
        ranking.average_rank,
        ranking.posthoc_p,
        files["cd_diagram.png"],
        f"average rank over {len(ranking.used)} datasets ({test})",
    )
    runs = [r.runs.assign(experiment=r.experiment) for r in report.reports]
    pd.concat(runs, ignore_index=True).to_csv(files["runs.csv"], index=False)
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
        client.log_metric(run_id, "report/runs_pruned", report.pruned)
        for path in files.values():
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
