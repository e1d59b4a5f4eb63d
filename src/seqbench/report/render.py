"""Rendering a ``Report``: the Markdown document, the LaTeX table (CSV is the DataFrame itself)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from seqbench.report.aggregation import metric_column
from seqbench.report.core import DEFAULT_METRIC, Excluded, Reference, Report, row_label


def _pct(x: float, digits: int = 2) -> str:
    return "" if pd.isna(x) else f"{100 * x:.{digits}f}"


def _number(x: float, fmt: str) -> str:
    return "" if pd.isna(x) else format(x, fmt)


def _mean_count(x: float) -> str:
    """A mean of whole numbers (epochs over runs): ``3``, ``3.33``, ``12.5``."""
    return "" if pd.isna(x) else f"{x:.2f}".rstrip("0").rstrip(".")


HEADERS = {
    "n": "n",
    "test_acc": "test acc (%)",
    "test_acc_ci": "95% CI (%)",
    "val_acc_best_mean": "best val acc (%)",
    "params": "params",
    "epochs": "epochs",
    "sec_per_epoch": "s/epoch",
    "source": "source",
    "data": "data",
}


def _p(p: float) -> str:
    return "" if pd.isna(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _signed_pp(x: float) -> str:
    return "" if pd.isna(x) else f"{100 * x:+.2f}"


def _interval(low: float, high: float, fmt=_pct) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"[{fmt(low)}, {fmt(high)}]"


def _has_bootstrap(report: Report) -> bool:
    return bool(report.table["diff_boot_low"].notna().any())


def _comparison_headers(report: Report) -> dict[str, str]:
    """Columns added by ``--baseline``: difference, Welch p, and the bootstrap interval if any."""
    if report.baseline is None:
        return {}
    headers = {"diff": f"diff vs {report.baseline} (pp)", "p_value": "p (Welch)"}
    if _has_bootstrap(report):
        headers["diff_boot"] = "bootstrap 95% CI of diff (pp)"
    return headers


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
                "test_acc_ci": _interval(r["test_acc_ci_low"], r["test_acc_ci_high"]),
                **extra,
                "diff": (
                    "baseline"
                    if report.baseline is not None
                    and row_label([r[k] for k in keys]) == report.baseline
                    else _signed_pp(r["diff_vs_baseline"])
                ),
                "p_value": _p(r["p_value"]),
                "diff_boot": _interval(r["diff_boot_low"], r["diff_boot_high"], _signed_pp),
                "val_acc_best_mean": _pct(r["val_acc_best_mean"]),
                "params": _number(r["params"], ",.0f"),
                "epochs": _mean_count(r["epochs"]),
                "sec_per_epoch": _number(r["sec_per_epoch"], ".2f"),
                "source": "measured",
                "data": "",
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
                "test_acc_ci": "",
                "diff": "",
                "p_value": "",
                "diff_boot": "",
                "val_acc_best_mean": "",
                "params": "",
                "epochs": "",
                "sec_per_epoch": "",
                "source": ref.source,
                "data": ref.data,
            }
        )
    return rows, measured


def _display_frame(
    report: Report, rows: list[dict], with_source: bool
) -> tuple[pd.DataFrame, list[str]]:
    """Display columns and their alignment: test accuracy and its interval, the ranking metric
    (``--metric``), the comparison with ``--baseline``, then the rest; the source and data
    columns only when published rows need them."""
    tail = ("source", "data")
    base = {k: v for k, v in HEADERS.items() if k not in tail}
    head = list(base.items())[:3]  # n, test acc, its interval
    if report.metric != DEFAULT_METRIC:  # the ranking metric right after test accuracy
        head.append(("metric", report.metric))
    headers = dict(head + list(_comparison_headers(report).items()) + list(base.items())[3:])
    if with_source:
        headers |= {k: HEADERS[k] for k in tail}
    frame = pd.DataFrame(rows, columns=[*report.group_by, *headers]).rename(columns=headers)
    measured = len(headers) - 2 * with_source
    align = ["left"] * len(report.group_by) + ["right"] * measured + ["left"] * (2 * with_source)
    return frame, align


def render_table_markdown(report: Report, reference: Sequence[Reference] = ()) -> str:
    """Just the Markdown table (pipe format, via tabulate)."""
    rows, _ = _display_rows(report, reference, "±")
    frame, align = _display_frame(report, rows, bool(reference))
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def reading_note(report: Report) -> list[str]:
    """How to read the intervals and the comparison, in plain sentences (Markdown and LaTeX)."""
    counts = sorted({int(n) for n in report.table["n"]})
    seeds = "/".join(str(n) for n in counts)
    note = [
        f"95% CI: Student-t interval of the mean test accuracy over the row's n runs "
        f"(n = {seeds} here), clipped to 0-100% (the mean cannot lie outside, so the "
        "coverage is unchanged), blank for a single run."
    ]
    if report.baseline is None:
        return note
    note += [
        f"diff vs {report.baseline}: mean test accuracy minus the baseline's, in percentage "
        "points. p (Welch): Welch's two-sided t-test over the per-seed test accuracies "
        "(unequal variances), blank where a row has one run.",
        "A difference with p >= 0.05 is not significant at the 5% level: the seeds cannot tell "
        "the rows apart, which is not evidence that they are equal. With few seeds only large "
        "differences can reach significance.",
        f"Each row is tested against {report.baseline} separately, with no correction for "
        "multiple comparisons: among k rows, about k x 0.05 can look significant by chance.",
    ]
    if _has_bootstrap(report):
        note.append(
            "bootstrap 95% CI of diff: percentile bootstrap of the difference of means "
            "(9,999 resamples, fixed seed), only where both rows have at least 5 runs."
        )
    return note


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
        "best val acc: mean of each run's best validation accuracy (the last epoch's where no "
        "checkpoint is chosen on validation); s/epoch: training steps only. "
        + (
            "Rows marked *published* are figures quoted from their source, not runs. "
            if reference
            else ""
        ),
    ]
    lines[-1] = lines[-1].rstrip()
    lines += ["", " ".join(reading_note(report))]
    lines += not_included([("", e) for e in report.excluded], report.pruned)
    return "\n".join(lines) + "\n"


def not_included(excluded: Sequence[tuple[str, Excluded]], pruned: int = 0) -> list[str]:
    """The "Not included" section: every selected run left out, and why (``prefix`` first, e.g.
    the experiment of a cross-dataset table); the ``pruned`` runs only as their number."""
    lines = ["", f"## Not included ({len(excluded) + pruned})", ""]
    if excluded:
        lines += [
            f"- {prefix}`{e.run_name}` ({e.run_id}): {e.status}, {e.reason}"
            for prefix, e in excluded
        ]
    elif not pruned:
        lines.append("Every selected run is in the table.")
    if pruned:
        lines.append(pruned_note(pruned))
    return lines


def pruned_note(pruned: int) -> str:
    """One line on the runs Optuna's pruner stopped, which a table leaves out by default."""
    return (
        f"{pruned} run{'s' * (pruned != 1)} pruned by Optuna left out (stopped early, never "
        "tested; `--include-pruned` lists them)."
    )


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


def booktabs(frame: pd.DataFrame, align: Sequence[str], rule_after: int | None) -> list[str]:
    """The lines of a booktabs ``tabular`` of ``frame`` (cells already LaTeX), with a
    ``\\midrule`` after the first ``rule_after`` body rows (measured above published ones)."""
    column_format = "".join(a[0] for a in align)
    body = frame.to_latex(index=False, escape=False, column_format=column_format).splitlines()
    if rule_after is not None:
        first_row = body.index(r"\midrule") + 1
        body.insert(first_row + rule_after, r"\midrule")
    return body


def render_latex(report: Report, reference: Sequence[Reference] = ()) -> str:
    """A booktabs ``tabular`` for ``\\input`` into a paper; published rows below a ``\\midrule``."""
    rows, measured = _display_rows(report, reference, "\x00")
    escaped = [
        {k: latex_escape(v).replace("\x00", r"$\pm$") for k, v in row.items()} for row in rows
    ]
    frame, align = _display_frame(report, escaped, bool(reference))
    frame.columns = [latex_escape(c) for c in frame.columns]
    body = booktabs(frame, align, measured if reference else None)
    selection = " ".join(report.selection.split())  # one comment line, whatever the filter
    header = f"% seqbench-report: {selection}; needs \\usepackage{{booktabs}}"
    note = [f"% {line}" for line in reading_note(report)]
    return "\n".join([header, *note, *body]) + "\n"
