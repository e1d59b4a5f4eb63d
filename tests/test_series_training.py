"""A real numeric training run on a bundled UCR data set, logged to a real SQLite MLflow store:
what the run records, its MLflow model loaded in a fresh process scoring JSON arrays, and
``seqbench-predict`` on a ``.npy`` file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import make_config
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
