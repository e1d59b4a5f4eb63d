"""data=text_files end to end: generated files in every format through real (tiny) training runs
into a real MLflow store, read back through MlflowClient; a sweep of all six architectures over
one 5-class file ending in a `seqbench-report` table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from helpers import make_config
from seqbench.train import train
from test_models import ARCHS
from test_sweeps import run_cli, store
from text_data import CUES, make_frame, write

TINY = ["trainer.max_epochs=1", "data.max_len=30"]
CASES = {
    # id: (file name, classes, header, extra overrides)
    "csv-header-5": ("tickets.csv", 5, True, []),
    "csv-noheader-2": (
        "pairs.csv",
        2,
        False,
        [
            "data.header=false",
            "data.text_column=0",
            "data.label_column=1",
            "data.class_weights=balanced",
        ],
    ),
    "tsv-5-balanced": ("desk.tsv", 5, True, ["data.class_weights=balanced"]),
    "jsonl-2-char": ("chat.jsonl", 2, True, ["data.tokenizer=char"]),
    "parquet-5": ("queue.parquet", 5, True, []),
    "csv-gzip-5-char": ("mail.csv.gz", 5, True, ["data.tokenizer=char"]),
}


def _artifacts(client: MlflowClient, run_id: str, path: str) -> list[str]:
    return [a.path for a in client.list_artifacts(run_id, path)]


@pytest.mark.parametrize("case", list(CASES))
def test_each_format_is_a_tracked_run_with_label_names(tmp_path, case):
    name, classes, header, extra = CASES[case]
    path = write(make_frame(150, classes), tmp_path / "data" / name, header=header)
    cfg = make_config(tmp_path, ["data=text_files", f"data.train={path}", *TINY, *extra])
    result = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(result.run_id)
    labels = sorted(CUES)[:classes]

    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == name.split(".")[0]
    assert json.loads(run.data.tags["data.labels"]) == labels
    assert run.data.params["model.net.num_classes"] == str(classes)
    assert run.data.params["data.num_classes"] == str(classes)
    assert len(run.data.tags["data.fingerprint"]) == 64
    labels_file = client.download_artifacts(result.run_id, "data/labels.json", str(tmp_path))
    assert json.loads(Path(labels_file).read_text())["classes"] == labels

    metrics = run.data.metrics
    for key in (
        "test/acc",
        "test/f1",
        "test/f1_macro",
        "val/f1",
        *(f"test/f1_{n}" for n in labels),
    ):
        assert key in metrics, key
    per_class = [metrics[f"test/f1_{n}"] for n in labels]
    assert metrics["test/f1_macro"] == pytest.approx(sum(per_class) / classes, abs=1e-5)
    if classes > 2:  # softmax head; test/f1 is macro-F1
        assert metrics["test/f1"] == pytest.approx(metrics["test/f1_macro"], abs=1e-5)
        assert "plots/confusion_matrix_test.png" in _artifacts(client, result.run_id, "plots")
    matrix_file = client.download_artifacts(
        result.run_id, "plots/confusion_matrix_test.json", str(tmp_path)
    )
    matrix = json.loads(Path(matrix_file).read_text())
    assert matrix["labels"] == labels and len(matrix["counts"]) == classes
    assert sum(map(sum, matrix["counts"])) == 30  # the 20% test split of 150 rows

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    stem = name.split(".")[0]
    assert sorted(inputs) == sorted(f"{stem}-{s}" for s in ("train", "val", "test"))
    contexts = {d.tags[0].value for d in inputs.values()}
    assert contexts == {"train", "validation", "test"}
    rows = {n: json.loads(d.dataset.profile)["num_rows"] for n, d in inputs.items()}
    assert rows[f"{stem}-test"] == 30 and rows[f"{stem}-train"] + rows[f"{stem}-val"] == 120
    assert rows[f"{stem}-val"] in (10, 12)  # val_fraction 0.1 per class, rounded
    assert json.loads(inputs[f"{stem}-train"].dataset.source)["uri"] == path.resolve().as_uri()


@pytest.mark.parametrize("data", ["synthetic", "imdb"])
def test_builtin_data_is_logged_as_dataset_inputs_too(tmp_path, data, fake_imdb_dir):
    extra = (
        ["data.n_train=200", "data.n_test=50", "data.max_len=30"]
        if data == "synthetic"
        else [f"data.archive={fake_imdb_dir}", "data.vocab_size=50", "data.max_len=30"]
    )
    cfg = make_config(tmp_path, [f"data={data}", "trainer.max_epochs=1", *extra])
    result = train(cfg)
    run = MlflowClient(cfg.logger.tracking_uri).get_run(result.run_id)
    names = sorted(d.dataset.name for d in run.inputs.dataset_inputs)
    assert names == [f"{data}-test", f"{data}-train", f"{data}-val"]
    assert json.loads(run.data.tags["data.labels"]) == (
        ["B first", "A first"] if data == "synthetic" else ["neg", "pos"]
    )


def test_experiment_name_can_be_given(tmp_path):
    path = write(make_frame(100, 2), tmp_path / "intents.csv")
    cfg = make_config(
        tmp_path,
        ["data=text_files", f"data.train={path}", "logger.experiment_name=mine", *TINY],
    )
    run = MlflowClient(cfg.logger.tracking_uri).get_run(train(cfg).run_id)
    assert MlflowClient(cfg.logger.tracking_uri).get_experiment(run.info.experiment_id).name == (
        "mine"
    )


@pytest.mark.scenario
def test_sweep_of_six_architectures_over_a_5_class_file_ends_in_a_table(tmp_path):
    path = write(make_frame(300, 5), tmp_path / "intents.csv")
    run_cli(
        [
            "-m",
            f"model={','.join(ARCHS)}",
            "data=text_files",
            f"data.train={path}",
            "data.max_len=30",
            "trainer.max_epochs=1",
            "callbacks.progress_bar.refresh_rate=0",
            "trainer.enable_model_summary=false",
        ],
        tmp_path,
    )
    client = store(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("intents").experiment_id])
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)

    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "seqbench.report", "--experiment", "intents", "--latest-sweep"]
        + ["--metric", "test/f1", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["model"]) == sorted(ARCHS) and (table["n"] == 1).all()
    assert list(table["test_f1_mean"]) == sorted(table["test_f1_mean"], reverse=True)  # ranked
    markdown = done.stdout
    assert "test/f1" in markdown
    assert (
        sum(
            line.startswith(("| lstm", "| bilstm", "| cnn", "| stacked"))
            for line in markdown.splitlines()
        )
        == 6
    )
