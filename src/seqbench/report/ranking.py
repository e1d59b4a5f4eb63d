"""Ranking models across datasets: average ranks, Friedman's test and pairwise post-hoc tests.

The unit of replication is the *dataset*: each model is summarised by one number per dataset
(its mean test accuracy over seeds) and the tests ask whether the models' ranks differ
consistently across datasets (Demšar 2006, "Statistical comparisons of classifiers over
multiple data sets", JMLR 7). All statistics come from scipy and scikit-posthocs; this module
decides what is defined and what the data could possibly show:

- Ranks: within each dataset, rank 1 is the highest score; ties get the average of the ranks
  they span. A dataset where any model has no score is left out of the ranks and the tests (the
  tests need complete blocks) and named in ``Ranking.dropped``.
- Friedman (``scipy.stats.friedmanchisquare``): needs at least 3 models and 2 datasets.
- Post-hoc, pairwise: ``nemenyi`` (``scikit_posthocs.posthoc_nemenyi_friedman``, on the same
  average ranks, the test the critical-difference diagram was designed for) or ``wilcoxon``
  (``scikit_posthocs.posthoc_wilcoxon`` with Holm's correction, Benavoli et al. 2016).
- A test is only reported when it *could* give p < alpha with this many datasets and models:
  its p-value on the most extreme table possible (every dataset ranking the models in the same
  order) is computed with the same library call, and when even that is >= alpha the table
  says so in words instead of printing a p-value that can never mean anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats

ALPHA = 0.05
POSTHOC_TESTS = ("nemenyi", "wilcoxon")
POSTHOC_NAMES = {"nemenyi": "Nemenyi", "wilcoxon": "Wilcoxon signed-rank, Holm-corrected"}


@dataclass
class Ranking:
    """What the data says about the models' order; ``notes`` explain every test not reported."""

    scores: pd.DataFrame  # models x datasets, NaN where a model has no score
    used: list[str]  # datasets in the ranks and tests (every model has a score)
    dropped: list[str]  # datasets left out because some model has no score there
    ranks: pd.DataFrame  # models x used datasets, 1 = best, ties averaged
    average_rank: pd.Series  # per model over the used datasets (NaN when none)
    posthoc: str
    alpha: float = ALPHA
    friedman_statistic: float = math.nan
    friedman_p: float = math.nan
    posthoc_p: pd.DataFrame | None = None  # models x models, in score order
    notes: list[str] = field(default_factory=list)


def _ideal_block(n_datasets: int, n_models: int) -> np.ndarray:
    """Scores where every dataset orders the models the same way, with distinct differences
    (so the signed-rank test has no ties): the most extreme evidence possible."""
    order = np.arange(n_models, 0, -1, dtype=float)
    return np.outer(np.arange(1, n_datasets + 1, dtype=float), order)


def friedman_p(block: np.ndarray) -> tuple[float, float]:
    """Friedman's statistic and p over a datasets x models block (scipy)."""
    result = stats.friedmanchisquare(*block.T)
    return float(result.statistic), float(result.pvalue)


def posthoc_p(block: pd.DataFrame, test: str) -> pd.DataFrame:
    """Pairwise p-values (models x models) of ``test`` over a datasets x models block."""
    if test == "nemenyi":
        return sp.posthoc_nemenyi_friedman(block)
    # long form: one observation per (model, dataset), paired by dataset order
    long = block.melt(var_name="model", value_name="score", ignore_index=False)
    return sp.posthoc_wilcoxon(long, val_col="score", group_col="model", p_adjust="holm")


def best_possible_p(test: str, n_datasets: int, n_models: int) -> float:
    """The smallest p ``test`` can give with this many datasets and models (on the ideal block)."""
    ideal = _ideal_block(n_datasets, n_models)
    if test == "friedman":
        return friedman_p(ideal)[1]
    matrix = posthoc_p(pd.DataFrame(ideal, columns=[f"m{i}" for i in range(n_models)]), test)
    return float(np.min(matrix.to_numpy()[~np.eye(n_models, dtype=bool)]))


def _too_few(what: str, best: float, n_datasets: int, n_models: int, alpha: float) -> str:
    return (
        f"{what}: not reported. With {n_datasets} dataset{'s' * (n_datasets != 1)} and "
        f"{n_models} models it cannot reach p < {alpha:g}: even if every dataset ranked the "
        f"models in the same order, p would be {best:.3g}. Add datasets."
    )


def rank_models(scores: pd.DataFrame, posthoc: str = "nemenyi", alpha: float = ALPHA) -> Ranking:
    """Ranks, Friedman's test and the pairwise ``posthoc`` test over ``scores`` (models as rows,
    datasets as columns, higher is better, NaN for a missing cell)."""
    if posthoc not in POSTHOC_TESTS:
        raise ValueError(f"posthoc must be one of {POSTHOC_TESTS}, got {posthoc!r}")
    scores = scores.astype(float)
    scores.columns = [str(c) for c in scores.columns]
    complete = scores.notna().all(axis=0)
    used = list(scores.columns[complete])
    dropped = list(scores.columns[~complete])
    ranks = scores[used].rank(axis=0, ascending=False, method="average")
    average = ranks.mean(axis=1) if used else pd.Series(math.nan, index=scores.index)
    ranking = Ranking(scores, used, dropped, ranks, average, posthoc, alpha)
    k, n = len(scores.index), len(used)
    notes = ranking.notes
    for dataset in dropped:
        missing = ", ".join(str(m) for m in scores.index[scores[dataset].isna()])
        notes.append(
            f"{dataset} is left out of the ranks and tests: no finished run of {missing} there."
        )
    if k < 3 or n < 2:
        notes.append(
            f"Friedman test: not computed; it needs at least 3 models and 2 datasets where every "
            f"model has a score (here {k} model{'s' * (k != 1)}, {n} dataset{'s' * (n != 1)})."
        )
    elif (best := best_possible_p("friedman", n, k)) >= alpha:
        notes.append(_too_few("Friedman test", best, n, k, alpha))
    else:
        block = scores[used].T.to_numpy()
        if np.all(block == block[:, :1]):
            notes.append("Friedman test: not computed; every model scores the same everywhere.")
        else:
            ranking.friedman_statistic, ranking.friedman_p = friedman_p(block)
    name = f"Pairwise {POSTHOC_NAMES[posthoc]} tests"
    if k < 2 or n < 2:
        notes.append(f"{name}: not computed; they need 2 models and 2 complete datasets.")
    elif (best := best_possible_p(posthoc, n, k)) >= alpha:
        notes.append(_too_few(name, best, n, k, alpha))
    else:
        order = list(average.sort_values(kind="stable").index)
        block = scores.loc[order, used].T
        ranking.posthoc_p = posthoc_p(block, posthoc).loc[order, order]
    return ranking
