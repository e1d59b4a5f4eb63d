"""``seqbench-report --experiments``: the models x datasets table, its ranks and tests.

One module-scoped store trained for real: three synthetic "datasets" (experiments ``xd_a``,
``xd_b``, ``xd_c``, each generated from its own seed) x three models x two seeds, plus ``xd_d``
where only one model ran (a missing cell). Every figure the table prints is checked against
scipy and scikit-posthocs computed here on the same numbers read back through ``MlflowClient``.
The unit tests at the end use hand-made numbers (ties, missing cells, too few datasets).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from mlflow import MlflowClient
from scipy import stats

from helpers import REPO, make_config, tiny
from seqbench.report import ReportError, main
from seqbench.report.datasets import build_datasets_table
from seqbench.report.ranking import best_possible_p, rank_models
from seqbench.report.reference import load_dataset_reference, load_reference
from seqbench.train import train

DATASETS = {"xd_a": 11, "xd_b": 22, "xd_c": 33}  # experiment -> data.generator_seed
MODELS = ("lstm", "cnn_lstm", "bigru_pool")
SEEDS = (1, 2)
UCR_PUBLISHED = REPO / "conf" / "reference" / "ucr_published.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Trains every job in this process; the config is composed once per model (composing is
    the slow part of a tiny run) and each job changes only its experiment, data and seeds."""
    root = tmp_path_factory.mktemp("datasets_store")
    base = {
        model: make_config(
            root,
            [
                *tiny(1, n_train=200, n_test=100, max_len=20),
                f"model={model}",
                "+logger.log_model=false",
                "+logger.tags.sweep_id=xt",
            ],
        )
        for model in MODELS
    }
    jobs = [(e, s, m, seed) for e, s in DATASETS.items() for m in MODELS for seed in SEEDS]
    jobs.append(("xd_d", 44, "lstm", 1))  # a dataset where only one model ran
    for i, (experiment, data_seed, model, seed) in enumerate(jobs):
        cfg = copy.deepcopy(base[model])
        cfg.paths.output_dir = f"{root}/outputs/run{i}"
        cfg.logger.experiment_name = experiment
        cfg.data.generator_seed = data_seed
        cfg.seed = seed
        train(cfg)
    return base[MODELS[0]].logger.tracking_uri


def _runs(uri: str, experiments):
    """(model, experiment, metrics) of every finished run, read back through MlflowClient."""
    client = MlflowClient(uri)
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"):
            yield run.data.tags["model"], name, run.data.metrics


def _chosen_on_validation(uri: str, experiments) -> dict[str, str]:
    """Independent of the report: per experiment, the model with the highest mean best
    validation accuracy, ties to the lower mean validation loss at each run's first best epoch
    (the checkpoint tested), then to fewer trainable parameters."""
    client = MlflowClient(uri)
    val: dict[tuple[str, str], list[float]] = {}
    loss: dict[tuple[str, str], list[float]] = {}
    size: dict[str, float] = {}
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"):
            model, metrics, run_id = run.data.tags["model"], run.data.metrics, run.info.run_id
            accs = {m.step: m.value for m in client.get_metric_history(run_id, "val/acc")}
            losses = {m.step: m.value for m in client.get_metric_history(run_id, "val/loss")}
            first_best = min(step for step, acc in accs.items() if acc == max(accs.values()))
            assert max(accs.values()) == pytest.approx(metrics["val/acc_best"])
            val.setdefault((name, model), []).append(metrics["val/acc_best"])
            loss.setdefault((name, model), []).append(losses[first_best])
            size[model] = metrics["model/trainable_params"]
    return {
        name: min(
            (m for e, m in val if e == name),
            key=lambda m: (-np.mean(val[(name, m)]), np.mean(loss[(name, m)]), size[m], m),
        )
        for name in experiments
    }


def _scores(uri: str, experiments) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Independent of the report: mean and std of test/acc per (model, experiment)."""
    accs: dict[tuple[str, str], list[float]] = {}
    for model, name, metrics in _runs(uri, experiments):
        accs.setdefault((model, name), []).append(metrics["test/acc"])
    assert all(len(v) == len(SEEDS) for k, v in accs.items() if k[1] in DATASETS)
    frame = pd.Series({k: np.mean(v) for k, v in accs.items()}).unstack()
    std = pd.Series({k: np.std(v, ddof=1) for k, v in accs.items() if len(v) > 1}).unstack()
    return frame.loc[list(MODELS), list(experiments)], std


@pytest.mark.slow
def test_table_ranks_and_tests_match_scipy_and_scikit_posthocs(store, tmp_path, capsys):
    out = tmp_path / "across"
    args = ["--experiments", ",".join(DATASETS), "--tracking-uri", store, "--out", str(out)]
    assert main([*args, "--sweep-id", "xt"]) == 0
    printed = capsys.readouterr().out

    means, stds = _scores(store, DATASETS)
    ranks = means.apply(lambda col: pd.Series(stats.rankdata(-col.to_numpy()), col.index))
    average = ranks.mean(axis=1)
    statistic, p = stats.friedmanchisquare(*means.to_numpy())
    nemenyi = sp.posthoc_nemenyi_friedman(means.T)

    table = pd.read_csv(out / "table.csv").set_index("model")
    assert sorted(table.index) == sorted(MODELS)
    assert list(table["average_rank"]) == sorted(table["average_rank"])  # best first
    for name in DATASETS:
        for model in MODELS:
            assert table.loc[model, f"{name}_n"] == len(SEEDS)
            assert table.loc[model, f"{name}_mean"] == pytest.approx(means.loc[model, name])
            assert table.loc[model, f"{name}_std"] == pytest.approx(stds.loc[model, name])
            assert table.loc[model, f"{name}_rank"] == pytest.approx(ranks.loc[model, name])
    for model in MODELS:
        assert table.loc[model, "average_rank"] == pytest.approx(average[model])

    report = build_datasets_table(store, list(DATASETS), sweep_id="xt")
    ranking = report.ranking
    assert ranking.friedman_statistic == pytest.approx(statistic)
    assert ranking.friedman_p == pytest.approx(p)
    assert f"chi² = {statistic:.3f}" in printed
    assert ranking.posthoc_p is not None
    for a in MODELS:
        for b in MODELS:
            assert ranking.posthoc_p.loc[a, b] == pytest.approx(nemenyi.loc[a, b])
    assert "Pairwise Nemenyi tests" in printed

    best = {name: means[name].idxmax() for name in DATASETS}
    row = next(line for line in printed.splitlines() if line.startswith(f"| {best['xd_a']} "))
    assert f"**{100 * means.loc[best['xd_a'], 'xd_a']:.2f} ± " in row
    # the model validation alone chooses, per dataset: marked in the CSV and in the cells
    chosen = _chosen_on_validation(store, DATASETS)
    for name in DATASETS:
        assert list(table.index[table[f"{name}_chosen"]]) == [chosen[name]], name
    rows = {m: next(x for x in printed.splitlines() if x.startswith(f"| {m} ")) for m in MODELS}
    marked = [m for m in MODELS if "†" in rows[m].split(" | ")[1]]  # the xd_a column
    assert marked == [chosen["xd_a"]]
    assert (out / "cd_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tex = (out / "table.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex and r"$\pm$" in tex and "xd\\_a" in tex
    assert set(pd.read_csv(out / "runs.csv")["experiment"]) == set(DATASETS)

    # Wilcoxon-Holm cannot reach p < 0.05 with 3 datasets: words, not a p-value
    assert main([*args, "--posthoc", "wilcoxon"]) == 0
    printed = capsys.readouterr().out
    assert "Pairwise Wilcoxon signed-rank, Holm-corrected tests: not reported" in printed
    assert "p would be 0.75" in printed and "Pairwise Wilcoxon" in printed
    assert "| lstm |" not in printed.split("## Are the differences real?")[1]  # no p matrix


@pytest.mark.slow
def test_two_datasets_are_too_few_for_any_test(store, tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["--experiments", "xd_a,xd_b", "--tracking-uri", store, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Friedman test: not reported. With 2 datasets and 3 models it cannot reach p < 0.05" in (
        printed
    )
    assert "Pairwise Nemenyi tests: not reported" in printed
    assert "chi²" not in printed and "p = " not in printed
    assert "Friedman test: not reported" in (out / "table.tex").read_text()
    assert (out / "cd_diagram.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_missing_cells_published_rows_and_errors(store, tmp_path, capsys):
    reference = tmp_path / "published.yaml"
    reference.write_text(
        "- name: Paper net\n  arch: lstm\n  source: Somebody 2020\n"
        "  test_acc: {xd_a: 0.9512, xd_d: 0.5}\n  note: epochs chosen on the test set\n"
    )
    out = tmp_path / "four"
    names = [*DATASETS, "xd_d"]
    args = ["--experiments", ",".join(names), "--tracking-uri", store, "--out", str(out)]
    assert main([*args, "--reference", str(reference)]) == 0
    printed = capsys.readouterr().out
    assert "xd_d is left out of the ranks and tests: no finished run of " in printed
    cnn_row = next(line for line in printed.splitlines() if line.startswith("| cnn_lstm "))
    assert cnn_row.split("|")[-3].strip() == "–"  # the xd_d cell
    lstm_row = next(line for line in printed.splitlines() if line.startswith("| lstm "))
    assert "(n=1)" in lstm_row
    published = next(line for line in printed.splitlines() if "Paper net (published" in line)
    assert "95.12" in published and published.rstrip(" |").endswith("50.00")
    assert "Paper net: Somebody 2020. epochs chosen on the test set" in printed
    table = pd.read_csv(out / "table.csv").set_index("model")
    assert len(table) == len(MODELS) and table["xd_d_rank"].isna().all()  # published: not in CSV
    means, _ = _scores(store, DATASETS)
    ranks = means.rank(axis=0, ascending=False).mean(axis=1)  # xd_d does not count
    assert table["average_rank"].to_dict() == pytest.approx(ranks.to_dict())
    assert r"\midrule" in (out / "table.tex").read_text().split(r"\bottomrule")[0]

    # the same per-dataset file beside one experiment's table gives that dataset's figure
    single = ["--experiment", "xd_a", "--tracking-uri", store, "--no-summary-run"]
    assert main([*single, "--out", str(tmp_path / "one"), "--reference", str(reference)]) == 0
    assert "Paper net (published, cf. lstm)" in capsys.readouterr().out

    imdb = REPO / "conf" / "reference" / "published.yaml"
    for extra, message in (
        (["--reference", str(imdb)], "needs figures per dataset"),
        (["--baseline", "lstm"], "--baseline work"),
    ):
        assert main([*args, *extra]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ReportError, match="xd_a more than once"):
        build_datasets_table(store, "xd_a,xd_b,xd_a")


# -- hand-made numbers -------------------------------------------------------------------------


def test_ties_share_the_average_rank_and_missing_cells_drop_the_dataset():
    scores = pd.DataFrame(
        {"d1": [0.9, 0.9, 0.7], "d2": [0.8, 0.6, 0.6], "d3": [0.5, np.nan, 0.9]},
        index=["a", "b", "c"],
    )
    ranking = rank_models(scores)
    assert ranking.used == ["d1", "d2"] and ranking.dropped == ["d3"]
    assert ranking.ranks["d1"].tolist() == [1.5, 1.5, 3.0]
    assert ranking.ranks["d2"].tolist() == [1.0, 2.5, 2.5]
    assert ranking.average_rank.tolist() == [1.25, 2.0, 2.75]
    assert "d3 is left out of the ranks and tests: no finished run of b there." in ranking.notes
    assert np.isnan(ranking.friedman_p) and ranking.posthoc_p is None  # 2 complete datasets

    two_models = rank_models(scores.loc[["a", "b"], ["d1", "d2"]])
    assert any("needs at least 3 models" in note for note in two_models.notes)


def test_friedman_and_wilcoxon_holm_match_scipy_on_eight_datasets():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame(rng.random((3, 8)), index=["a", "b", "c"])
    scores.loc["a"] += 1.0  # a is best everywhere
    ranking = rank_models(scores, posthoc="wilcoxon")
    statistic, p = stats.friedmanchisquare(*scores.to_numpy())
    assert ranking.friedman_statistic == pytest.approx(statistic)
    assert ranking.friedman_p == pytest.approx(p)
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [stats.wilcoxon(scores.loc[x], scores.loc[y]).pvalue for x, y in pairs]
    order = np.argsort(raw)  # Holm: the i-th smallest times (m - i), kept monotone
    holm, running = np.empty(3), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (3 - i) * raw[j]))
        holm[j] = running
    for (x, y), expected in zip(pairs, holm, strict=True):
        assert ranking.posthoc_p.loc[x, y] == pytest.approx(expected)
    assert ranking.posthoc_p.loc["a", "b"] < 0.05


def test_how_many_datasets_each_test_needs():
    # Exact two-sided signed-rank p is at least 2 / 2**N: below 0.05 from N = 6 for one pair,
    # and with Holm over 3 pairs only from N = 7.
    assert stats.wilcoxon(np.arange(1.0, 7.0)).pvalue == pytest.approx(2 / 2**6)
    assert best_possible_p("wilcoxon", 6, 3) >= 0.05 > best_possible_p("wilcoxon", 7, 3)
    assert best_possible_p("friedman", 2, 3) >= 0.05 > best_possible_p("friedman", 3, 3)
    assert best_possible_p("nemenyi", 2, 3) >= 0.05 > best_possible_p("nemenyi", 3, 3)


def test_the_bundled_ucr_reference_file(tmp_path):
    rows = {r.name: r for r in load_dataset_reference(UCR_PUBLISHED)}
    assert rows["MLSTM-FCN"].test_acc == {"JapaneseVowels": 1.0}
    assert rows["LSTM-FCN"].test_acc["ItalyPowerDemand"] == 0.9621
    assert rows["HIVE-COTE 2"].test_acc == {"ItalyPowerDemand": 0.970}
    covered = {d for r in rows.values() for d in r.test_acc}
    assert covered == {"JapaneseVowels", "BasicMotions", "GunPoint", "ItalyPowerDemand"}
    assert all(r.source for r in rows.values())
    for name in ("LSTM-FCN", "LSTM-FCN (MLSTM-FCN paper)", "MLSTM-FCN"):
        assert "test set" in rows[name].note
    with pytest.raises(ReportError, match="expected exactly the keys"):
        load_reference(UCR_PUBLISHED)  # per-dataset figures are not one table's

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, source: s, test_acc: {GunPoint: 97.0}}\n")
    with pytest.raises(ReportError, match="GunPoint: test_acc must be a fraction.*percentage"):
        load_dataset_reference(bad)
    bad.write_text("- {name: x, source: s, test_acc: 0.97}\n")
    with pytest.raises(ReportError, match="must map dataset names to fractions"):
        load_dataset_reference(bad)


def test_a_fixed_schedule_is_chosen_on_the_last_validation_epoch(tmp_path):
    """Runs without ``val/acc_best`` (no checkpoint chosen on validation: the final weights are
    tested, as in experiment=ts_suite) are compared on their last ``val/acc``, the validation
    accuracy of the weights tested: here ``b``, although ``a`` has the better test accuracy and
    both reached the same best validation accuracy in an earlier epoch."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    for name in ("fixed_1", "fixed_2"):
        experiment = client.create_experiment(name)
        for model, (test, last_val) in {"a": (0.95, 0.60), "b": (0.80, 0.70)}.items():
            run_id = client.create_run(experiment, tags={"model": model}).info.run_id
            client.log_metric(run_id, "val/acc", 0.99, step=0)
            client.log_metric(run_id, "val/acc", last_val, step=1)
            client.log_metric(run_id, "test/acc", test)
            client.set_terminated(run_id)
    table = build_datasets_table(uri, ["fixed_1", "fixed_2"]).table.set_index("model")
    assert list(table.index[table["fixed_1_chosen"]]) == ["b"]
    assert table.loc["a", "fixed_1_mean"] == pytest.approx(0.95)


def test_a_validation_accuracy_tie_goes_to_the_lower_validation_loss(tmp_path):
    """A few dozen validation series make accuracies tie (JapaneseVowels in ts_suite: bilstm and
    lstm_fcn both 98.77% mean). The tie goes to the lower mean validation loss of the weights
    tested, not to fewer parameters: here the larger ``big``. For a best-validation checkpoint
    that is the loss at the first epoch with the best accuracy (step 1, not the later, lower
    step-2 loss of ``small``); for a fixed schedule, the last epoch's."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    runs = {  # model: (params, val/acc per step, val/loss per step, val/acc_best or None)
        "small": (10, [0.5, 0.9, 0.9], [0.9, 0.40, 0.05], 0.9),
        "big": (1000, [0.5, 0.9, 0.8], [0.9, 0.30, 0.60], 0.9),
    }
    for schedule in ("best", "fixed"):
        experiment = client.create_experiment(schedule)
        for model, (params, accs, losses, best) in runs.items():
            if schedule == "fixed":  # the final weights tested: last accuracies tie, losses differ
                accs, losses, best = [0.5, 0.9], [0.9, 0.2 if model == "big" else 0.3], None
            run_id = client.create_run(experiment, tags={"model": model}).info.run_id
            for step, (acc, loss) in enumerate(zip(accs, losses, strict=True)):
                client.log_metric(run_id, "val/acc", acc, step=step)
                client.log_metric(run_id, "val/loss", loss, step=step)
            if best is not None:
                client.log_metric(run_id, "val/acc_best", best)
            client.log_metric(run_id, "model/trainable_params", params)
            client.log_metric(run_id, "test/acc", 0.5)
            client.set_terminated(run_id)
    report = build_datasets_table(uri, ["best", "fixed"])
    table = report.table.set_index("model")
    assert list(table.index[table["best_chosen"]]) == ["big"]
    assert list(table.index[table["fixed_chosen"]]) == ["big"]
    best_rows = report.reports[0].table.set_index("model")
    assert best_rows.loc["small", "val_loss_mean"] == pytest.approx(0.40)
    assert best_rows.loc["big", "val_loss_mean"] == pytest.approx(0.30)
