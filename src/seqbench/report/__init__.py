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
- ``val_acc_best_mean``: mean over runs of ``val/acc_best`` (the last ``val/acc`` for a fixed
  schedule). ``val_loss_mean``: mean over runs of the validation loss of the tested weights
  (the cross-dataset table's tie-break). ``params``: mean of
  ``model/trainable_params`` (identical across seeds). ``epochs``: mean over runs of the number of
  ``val/acc`` points (``trainer.max_epochs`` when a run has no history); it can be fractional when
  early stopping ends seeds at different epochs. ``sec_per_epoch``: mean over runs of each run's
  mean ``perf/epoch_seconds`` (training steps only, validation excluded).
- Published reference rows (``--reference``) appear in Markdown and LaTeX only, marked
  "published"; ``table.csv`` holds measured rows only, so its columns are exactly the grouping
  keys plus ``COLUMNS``: ``n, test_acc_mean, test_acc_std, val_acc_best_mean, val_loss_mean,
  params, epochs, sec_per_epoch``, then the statistics over seeds (``seqbench.report.statistics``):
  ``test_acc_ci_low, test_acc_ci_high`` (95% Student-t interval, blank for one run) and, with
  ``--baseline``, ``diff_vs_baseline, p_value`` (Welch, two-sided) and ``diff_boot_low,
  diff_boot_high`` (bootstrap interval of the difference, rows with >= 5 runs only).
- Runs that are not FINISHED, lack ``test/acc`` or lack a grouping key are never dropped silently:
  they are listed under "Not included" with their status and reason.

Modules: ``core`` (constants, ``Report``, ``ReportError``), ``query`` (``build_table``), which
composes ``selection`` (store, experiment, sweep, filter), ``records`` (runs -> records, stale
and excluded runs) and ``aggregation`` (per-group rows), ``statistics``, ``reference`` (published rows), ``render``
(Markdown, LaTeX), ``plots`` (curves figure, CD diagram), ``output`` (files, summary run),
``registry`` (Model Registry, UI links), ``cli``. Across datasets (``--experiments``):
``datasets`` (one ``build_table`` per experiment -> models x datasets), ``ranking`` (average
ranks, Friedman, pairwise tests) and ``datasets_render`` (Markdown, LaTeX). This package's face is small: ``build_table``,
``ReportError``, ``load_reference``, ``main`` and the constants ``COLUMNS`` and
``REPORT_KIND_TAG``; everything else is imported from its module. The face is imported on first
use (``__getattr__``), so importing ``seqbench.report.<module>`` costs only that module, and no
module of the package imports the package itself (tests/test_imports.py).
"""

from __future__ import annotations

from typing import Any

__all__ = ["COLUMNS", "REPORT_KIND_TAG", "ReportError", "build_table", "load_reference", "main"]


def __getattr__(name: str) -> Any:
    """The public names, imported when first asked for (MLflow, scipy and pandas are slow)."""
    if name in ("COLUMNS", "REPORT_KIND_TAG", "ReportError"):
        from seqbench.report import core as module
    elif name == "build_table":
        from seqbench.report import query as module
    elif name == "load_reference":
        from seqbench.report import reference as module
    elif name == "main":
        from seqbench.report import cli as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
