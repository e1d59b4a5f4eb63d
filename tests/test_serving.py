"""Model Registry and serving: ``seqbench-report --register`` picks the champion by validation
accuracy, then a real ``mlflow models serve --env-manager local`` on 127.0.0.1 answers
``POST /invocations`` for ``models:/NAME@champion``.

Two real (tiny) runs are trained into a real SQLite store. Their final ``val/acc_best`` and
``test/acc`` are then *overwritten* with crafted values through the real ``MlflowClient`` (one more
value logged at a later step, which MLflow reports as the latest), so that validation accuracy
and test accuracy disagree on the best run: a registry that looked at test accuracy would pick
the other run. The weights, logged models and everything else are the runs' own.

The serving commands of the docs are run as written: ``make serve`` with the documented model
(a tiny IMDB-format run registered under that name), and each documented ``curl`` request sent
byte for byte, so the test fails when the docs drift from what a server answers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from helpers import REPO, chromium_or_skip, make_config, rendered_dom, served_process, tiny
from seqbench import report
from seqbench.serving.inference import Predictor
from seqbench.train import train

NAME = "synthetic-lstm"
TEXTS = ["5 3 9 4 7 8", "4 6 6 3 9", ""]
# run -> (crafted val/acc_best, crafted test/acc): val picks "chosen", test would pick "decoy"
CRAFTED = {"chosen": (0.91, 0.55), "decoy": (0.62, 0.97)}


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serving")
    runs = {}
    for seed, role in ((1, "decoy"), (2, "chosen")):
        # The pre-padded default of IMDB, so the served path is the exact-length batching one.
        cfg = make_config(root, [*tiny(epochs=1), f"seed={seed}", "data.padding=pre"])
        runs[role] = train(cfg).run_id
    uri = cfg.logger.tracking_uri
    client = MlflowClient(uri)
    for role, values in CRAFTED.items():
        for key, value in zip(("val/acc_best", "test/acc"), values, strict=True):
            last = max(m.step for m in client.get_metric_history(runs[role], key))
            client.log_metric(runs[role], key, value, step=last + 1)
    out = root / "report"
    code = report.main(
        [
            "--experiment",
            "synthetic",
            "--tracking-uri",
            uri,
            "--out",
            str(out),
            "--register",
            NAME,
        ]
    )
    assert code == 0
    return {"uri": uri, "runs": runs, "root": root, "table": out / "table.md"}


def test_register_picks_the_best_validation_run_not_the_best_test_run(registered, capsys):
    client = MlflowClient(registered["uri"])
    metrics = {r: client.get_run(registered["runs"][r]).data.metrics for r in CRAFTED}
    assert metrics["decoy"]["test/acc"] > metrics["chosen"]["test/acc"]  # test would pick decoy
    assert metrics["chosen"]["val/acc_best"] > metrics["decoy"]["val/acc_best"]

    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == registered["runs"]["chosen"]
    run = client.get_run(version.run_id)
    assert version.source == f"models:/{run.outputs.model_outputs[0].model_id}"
    assert "val/acc_best = 0.9100" in version.description
    assert str(registered["table"]) in version.description
    assert "all runs (no sweep selected)" in version.description

    # Registering again makes a new version and moves the alias to it.
    assert (
        report.main(
            [
                "--experiment",
                "synthetic",
                "--tracking-uri",
                registered["uri"],
                "--out",
                str(registered["root"] / "report2"),
                "--no-summary-run",
                "--register",
                NAME,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "#/experiments/" in err and "workflowType=machine_learning" in err
    again = client.get_model_version_by_alias(NAME, "champion")
    assert int(again.version) == int(version.version) + 1
    assert again.run_id == registered["runs"]["chosen"]


@pytest.fixture(scope="module")
def served(registered):
    """``mlflow models serve -m models:/NAME@champion --env-manager local``; stopped afterwards."""
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    # MLflow starts the server as `bash -c "exec uvicorn ..."`: uvicorn must be on PATH,
    # which it is not when the virtual environment is used without being activated.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registered["uri"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    with served_process(cmd, registered["root"] / "serve.log", "/ping", env) as base:
        yield base


def _invoke(base: str, payload: dict) -> requests.Response:
    return requests.post(f"{base}/invocations", json=payload, timeout=30)


def test_served_champion_answers_inputs_and_dataframe_split_alike(registered, served):
    by_inputs = _invoke(served, {"inputs": TEXTS})
    by_split = _invoke(
        served, {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}
    )
    assert by_inputs.status_code == 200, by_inputs.text[:500]
    assert by_split.status_code == 200, by_split.text[:500]
    rows = by_inputs.json()["predictions"]
    assert rows == by_split.json()["predictions"]
    assert [sorted(r) for r in rows] == [
        sorted(["label", "prob_B first", "prob_A first", "tokens", "truncated"])
    ] * len(TEXTS)

    # The same numbers as scoring the champion's model folder directly.
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").unwrap_python_model()
    assert isinstance(model.predictor, Predictor)
    expected = model.predictor.predict(TEXTS)
    np.testing.assert_allclose(
        [r["prob_A first"] for r in rows], expected["prob_A first"], rtol=0, atol=1e-6
    )
    assert [r["label"] for r in rows] == expected["label"].tolist()


def test_served_model_refuses_a_non_string_in_a_dataframe_with_a_clear_400(served):
    response = _invoke(served, {"dataframe_split": {"columns": ["text"], "data": [["5 3"], [7]]}})
    assert response.status_code == 400, response.text[:500]
    assert "row 1: expected a string, got int 7" in response.json()["message"]


def test_served_inputs_list_has_json_numbers_turned_into_text_by_mlflow(served):
    """Pins an MLflow 3.17 behaviour the README warns about: its parser makes ``inputs`` a
    numpy string array, so a JSON number arrives as its text ("7") and is scored as such."""
    mixed = _invoke(served, {"inputs": ["5 3", 7]}).json()["predictions"]
    as_text = _invoke(served, {"inputs": ["5 3", "7"]}).json()["predictions"]
    assert mixed == as_text


def test_champion_loads_by_alias_in_seqbench_predict(registered, capsys, monkeypatch):
    from seqbench.serving import predict

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    assert predict.main(["--model", f"models:/{NAME}@champion", "--format", "csv", "5 3"]) == 0
    assert capsys.readouterr().out.startswith("label,prob_B first,prob_A first")


# -- the docs' serving commands, as written ---------------------------------------------------


def _documented_serving() -> list[dict]:
    """Every ```bash block of README.md and docs/*.md that sends a request to /invocations:
    its ``make serve`` arguments and its ``curl`` requests (url, headers, body), each with the
    first row of the example answer that follows it in the block, if any."""
    blocks = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            if "/invocations" not in block or "make serve" not in block:
                continue  # text models served by `make serve` (numeric ones: time-series.md)
            found = {"page": page.name, "make": None, "requests": []}
            for line in block.replace("\\\n", " ").splitlines():
                if line.startswith("make serve"):
                    found["make"] = shlex.split(line, comments=True)[1:]
                elif line.startswith("curl"):
                    words = shlex.split(line, comments=True)
                    headers = dict(
                        words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H"
                    )
                    body = words[words.index("-d") + 1]
                    url = next(w for w in words if w.startswith("http"))
                    found["requests"].append({"url": url, "headers": headers, "body": body})
                elif line.startswith('# {"predictions"') and found["requests"]:
                    row = re.search(r'\{"label"[^{}]*\}', line)
                    found["requests"][-1]["answer"] = json.loads(row.group(0))
            assert found["make"], f"{page.name}: a serving block without `make serve`"
            assert found["requests"], f"{page.name}: a serving block without a curl request"
            blocks.append(found)
    assert blocks, "no request to /invocations documented in README.md or docs/*.md"
    return blocks


def _make_serve(args: list[str]) -> list[str]:
    """``make serve ARGS`` in the checkout, without re-installing .venv (``-o`` its stamp)."""
    return ["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.installed", *args]


@pytest.fixture(scope="module")
def documented_server(tmp_path_factory, fake_imdb_dir):
    """The documented ``make serve MODEL=models:/NAME@champion``, started on a free port, for a
    tiny run on an IMDB-format corpus registered as NAME@champion by ``seqbench-report``."""
    (block, *_) = _documented_serving()
    model = dict(a.split("=", 1) for a in block["make"] if "=" in a)["MODEL"]
    name = re.fullmatch(r"models:/(.+)@champion", model).group(1)
    root = tmp_path_factory.mktemp("documented")
    cfg = make_config(root, [f"data.archive={fake_imdb_dir}", "trainer.max_epochs=1"])
    train(cfg)
    uri = cfg.logger.tracking_uri
    args = ["--experiment", cfg.logger.experiment_name, "--tracking-uri", uri]
    assert report.main([*args, "--out", str(root / "report"), "--register", name]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env |= {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_MODELS_WORKERS": "1",
    }
    cmd = _make_serve([*block["make"], "PORT={port}"])
    with served_process(cmd, root / "make-serve.log", "/ping", env, timeout=300) as base:
        yield base


def test_the_documented_requests_to_make_serve_get_the_documented_answer(documented_server):
    blocks = _documented_serving()
    for block in blocks:
        # The port the docs' curl uses is the one `make serve` listens on by default.
        recipe = subprocess.run(
            [*_make_serve(block["make"]), "-n"], capture_output=True, text=True, check=True
        ).stdout
        default_port = re.search(r"--port (\d+)", recipe).group(1)
        for request in block["requests"]:
            url = urlsplit(request["url"])
            assert (url.hostname, str(url.port)) == ("127.0.0.1", default_port), block["page"]
            response = requests.post(
                documented_server + url.path,
                data=request["body"].encode(),
                headers=request["headers"],
                timeout=60,
            )
            assert response.status_code == 200, (block["page"], response.text[:500])
            sent = json.loads(request["body"])
            texts = sent.get("inputs") or [row[0] for row in sent["dataframe_split"]["data"]]
            rows = response.json()["predictions"]
            assert len(rows) == len(texts)
            for row in rows:
                labels = {k.removeprefix("prob_"): v for k, v in row.items() if k[:5] == "prob_"}
                assert set(labels) == {"neg", "pos"} and row["label"] == max(labels, key=labels.get)
                assert sum(labels.values()) == pytest.approx(1, abs=1e-5)
            example = request.get("answer")
            if example:  # same fields; same tokens and truncation (probabilities illustrative)
                assert sorted(rows[0]) == sorted(example), block["page"]
                assert rows[0]["tokens"] == example["tokens"]
                assert rows[0]["truncated"] == example["truncated"]


@pytest.fixture(scope="module")
def ui_server(registered):
    """``mlflow server`` over the registered store (the UI a researcher opens with make ui);
    started only where the browser test can run. A loaded 2-core machine can take minutes."""
    chromium_or_skip()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", registered["uri"]]
    cmd += ["--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with served_process(cmd, registered["root"] / "ui.log", "/health", env, timeout=240) as base:
        yield base


def _dom(url: str, profile: Path) -> str:
    """The page a first-time visitor sees, wide enough for the runs table's Models column."""
    return rendered_dom(url, profile, window="3000,1000")


def test_printed_link_opens_the_training_runs_view_with_the_model_column(
    registered, ui_server, tmp_path
):
    chromium_or_skip()
    from seqbench.report.registry import runs_view_url

    client = MlflowClient(registered["uri"])
    experiment_id = client.get_experiment_by_name("synthetic").experiment_id
    port = int(ui_server.rsplit(":", 1)[1])
    link = runs_view_url(registered["uri"], experiment_id, port)
    dom = _dom(link, tmp_path / "fresh")
    (tmp_path / "training-view.html").write_text(dom)
    assert "lstm-seed1" in dom and "lstm-seed2" in dom, dom[:500]
    assert "Model registry" in dom  # the "Model training" sidebar
    assert "Observability" not in dom  # an item of the GenAI sidebar only
    model_ids = {
        o.model_id
        for r in registered["runs"].values()
        for o in client.get_run(r).outputs.model_outputs
    }
    linked = {m for m in model_ids if f"#/experiments/{experiment_id}/models/{m}" in dom}
    assert linked == model_ids  # each run's logged model in the Models column

    # Why the link carries workflowType: the plain URL, in a fresh browser, is GenAI mode.
    plain = _dom(f"{ui_server}/#/experiments/{experiment_id}/runs", tmp_path / "fresh2")
    assert "Observability" in plain
