"""Which differences are real: per-row confidence intervals and tests against a baseline row.

All inference is scipy's; this module only decides what is defined. Everything is over the
rows' per-seed test accuracies (one value per run), so the unit of replication is the seed:

- ``test_acc_ci_low`` / ``test_acc_ci_high``: 95% Student-t interval of the mean,
  ``scipy.stats.t.interval`` with n-1 degrees of freedom and the standard error of the mean,
  clipped to [0, 1] (``ACCURACY_RANGE``). Blank for one run (no spread, no interval);
  ``[mean, mean]`` when all runs agree exactly.

  Why clipping rather than an interval built for proportions: the true mean accuracy lies in
  [0, 1], so cutting off the part of the interval outside it removes no value the interval
  could cover and its coverage is exactly the Student-t interval's; inside the range nothing
  changes, so typical rows keep the interval they always had. The alternatives fit a handful
  of seeds worse: a percentile bootstrap of 3-5 values is too narrow (see below), and a
  logit-scale or Wilson interval needs either each run's number of test reviews (it is then
  an interval of one run's accuracy, not of the mean over seeds) or an arbitrary correction
  for a seed at exactly 100%, and its centre is no longer the mean the table shows.
- ``diff_vs_baseline``: mean of the row minus mean of the baseline row (fractions; 0 for the
  baseline itself).
- ``p_value``: Welch's two-sided t-test (``scipy.stats.ttest_ind(equal_var=False)``), which does
  not assume equal spreads. Blank for the baseline row, for rows or baselines with one run, and
  when both have zero spread (the test is undefined there).
- ``diff_boot_low`` / ``diff_boot_high``: a 95% percentile bootstrap interval of the difference
  of means (``scipy.stats.bootstrap``, 9,999 resamples of each row independently, fixed seed so
  a report is reproducible), only when both rows have at least ``MIN_BOOTSTRAP_SEEDS`` runs:
  with fewer, resampling 3 values says little and the interval is too narrow.

No correction for multiple comparisons is applied: the note under the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from seqbench.report.core import STAT_COLUMNS, ReportError, row_label

CONFIDENCE = 0.95
MIN_BOOTSTRAP_SEEDS = 5
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
ACCURACY_RANGE = (0.0, 1.0)  # accuracies are fractions; intervals are clipped to this range


def mean_ci(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] = ACCURACY_RANGE,
) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values``, clipped to ``bounds`` (the
    range the mean can take; the module docstring says why); NaNs for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    if np.all(x == x[0]):  # zero spread: scipy would return NaN for scale 0
        return mean, mean
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=stats.sem(x))
    return max(float(low), bounds[0]), min(float(high), bounds[1])


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of ``a`` against ``b``; NaN where it is undefined."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
        return math.nan
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def bootstrap_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    confidence: float = CONFIDENCE,
    min_n: int = MIN_BOOTSTRAP_SEEDS,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``; NaNs when either has < ``min_n``."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < min_n or len(y) < min_n:
        return math.nan, math.nan

    def diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    result = stats.bootstrap(
        (x, y),
        diff,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def add_statistics(
    table: pd.DataFrame, runs: pd.DataFrame, keys: Sequence[str], baseline: str | None = None
) -> pd.DataFrame:
    """``table`` with ``STAT_COLUMNS`` filled from ``runs``' per-run ``test_acc``.

    ``baseline`` is a row label as the table shows it (``lstm``; ``lstm / 2`` when grouping by
    two keys); without it the comparison columns stay blank. Raises ``ReportError`` naming the
    rows when no row has that label."""
    keys = list(keys)
    per_row = {
        row_label(list(key if isinstance(key, tuple) else (key,))): group["test_acc"].to_numpy(
            float
        )
        for key, group in runs.groupby(keys, sort=False)
    }
    labels = [row_label([r[k] for k in keys]) for _, r in table.iterrows()]
    if baseline is not None and baseline not in per_row:
        raise ReportError(
            f"--baseline {baseline!r} is not a row of this table; rows: "
            + ", ".join(repr(label) for label in labels)
        )
    out = table.copy()
    cis = [mean_ci(per_row[label]) for label in labels]
    out["test_acc_ci_low"] = [low for low, _ in cis]
    out["test_acc_ci_high"] = [high for _, high in cis]
    for column in STAT_COLUMNS[2:]:
        out[column] = math.nan
    if baseline is not None:
        base = per_row[baseline]
        for i, label in enumerate(labels):
            values = per_row[label]
            out.loc[i, "diff_vs_baseline"] = float(values.mean() - base.mean())
            if label == baseline:
                continue
            out.loc[i, "p_value"] = welch_p_value(values, base)
            low, high = bootstrap_diff_ci(values, base)
            out.loc[i, ["diff_boot_low", "diff_boot_high"]] = [low, high]
    return out
