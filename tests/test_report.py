"""``seqbench-report`` on a real MLflow store filled by real (tiny) training runs; no mocks.

One module-scoped store: an older one-epoch run in sweep ``test0``, then 2 models x 2 seeds in
sweep ``test1`` plus one run of that sweep that fails once started (early stopping on a metric
that does not exist: status FAILED).
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import REPO, make_config, tiny
from seqbench.report import COLUMNS, REPORT_KIND_TAG, ReportError, build_table, load_reference, main
from seqbench.train import train

EXPERIMENT = "report_test"
SMALL_SYNTHETIC = tiny()
MODELS = ("lstm", "cnn_lstm")
PUBLISHED = REPO / "conf" / "reference" / "published.yaml"


def _train(root, i: int, overrides: list[str]):
    cfg = make_config(
        root,
        [
            f"paths.output_dir={root}/outputs/run{i}",
            f"logger.experiment_name={EXPERIMENT}",
            *overrides,
        ],
    )
    return cfg.logger.tracking_uri, train(cfg)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_store")
    uri, _ = _train(
        root,
        0,
        [
            *SMALL_SYNTHETIC,
            "model=lstm",
            "seed=3",
            "trainer.max_epochs=1",
            "+logger.tags.sweep_id=test0",
        ],
    )
    for i, (model, seed) in enumerate(((m, s) for m in MODELS for s in (1, 2)), start=1):
        _train(
            root,
            i,
            [
                *SMALL_SYNTHETIC,
                f"model={model}",
                f"seed={seed}",
                "trainer.max_epochs=2",
                "+logger.tags.sweep_id=test1",
            ],
        )
    failing = ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/nonexistent"]
    with pytest.raises(RuntimeError, match="val/nonexistent"):  # a FAILED run, after it started
        _train(root, 9, [*SMALL_SYNTHETIC, *failing, "+logger.tags.sweep_id=test1"])
    return uri


def _finished_test_acc(client: MlflowClient, sweep: str) -> dict[str, list[float]]:
    """Independent of the report: test/acc per model tag, straight from the MLflow API."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [exp.experiment_id], f"tags.sweep_id = '{sweep}' and attributes.status = 'FINISHED'"
    )
    accs: dict[str, list[float]] = {}
    for run in runs:
        accs.setdefault(run.data.tags["model"], []).append(run.data.metrics["test/acc"])
    return accs


def test_table_matches_the_runs(store):
    client = MlflowClient(store)
    report = build_table(store, EXPERIMENT, sweep_id="test1")
    expected = _finished_test_acc(client, "test1")
    assert sorted(expected) == sorted(MODELS) and all(len(v) == 2 for v in expected.values())

    table = report.table.set_index("model")
    assert list(report.table.columns) == ["model", *COLUMNS]
    assert sorted(table.index) == sorted(MODELS)
    for model, accs in expected.items():
        row = table.loc[model]
        assert row["n"] == 2
        assert row["test_acc_mean"] == pytest.approx(np.mean(accs))
        assert row["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
        assert row["epochs"] == 2 and row["sec_per_epoch"] > 0
        assert 0 < row["val_acc_best_mean"] <= 1 and row["params"] > 0
        assert [len(h) for h in report.curves[model]] == [2, 2]

    [failed] = report.excluded
    assert failed.status == "FAILED" and failed.run_name == "lstm-seed1"
    assert client.get_run(failed.run_id).data.tags["sweep_id"] == "test1"


def test_latest_sweep_all_runs_and_param_grouping(store):
    assert build_table(store, EXPERIMENT, latest_sweep=True).sweep_id == "test1"

    everything = build_table(store, EXPERIMENT).table.set_index("model")
    assert everything.loc["lstm", "n"] == 3 and everything.loc["cnn_lstm", "n"] == 2

    by_params = build_table(store, EXPERIMENT, group_by="model.arch,trainer.max_epochs").table
    assert list(by_params.columns) == ["model.arch", "trainer.max_epochs", *COLUMNS]
    rows = {(r["model.arch"], r["trainer.max_epochs"]): r for _, r in by_params.iterrows()}
    assert set(rows) == {("cnn_lstm", "2"), ("lstm", "1"), ("lstm", "2")}
    single = rows[("lstm", "1")]
    assert single["n"] == 1 and np.isnan(single["test_acc_std"]) and single["epochs"] == 1


def test_cli_writes_files_logs_a_summary_run_and_skips_it_later(store, tmp_path, capsys):
    out = tmp_path / "report"
    args = [
        "--tracking-uri",
        store,
        "--experiment",
        EXPERIMENT,
        "--sweep-id",
        "test1",
        "--out",
        str(out),
    ]
    assert main([*args, "--reference", str(PUBLISHED)]) == 0
    printed = capsys.readouterr().out

    with open(out / "table.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["model", *COLUMNS] and len(rows) == 2  # published rows are not in the CSV
    tex = (out / "table.tex").read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"$\pm$" in tex and "86.79" in tex
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "table.md").read_text() == printed

    assert re.search(r"\| Keras simple LSTM \(published, cf\. lstm\) +\| +\| +86\.79 \|", printed)
    assert "Maas et al. (2011), full method (published)" in printed and "88.89" in printed
    assert "Not included (1)" in printed and "`lstm-seed1`" in printed and "FAILED" in printed

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    [summary] = client.search_runs([exp.experiment_id], f"tags.`{REPORT_KIND_TAG}` = 'report'")
    assert summary.info.run_name == "report-test1" and summary.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"table.md", "table.csv", "table.tex", "curves.png"} <= artifacts

    again = build_table(
        store, EXPERIMENT, sweep_id="test1"
    )  # the summary run is not a training run
    assert list(again.table["n"]) == [2, 2] and len(again.excluded) == 1
    assert build_table(store, EXPERIMENT).table["n"].sum() == 5


def test_unknown_experiment_is_a_clear_error(store, tmp_path, capsys):
    assert main(["--tracking-uri", store, "--experiment", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'nope' does not exist" in err and repr(EXPERIMENT) in err and "Traceback" not in err

    missing_store = tmp_path / "none" / "mlflow.db"
    assert main(["--tracking-uri", f"sqlite:///{missing_store}", "--experiment", EXPERIMENT]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not missing_store.exists()


def test_no_finished_runs_is_a_clear_error_naming_the_failed_ones(store):
    with pytest.raises(ReportError, match=r"(?s)no finished runs.*lstm-seed1 .*FAILED"):
        build_table(store, EXPERIMENT, filter_string="attributes.status = 'FAILED'")
    with pytest.raises(ReportError, match="invalid MLflow filter"):
        build_table(store, EXPERIMENT, filter_string="params.seed ~~ 3")


def test_reference_file(tmp_path):
    rows = {r.name: r for r in load_reference(PUBLISHED)}
    assert rows["Keras simple LSTM"].test_acc == 0.8679 and rows["Keras simple LSTM"].arch == "lstm"
    assert rows["Keras CNN+LSTM"].test_acc == 0.8620
    assert rows["Maas et al. (2011), full method"].arch is None
    assert all(r.source for r in rows.values())

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, arch: lstm, test_acc: 86.79, source: somewhere}\n")
    with pytest.raises(ReportError, match="looks like a percentage"):
        load_reference(bad)
