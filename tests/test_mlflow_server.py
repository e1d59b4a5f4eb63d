"""A real `mlflow server` on 127.0.0.1 over a store written by a tiny sweep: REST API and UI."""

import sys
from pathlib import Path

import pytest
import requests

from helpers import chromium_or_skip, rendered_dom, served_process, train_in_process
from test_sweeps import TINY


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Write a 2-run sweep, then serve its SQLite store; stop the server afterwards."""
    root = tmp_path_factory.mktemp("served")
    train_in_process(root, ["-m", "seed=1,2", "model=lstm", "logger.experiment_name=served", *TINY])
    cmd = [sys.executable, "-m", "mlflow", "server"]
    cmd += ["--backend-store-uri", f"sqlite:///{root}/outputs/mlflow/mlflow.db"]
    cmd += ["--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    with served_process(cmd, root / "server.log", "/health", timeout=90) as base:
        yield base


def _api(base: str, endpoint: str, **kwargs) -> dict:
    method = requests.post if "json" in kwargs else requests.get
    response = method(f"{base}/api/2.0/mlflow/{endpoint}", timeout=10, **kwargs)
    assert response.ok, (endpoint, response.status_code, response.text[:500])
    return response.json()


def test_runs_metrics_and_artifacts_over_rest(server):
    exp = _api(server, "experiments/get-by-name", params={"experiment_name": "served"})[
        "experiment"
    ]
    runs = _api(server, "runs/search", json={"experiment_ids": [exp["experiment_id"]]})["runs"]
    assert len(runs) == 2
    names = sorted(r["info"]["run_name"] for r in runs)
    assert names == ["lstm-seed1", "lstm-seed2"]
    for run in runs:
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["model.arch"] == "lstm"
        history = _api(
            server, "metrics/get-history", params={"run_id": run_id, "metric_key": "val/acc"}
        )["metrics"]
        assert [m["step"] for m in history] == sorted(m["step"] for m in history) and len(
            history
        ) == 2
        files = _api(server, "artifacts/list", params={"run_id": run_id, "path": "checkpoints"})[
            "files"
        ]
        assert (
            len(files) == 1
            and files[0]["path"].endswith(".ckpt")
            and int(files[0]["file_size"]) > 1000
        )
        config = requests.get(
            f"{server}/get-artifact",
            params={"path": "config/config.yaml", "run_uuid": run_id},
            timeout=10,
        )
        assert config.ok and "arch: lstm" in config.text


def test_ui_lists_the_experiments_runs_in_headless_chromium(server, tmp_path):
    chromium_or_skip()
    exp = _api(server, "experiments/get-by-name", params={"experiment_name": "served"})[
        "experiment"
    ]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]
    url = f"{server}/#/experiments/{exp['experiment_id']}/runs"
    dom = ""
    for budget in (15000, 40000):  # the UI fetches runs after load; give virtual time to settle
        dom = rendered_dom(url, tmp_path / f"profile{budget}", budget_ms=budget)
        if "lstm-seed1" in dom and "lstm-seed2" in dom:
            break
    Path(tmp_path / "ui.html").write_text(dom)
    assert "lstm-seed1" in dom and "lstm-seed2" in dom, (
        f"runs not on the page; DOM starts: {dom[:500]!r}"
    )
