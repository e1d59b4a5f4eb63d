"""A real numeric training run on a bundled UCR data set, logged to a real SQLite MLflow store:
what the run records, its MLflow model loaded in a fresh process scoring JSON arrays, and
``seqbench-predict`` on ``.npy`` and ``.ts`` files and on JSON from stdin, and the model served by
a real ``mlflow models serve`` answering the request docs/time-series.md shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from helpers import REPO, make_config, served_process
from seqbench.data.ucr import bundled_dir
from seqbench.serving import predict
from seqbench.serving.numeric import NumericPredictor
from seqbench.train import setup_datamodule, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def numeric_run(tmp_path_factory):
    """ItalyPowerDemand (1 channel, 24 steps, 67 training series), LSTM-FCN, 2 epochs."""
    root = tmp_path_factory.mktemp("series-run")
    cfg = make_config(
        root,
        [
            "data=ucr",
            "data.name=ItalyPowerDemand",
            "model=lstm_fcn",
            "model.net.encoder.hidden_size=8",
            "trainer.max_epochs=2",
        ],
    )
    result = train(cfg)
    return root, cfg, result


def test_the_run_records_data_labels_metrics_and_model(numeric_run):
    _, cfg, result = numeric_run
    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "ItalyPowerDemand"
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0 and "val/acc_best" in run.data.metrics
    assert json.loads(run.data.tags["data.labels"]) == ["1", "2"]
    assert run.data.params["model.net.encoder.input_channels"] == "1"
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {f"ItalyPowerDemand-{s}" for s in ("train", "val", "test")}
    assert json.loads(inputs["ItalyPowerDemand-test"].profile)["num_rows"] == 1029
    models = client.search_logged_models([run.info.experiment_id])
    assert [m.tags.get("seqbench.input_kind") for m in models] == ["numeric"]


def test_logged_model_scores_json_arrays_in_a_fresh_process(numeric_run, tmp_path):
    _, cfg, result = numeric_run
    from aeon.datasets import load_from_ts_file

    X, _ = load_from_ts_file(str(bundled_dir() / "ItalyPowerDemand" / "ItalyPowerDemand_TEST.ts"))
    series = X[:5, 0].tolist()  # univariate series as plain JSON lists of numbers
    series[1] = series[1][:10] + [None] + series[1][11:]  # a missing value is imputed
    script = (
        "import json, sys, mlflow\n"
        f"mlflow.set_tracking_uri({cfg.logger.tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model('runs:/{result.run_id}/model')\n"
        "out = model.predict(json.loads(sys.stdin.read()))\n"
        "print(out.to_json(orient='records'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(series),
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["steps"] for r in rows] == [24] * 5
    # the same probabilities as the trained network in this process, prepared as training did
    root = numeric_run[0]
    dm = setup_datamodule(make_config(root, ["data=ucr", "data.name=ItalyPowerDemand"]))
    local = predict.load_predictor(result.run_id, cfg.logger.tracking_uri, "cpu")
    assert isinstance(local, NumericPredictor) and local.prep.channels == dm.channels == 1
    arrays = [np.asarray([[np.nan if v is None else v for v in s]]) for s in series]
    expected = local.predict(arrays)
    np.testing.assert_allclose([r["prob_2"] for r in rows], expected["prob_2"], rtol=1e-5)


def test_seqbench_predict_scores_a_npy_file(numeric_run, tmp_path, capsys):
    _, cfg, result = numeric_run
    x = np.random.default_rng(0).normal(size=(3, 1, 24))
    np.save(tmp_path / "three.npy", x)
    code = predict.main(
        [
            "--model",
            result.run_id,
            "--tracking-uri",
            cfg.logger.tracking_uri,
            "--file",
            str(tmp_path / "three.npy"),
            "--format",
            "jsonl",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    records = [json.loads(line) for line in out.out.splitlines()]
    assert len(records) == 3 and all(r["label"] in ("1", "2") for r in records)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-6 for r in records)
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 24)))
    code = predict.main(
        ["--model", result.run_id, "--tracking-uri", cfg.logger.tracking_uri]
        + ["--file", str(tmp_path / "wrong.npy")]
    )
    assert code == 2 and "3 channel(s), the model was trained on 1" in capsys.readouterr().err


def _local_probabilities(numeric_run, series: list) -> np.ndarray:
    """``prob_2`` of the run's network in this process, for ``series`` (lists, None = NaN)."""
    _, cfg, result = numeric_run
    local = predict.load_predictor(result.run_id, cfg.logger.tracking_uri, "cpu")
    arrays = [np.asarray([[np.nan if v is None else v for v in s]], np.float64) for s in series]
    return local.predict(arrays)["prob_2"].to_numpy()


def _documented_requests() -> list[dict]:
    """The JSON bodies of the ``curl`` requests in docs/time-series.md."""
    text = (REPO / "docs" / "time-series.md").read_text()
    return [json.loads(b) for b in re.findall(r"/invocations.*?-d '(\{.*?\})'", text, re.S)]


def _series_of(body: dict) -> list:
    """The series a request body holds: ``inputs.series`` or ``dataframe_records``."""
    if "dataframe_records" in body:
        return [record["series"] for record in body["dataframe_records"]]
    return body["inputs"]["series"]


def test_mlflow_models_serve_answers_the_documented_json_arrays(numeric_run):
    """The numeric model behind a real ``mlflow models serve``: the docs' requests, and series
    of unequal lengths (one with a missing value) as records, get the probabilities the network
    gives in process; a non-numeric value gets a 400."""
    root, cfg, result = numeric_run
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{result.run_id}/model"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    env = {  # mlflow runs `exec uvicorn`: the venv's bin must be on PATH
        **os.environ,
        "MLFLOW_TRACKING_URI": cfg.logger.tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    bodies = _documented_requests()
    assert [sorted(b) for b in bodies] == [["inputs"], ["dataframe_records"]]
    # series of unequal lengths, one per record (MLflow turns "inputs" into one array)
    mine = [[0.3, -1.2, 0.8, None, 2.0, 1.1, 0.0], list(np.linspace(-1, 1, 24))]
    bodies.append({"dataframe_records": [{"series": s} for s in mine]})
    with served_process(cmd, root / "serve-numeric.log", "/ping", env, timeout=240) as base:
        answers = [requests.post(f"{base}/invocations", json=b, timeout=60) for b in bodies]
        bad = requests.post(f"{base}/invocations", json={"inputs": [["x", 1.0]]}, timeout=60)
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    assert bad.status_code == 400, bad.text
    series = [s for b in bodies for s in _series_of(b)]
    rows = [row for a in answers for row in a.json()["predictions"]]
    assert [r["steps"] for r in rows] == [len(s) for s in series]
    assert all(r["label"] in ("1", "2") for r in rows)
    expected = _local_probabilities(numeric_run, series)
    np.testing.assert_allclose([r["prob_2"] for r in rows], expected, rtol=1e-5)


def test_seqbench_predict_scores_a_ts_file_and_json_from_stdin(numeric_run, capsys):
    """``--file test.ts`` (aeon's loader) and, in a fresh ``seqbench-predict`` process, ``--series
    --file -`` as in the docs: the same probabilities as the network in process."""
    _, cfg, result = numeric_run
    from aeon.datasets import load_from_ts_file

    ts = bundled_dir() / "ItalyPowerDemand" / "ItalyPowerDemand_TEST.ts"
    X, _ = load_from_ts_file(str(ts))
    args = ["--model", result.run_id, "--tracking-uri", cfg.logger.tracking_uri]
    args += ["--format", "jsonl"]
    code = predict.main([*args, "--file", str(ts)])
    out = capsys.readouterr()
    assert code == 0, out.err
    records = [json.loads(line) for line in out.out.splitlines()]
    assert len(records) == len(X) == 1029
    series = [X[0, 0].tolist(), [0.1, 0.5, 0.9, 0.3]]
    by_stdin = subprocess.run(
        [sys.executable, "-m", "seqbench.serving.predict", *args, "--series", "--file", "-"],
        input=json.dumps(series),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=240,
    )
    assert by_stdin.returncode == 0, by_stdin.stderr[-3000:]
    piped = [json.loads(line) for line in by_stdin.stdout.splitlines()]
    expected = _local_probabilities(numeric_run, series)
    got = [piped[0]["probabilities"]["2"], piped[1]["probabilities"]["2"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert records[0]["probabilities"] == pytest.approx(piped[0]["probabilities"], rel=1e-6)
