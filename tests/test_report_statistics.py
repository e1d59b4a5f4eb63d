"""The report's statistics: intervals and Welch's test checked against scipy on fixed numbers,
then the table's new columns against a real ``data=synthetic`` multirun read back from MLflow."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from scipy import stats

from helpers import tiny, train_in_process
from seqbench.config.paths import config_dir
from seqbench.report import COLUMNS, ReportError, build_table, load_reference, main
from seqbench.report.statistics import (
    add_statistics,
    bootstrap_diff_ci,
    mean_ci,
    welch_p_value,
)

A = [0.8681, 0.8632, 0.8728]  # three seeds of one row (fractions, as logged)
B = [0.8890, 0.8802, 0.8911]


def test_mean_ci_is_scipys_student_t_interval():
    low, high = stats.t.interval(0.95, df=2, loc=np.mean(A), scale=np.std(A, ddof=1) / math.sqrt(3))
    assert mean_ci(A) == pytest.approx((low, high), rel=1e-12)
    assert low < np.mean(A) < high
    assert all(math.isnan(v) for v in mean_ci([0.87]))  # one seed: no interval, not 0
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)  # no spread at all


@pytest.mark.parametrize(
    "values", [[0.999, 1.0, 0.98], [0.001, 0.0, 0.02], [1.0, 0.5], [0.97, 0.99, 1.0, 0.995]]
)
def test_mean_ci_of_accuracies_near_the_ends_stays_within_0_and_1(values):
    raw = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert raw[0] < 0 or raw[1] > 1  # the plain t interval leaves the scale here
    low, high = mean_ci(values)
    assert 0.0 <= low <= np.mean(values) <= high <= 1.0
    assert (low, high) == pytest.approx((max(raw[0], 0.0), min(raw[1], 1.0)), rel=1e-12)


def test_mean_ci_of_typical_accuracies_is_the_plain_t_interval():
    for values in (A, B, [0.51, 0.55, 0.49], [0.30, 0.42, 0.35, 0.38, 0.33]):
        raw = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert mean_ci(values) == pytest.approx(raw, rel=1e-12)


def test_welch_p_value_is_scipys_two_sided_unequal_variance_test():
    expected = stats.ttest_ind(B, A, equal_var=False, alternative="two-sided").pvalue
    assert welch_p_value(B, A) == pytest.approx(expected, rel=1e-12)
    assert welch_p_value(B, A) != pytest.approx(stats.ttest_ind(B, A, equal_var=True).pvalue)
    assert math.isnan(welch_p_value([0.9], A))  # one seed: undefined, blank
    assert math.isnan(welch_p_value([0.5, 0.5], [0.6, 0.6]))  # both without spread


def test_bootstrap_interval_needs_five_seeds_and_is_scipys():
    assert all(math.isnan(v) for v in bootstrap_diff_ci(B, A))
    rng = np.random.default_rng(7)
    a, b = 0.87 + 0.005 * rng.standard_normal(10), 0.88 + 0.005 * rng.standard_normal(6)
    low, high = bootstrap_diff_ci(b, a)
    expected = stats.bootstrap(
        (b, a),
        lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
        n_resamples=9999,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert (low, high) == pytest.approx((expected.low, expected.high))
    assert low < b.mean() - a.mean() < high


def test_ten_seeds_per_row_fill_every_column():
    """seed=range(1,11): ten runs per row, so the bootstrap interval appears too."""
    rng = np.random.default_rng(3)
    runs = pd.DataFrame(
        {
            "model": ["lstm"] * 10 + ["bilstm_pool"] * 10,
            "test_acc": np.r_[
                0.868 + 0.005 * rng.standard_normal(10), 0.885 + 0.004 * rng.standard_normal(10)
            ],
        }
    )
    table = pd.DataFrame({"model": ["bilstm_pool", "lstm"]})
    out = add_statistics(table, runs, ["model"], baseline="lstm").set_index("model")
    lstm, pool = (runs[runs.model == m].test_acc.to_numpy() for m in ("lstm", "bilstm_pool"))
    assert out.loc["bilstm_pool", "diff_vs_baseline"] == pytest.approx(pool.mean() - lstm.mean())
    assert out.loc["bilstm_pool", "p_value"] == pytest.approx(
        stats.ttest_ind(pool, lstm, equal_var=False).pvalue
    )
    assert out.loc["bilstm_pool", "diff_boot_low"] < out.loc["bilstm_pool", "diff_boot_high"]
    assert out.loc["lstm", "diff_vs_baseline"] == 0 and math.isnan(out.loc["lstm", "p_value"])
    with pytest.raises(ReportError, match=r"'gru' is not a row.*'bilstm_pool', 'lstm'"):
        add_statistics(table, runs, ["model"], baseline="gru")


def test_seed_range_1_to_11_is_a_ten_job_sweep_of_the_best_experiment():
    """``seqbench-train -m experiment=imdb_best 'seed=range(1,11)' model=lstm,bilstm_pool``: the
    command line replaces the experiment's ``seed: 1,2,3`` as Hydra's basic sweeper does it
    (config params first, command-line arguments after, the last one per key wins)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=imdb_best"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params.seed == "1,2,3"
    lines = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    lines += ["seed=range(1,11)", "model=lstm,bilstm_pool"]
    [jobs] = BasicSweeper.split_arguments(
        OverridesParser.create().parse_overrides(lines), max_batch_size=None
    )
    assert len(jobs) == 20
    seeds = sorted({int(o.split("=")[1]) for job in jobs for o in job if o.startswith("seed=")})
    assert seeds == list(range(1, 11))


# -- a real multirun ----------------------------------------------------------------------------

TINY = tiny(epochs=1, n_train=200, n_test=200, console=True)


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory) -> str:
    """``seed=1,2,3`` x ``model=lstm,bigru_pool`` through the console entry point (in this
    process: the runs, not the process, are what the tests read)."""
    root = tmp_path_factory.mktemp("stats_sweep")
    train_in_process(
        root, ["-m", "model=lstm,bigru_pool", "seed=1,2,3", "logger.experiment_name=stats", *TINY]
    )
    return f"sqlite:///{root}/outputs/mlflow/mlflow.db"


def _per_seed(uri: str) -> dict[str, np.ndarray]:
    """Test accuracy per model, straight from MLflow (independent of the report)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stats")
    accs: dict[str, list[float]] = {}
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"):
        accs.setdefault(run.data.tags["model"], []).append(run.data.metrics["test/acc"])
    return {k: np.array(v) for k, v in accs.items()}


def _expected_ci(values: np.ndarray) -> tuple[float, float]:
    if np.ptp(values) == 0:
        return values[0], values[0]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return max(low, 0.0), min(high, 1.0)  # the report clips to what an accuracy can be


def test_csv_columns_match_scipy_on_runs_of_a_real_multirun(sweep_store, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["--tracking-uri", sweep_store, "--experiment", "stats", "--latest-sweep"]
    assert main([*args, "--baseline", "lstm", "--out", str(out), "--no-summary-run"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "table.csv").set_index("model")
    with open(out / "table.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["model", *COLUMNS]
    assert {"test_acc_ci_low", "test_acc_ci_high", "diff_vs_baseline", "p_value"} <= set(header)

    accs = _per_seed(sweep_store)
    assert sorted(accs) == ["bigru_pool", "lstm"] and all(len(v) == 3 for v in accs.values())
    for model, values in accs.items():
        row = table.loc[model]
        assert (row["test_acc_ci_low"], row["test_acc_ci_high"]) == pytest.approx(
            _expected_ci(values)
        )
        assert row["diff_vs_baseline"] == pytest.approx(values.mean() - accs["lstm"].mean())
        assert math.isnan(row["diff_boot_low"])  # 3 seeds: no bootstrap interval
    pool, lstm = accs["bigru_pool"], accs["lstm"]
    expected_p = (
        math.nan
        if np.ptp(pool) == 0 and np.ptp(lstm) == 0
        else stats.ttest_ind(pool, lstm, equal_var=False).pvalue
    )
    assert table.loc["bigru_pool", "p_value"] == pytest.approx(expected_p, nan_ok=True)
    assert math.isnan(table.loc["lstm", "p_value"])

    assert "95% CI (%)" in printed and "diff vs lstm (pp)" in printed and "p (Welch)" in printed
    assert "Welch's two-sided t-test" in printed and "not significant" in printed
    assert "multiple comparisons" in printed and "(n = 3 here)" in printed
    tex = (out / "table.tex").read_text()
    note = [line for line in tex.splitlines() if "Welch's two-sided t-test" in line]
    assert note and all(line.startswith("% ") for line in note) and r"\toprule" in tex

    # without --baseline the comparison columns are blank, the intervals are not
    plain = build_table(sweep_store, "stats", latest_sweep=True).table
    assert plain["diff_vs_baseline"].isna().all() and plain["test_acc_ci_low"].notna().all()


def test_baseline_naming_a_missing_row_is_a_clear_error(sweep_store, tmp_path, capsys):
    args = ["--tracking-uri", sweep_store, "--experiment", "stats", "--out", str(tmp_path)]
    assert main([*args, "--baseline", "missing", "--no-summary-run"]) == 2
    err = capsys.readouterr().err
    assert "--baseline 'missing' is not a row of this table; rows: 'bigru_pool', 'lstm'" in err
    assert "Traceback" not in err
    assert not (Path(tmp_path) / "table.csv").exists()


def test_reference_rows_say_what_data_they_used(sweep_store, tmp_path, capsys):
    args = ["--tracking-uri", sweep_store, "--experiment", "stats", "--out", str(tmp_path)]
    assert main([*args, "--baseline", "lstm", "--reference", "--no-summary-run"]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if "Dai & Le (2015), LSTM with" in line)
    assert "86.50" in row and "labelled reviews only" in row
    maas = next(line for line in printed.splitlines() if "Maas et al. (2011)" in line)
    assert "88.89" in maas and "50k unlabelled" in maas
    assert len(pd.read_csv(tmp_path / "table.csv")) == 2  # published rows stay out of the CSV
    assert r"Dai \& Le" in (tmp_path / "table.tex").read_text()

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, arch: null, test_acc: 0.9, source: s, dataset: imdb}\n")
    with pytest.raises(ReportError, match=r"optional: data\), got \['arch', 'dataset'"):
        load_reference(bad)
