"""The report's vocabulary: constants, the error users see, and the ``Report`` record.

Its own module so that query, statistics, rendering and the CLI share one definition without
importing each other in a circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

REPORT_KIND_TAG = "seqbench.kind"
REPORT_KIND = "report"
DEFAULT_GROUP_BY: tuple[str, ...] = ("model",)
DEFAULT_METRIC = "test/acc"
# statistics over the rows' per-seed test accuracies (seqbench.report.statistics)
STAT_COLUMNS: tuple[str, ...] = (
    "test_acc_ci_low",
    "test_acc_ci_high",
    "diff_vs_baseline",
    "p_value",
    "diff_boot_low",
    "diff_boot_high",
)
COLUMNS: tuple[str, ...] = (
    "n",
    "test_acc_mean",
    "test_acc_std",
    "val_acc_best_mean",
    "val_loss_mean",
    "params",
    "epochs",
    "sec_per_epoch",
    *STAT_COLUMNS,
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
    data: str = ""  # what it was trained on (labelled reviews only? unlabelled ones too?)


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
    baseline: str | None = None  # --baseline: the row the others are compared with
    pruned: int = 0  # runs Optuna's pruner stopped, left out (--include-pruned lists them)

    @property
    def selection(self) -> str:
        """Human-readable description of which runs were asked for."""
        parts = [f"experiment `{self.experiment}`"]
        if self.sweep_id:
            parts.append(f"sweep `{self.sweep_id}`")
        if self.filter_string:
            parts.append(f"filter `{self.filter_string}`")
        return ", ".join(parts)


def row_label(values: Sequence[str]) -> str:
    """How a row is named (curves legend, ``--baseline``): its key values joined by `` / ``."""
    return " / ".join(str(v) for v in values)
