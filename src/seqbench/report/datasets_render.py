"""Rendering a ``DatasetsReport``: the Markdown document and the LaTeX table of models x
datasets (the CSV is ``DatasetsReport.table`` itself)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from seqbench.report.core import DEFAULT_METRIC
from seqbench.report.datasets import DatasetsReport
from seqbench.report.ranking import POSTHOC_NAMES, Ranking
from seqbench.report.reference import DatasetReference
from seqbench.report.render import _p, _pct, booktabs, latex_escape, not_included

MISSING = "–"  # a model with no finished run on a dataset
CHOSEN = "†"  # the model chosen per dataset on validation, never on test


def _value(x: float, percent: bool) -> str:
    return _pct(x) if percent else ("" if pd.isna(x) else f"{x:.4f}")


def _typical_n(report: DatasetsReport) -> int:
    counts = [report.table[f"{e}_n"] for e in report.experiments]
    present = pd.concat(counts)
    present = present[present > 0]
    return int(present.mode().iloc[0]) if len(present) else 0


def _rows(
    report: DatasetsReport,
    reference: Sequence[DatasetReference],
    pm: str,
    bold: Callable[[str], str],
    text: Callable[[str], str],
    chosen: str = CHOSEN,
) -> tuple[list[list[str]], int]:
    """Display cells: one row per model (best mean per dataset in ``bold``), then the published
    rows; returns the rows and how many are measured."""
    percent = report.metric == DEFAULT_METRIC
    table, typical = report.table, _typical_n(report)
    rows = []
    for _, r in table.iterrows():
        cells = [text(str(r[k])) for k in report.group_by]
        for name in report.experiments:
            mean, std, n = r[f"{name}_mean"], r[f"{name}_std"], int(r[f"{name}_n"])
            if n == 0:
                cells.append(MISSING)
                continue
            cell = _value(mean, percent) + ("" if pd.isna(std) else f" {pm} {_value(std, percent)}")
            if n != typical:
                cell += f" (n={n})"
            if r[f"{name}_chosen"]:
                cell += f" {chosen}"
            cells.append(bold(cell) if mean == table[f"{name}_mean"].max() else cell)
        rank = r["average_rank"]
        cells.append("" if pd.isna(rank) else f"{rank:.2f}")
        rows.append(cells)
    for ref in reference:
        name = f"{ref.name} (published" + (f", cf. {ref.arch})" if ref.arch else ")")
        cells = [text(name)] + [""] * (len(report.group_by) - 1)
        cells += [
            _value(ref.test_acc[e], True) if e in ref.test_acc else "" for e in report.experiments
        ]
        rows.append([*cells, ""])
    return rows, len(table)


def shown(report: DatasetsReport, reference: Sequence[DatasetReference]) -> list[DatasetReference]:
    """The published rows with a figure for at least one of the table's datasets."""
    return [ref for ref in reference if set(ref.test_acc) & set(report.experiments)]


def _frame(
    report: DatasetsReport, rows: list[list[str]], text: Callable[[str], str]
) -> tuple[pd.DataFrame, list[str]]:
    headers = [*report.group_by, *report.experiments, "avg rank"]
    frame = pd.DataFrame(rows, columns=[text(h) for h in headers])
    align = ["left"] * len(report.group_by) + ["right"] * (len(report.experiments) + 1)
    return frame, align


def reading_note(report: DatasetsReport, published: bool) -> list[str]:
    """How to read the table, in plain sentences (Markdown and LaTeX)."""
    ranking = report.ranking
    unit = "test accuracy (%)" if report.metric == DEFAULT_METRIC else report.metric
    n = _typical_n(report)
    note = [
        f"Cells: mean ± sample std (ddof=1) of {unit} over a model's runs on that dataset "
        f"(n = {n} runs per cell unless marked), bold: the best measured mean per dataset (a "
        f"choice made on test data), {CHOSEN}: the model validation alone chooses (highest mean "
        "best validation accuracy, the last epoch's for a fixed schedule; ties: lower mean "
        "validation loss, then fewer parameters), the figure to quote as the "
        f"dataset's best, {MISSING}: no finished run.",
        f"avg rank: a model's rank on each dataset (1 = best, ties share the average rank), "
        f"averaged over the {len(ranking.used)} dataset{'s' * (len(ranking.used) != 1)} where "
        "every model has runs.",
    ]
    if published:
        note.append(
            "Rows marked published are figures quoted from their source under other protocols; "
            "they are not runs and are not ranked."
        )
    return note


def _friedman_line(ranking: Ranking) -> list[str]:
    if pd.isna(ranking.friedman_p):
        return []
    verdict = (
        "the models' ranks differ across datasets more than chance would make them"
        if ranking.friedman_p < ranking.alpha
        else "no evidence that the models' ranks differ, so by the usual protocol (Demšar 2006) "
        "no pairwise difference below counts either"
    )
    return [
        f"Friedman test over {len(ranking.used)} datasets and {len(ranking.scores)} models: "
        f"chi² = {ranking.friedman_statistic:.3f}, p = {_p(ranking.friedman_p)} ({verdict})."
    ]


def tests_section(ranking: Ranking) -> list[str]:
    """Friedman's test, the pairwise p-values as a matrix, and the notes on what was not run."""
    lines = ["", "## Are the differences real?", ""]
    lines += _friedman_line(ranking)
    if ranking.posthoc_p is not None:
        p = ranking.posthoc_p.map(_p)
        for label in p.index:
            p.loc[label, label] = ""
        lines += [
            "",
            f"Pairwise {POSTHOC_NAMES[ranking.posthoc]} tests (p-values, corrected for all "
            f"pairs; p < {ranking.alpha:g}: the pair's ranks differ):",
            "",
            p.reset_index(names="").to_markdown(index=False, disable_numparse=True),
        ]
    if ranking.notes:
        lines += ["", *(f"- {note}" for note in ranking.notes)]
    return lines


def render_datasets_markdown(
    report: DatasetsReport, reference: Sequence[DatasetReference] = ()
) -> str:
    """The printed document: heading, table, how to read it, the tests, sources, runs left out."""
    reference = shown(report, reference)
    rows, _ = _rows(report, reference, "±", lambda s: f"**{s}**", str)
    frame, align = _frame(report, rows, str)
    n_runs = sum(len(r.runs) for r in report.reports)
    lines = [
        f"# {report.metric} by {', '.join(report.group_by)} across {len(report.experiments)} "
        "datasets",
        "",
        f"{n_runs} finished runs of {report.selection} ({report.tracking_uri}).",
        "",
        frame.to_markdown(index=False, disable_numparse=True, colalign=align),
        "",
        " ".join(reading_note(report, bool(reference))),
    ]
    lines += tests_section(report.ranking)
    reference = shown(report, reference)
    if reference:
        lines += ["", "## Published figures", ""]
        lines += [
            f"- {ref.name}: {ref.source}"
            + (f" ({ref.data})" if ref.data else "")
            + "."
            + (f" {ref.note}" if ref.note else "")
            for ref in reference
        ]
    excluded = [(f"`{r.experiment}`: ", e) for r in report.reports for e in r.excluded]
    lines += not_included(excluded, sum(r.pruned for r in report.reports))
    return "\n".join(lines) + "\n"


def render_datasets_latex(
    report: DatasetsReport, reference: Sequence[DatasetReference] = ()
) -> str:
    """A booktabs ``tabular`` of the table; published rows below a ``\\midrule``; the notes and
    the tests' results as comment lines above it."""
    reference = shown(report, reference)
    bold = lambda s: rf"\textbf{{{s}}}"  # noqa: E731
    rows, measured = _rows(report, reference, r"$\pm$", bold, latex_escape, r"$^\dagger$")
    frame, align = _frame(report, rows, latex_escape)
    body = booktabs(frame, align, measured if reference else None)
    selection = " ".join(report.selection.split())
    comments = [f"seqbench-report: {selection}; needs \\usepackage{{booktabs}}"]
    comments += reading_note(report, bool(reference)) + _friedman_line(report.ranking)
    comments += report.ranking.notes
    return "\n".join([*(f"% {c}" for c in comments), *body]) + "\n"
