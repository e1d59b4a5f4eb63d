"""The team tracking server for real: PostgreSQL on 127.0.0.1 in a temporary folder, `mlflow
server` on it with proxied artifacts (scripts/team_server.sh), a parallel sweep over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from helpers import (
    REPO,
    cli_env,
    free_port,
    postgres_missing,
    run_console,
    stop_process_group,
    wait_healthy,
)
from test_sweeps import TINY

REQUIRE_POSTGRES = os.environ.get("SEQBENCH_REQUIRE_POSTGRES") == "1"
SCRIPTS = REPO / "scripts"


@pytest.fixture(scope="module")
def team_server():
    """PostgreSQL + `scripts/team_server.sh` on free loopback ports; both stopped afterwards.
    Yields (tracking URI, artifact folder)."""
    if reason := postgres_missing():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required here (SEQBENCH_REQUIRE_POSTGRES=1): {reason}")
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="seqbench-team-"))
    folder.chmod(0o755)  # the postgres user owns the cluster below it
    pg = folder / "postgres"
    started = subprocess.run(
        [str(SCRIPTS / "postgres_local.sh"), "start", str(pg), str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = folder / "server.log"
    proc = None
    try:
        assert started.returncode == 0, started.stderr + _tail(pg / "postgres.log")
        port = free_port()
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": started.stdout.strip(),
            "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "2",
            "AUTH": "off",  # the store and the proxy; tests/test_team_auth.py tests the sign-in
            "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
        }
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [str(SCRIPTS / "team_server.sh")],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/health", proc, log)
        yield base, folder / "artifacts"
    finally:
        if proc is not None:
            stop_process_group(proc)
        subprocess.run([str(SCRIPTS / "postgres_local.sh"), "stop", str(pg)], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _tail(path: Path) -> str:
    return path.read_text()[-2000:] if path.is_file() else ""


def joblib_sweep(
    root: Path, env: dict[str, str], overrides: list[str], jobs: int, background: bool = False
):
    """`seqbench-train -m` with the joblib launcher, ``jobs`` jobs at once, in ``root``: run to
    the end (a CompletedProcess), or started in the background with output to
    ``root/launch-N.log`` (a Popen)."""
    cmd = [
        *(sys.executable, "-m", "seqbench.train", "-m", "hydra/launcher=joblib"),
        f"hydra.launcher.n_jobs={jobs}",
        *overrides,
    ]
    if not background:
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    log = open(root / f"launch-{len(list(root.glob('launch-*.log')))}.log", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def check_sweep_runs(client: MlflowClient, runs: list, epochs: int, downloads: Path) -> None:
    """Every run FINISHED with each epoch's metrics exactly once, and its best checkpoint, a
    whole one, readable back through the server's artifact proxy."""
    for run in runs:
        run_id = run.info.run_id
        assert run.info.status == "FINISHED", run_id
        for key in ("train/loss", "val/acc", "val/loss", "perf/epoch_seconds"):
            history = client.get_metric_history(run_id, key)  # in no promised order
            steps = {m.step for m in history}
            assert len(history) == epochs and len(steps) == epochs, (key, history)  # none lost
        (ckpt,) = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
        local = client.download_artifacts(run_id, ckpt, str(downloads / run_id))
        state = torch.load(local, map_location="cpu", weights_only=False)
        assert state["epoch"] >= 0 and state["state_dict"]


def report(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`seqbench-report ARGS` (the console script) in ``root``."""
    return run_console("seqbench-report", args, root, env)


def table_row(table: Path, model: str) -> list[str]:
    """The cells of the one row of ``model`` in a report's table.md."""
    text = table.read_text()
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {model} ")]
    return [c.strip() for c in row.strip("|").split("|")]


@pytest.mark.scenario
@pytest.mark.slow
def test_parallel_sweep_over_http_on_postgres_with_proxied_artifacts(team_server, tmp_path):
    base, artifact_folder = team_server
    env = {**cli_env(tmp_path), "MLFLOW_TRACKING_URI": base}
    done = joblib_sweep(tmp_path, env, ["seed=1,2,3", "logger.experiment_name=team", *TINY], 3)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert not (tmp_path / "outputs" / "mlflow").exists()  # nothing went to a local store

    client = MlflowClient(base)
    exp = client.get_experiment_by_name("team")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3
    assert sorted(r.data.tags["seed"] for r in runs) == ["1", "2", "3"]
    check_sweep_runs(client, runs, 2, tmp_path)
    # The files live in the server's artifact folder, not on the client.
    assert len(list(artifact_folder.rglob("*.ckpt"))) >= 3

    out = tmp_path / "report"
    done = report(tmp_path, env, "--experiment", "team", "--latest-sweep", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert table_row(out / "table.md", "lstm")[:2] == ["lstm", "3"]  # all three, over HTTP


@pytest.mark.scenario
@pytest.mark.slow
def test_short_load_loses_no_point_and_leaves_the_server_healthy(team_server, tmp_path):
    """benchmarks/tracking_load.py, short: 4 processes x 5 s logging at full speed (the
    8 x 60 s figures are in docs/benchmarks.md)."""
    base, _ = team_server
    out = tmp_path / "load.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "tracking_load.py"),
            "--tracking-uri",
            base,
            "--processes",
            "4",
            "--seconds",
            "5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["points_logged"] > 0 and result["lost"] == 0 and result["healthy_after"]
    assert result["processes"] == 4


def _same_new_dataset_from_many_runs_at_once(base: str, log_inputs, runs: int = 8) -> list:
    """Start ``runs`` runs, then have them all log one not-yet-seen dataset at the same instant
    (a barrier), as the jobs of a parallel sweep do; returns the exceptions raised."""
    import threading
    import uuid

    from mlflow.entities import Dataset, DatasetInput, InputTag

    client = MlflowClient(base)
    experiment = client.create_experiment(f"race-{uuid.uuid4().hex[:8]}")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(runs)]
    dataset = Dataset(
        name="race-train", digest=uuid.uuid4().hex[:16], source_type="code", source="{}"
    )
    barrier = threading.Barrier(runs)
    errors: list = []

    def log(run_id: str) -> None:
        barrier.wait()
        try:
            log_inputs(MlflowClient(base), run_id, [DatasetInput(dataset, [InputTag("k", "v")])])
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if not errors:
        for run_id in run_ids:
            (logged,) = client.get_run(run_id).inputs.dataset_inputs
            assert logged.dataset.digest == dataset.digest
    return errors


@pytest.mark.scenario
def test_parallel_jobs_logging_the_same_new_dataset_all_succeed(team_server):
    """Regression: CI's joblib sweep on PostgreSQL failed one job with a duplicate key on
    MLflow's datasets table (its lookup-then-insert races). Unpatched, plain
    `log_inputs` failed in 8 of 8 rounds here; three rounds of eight runs."""
    from seqbench.run.lineage import log_inputs_racing_other_runs

    base, _ = team_server
    for _ in range(3):
        assert _same_new_dataset_from_many_runs_at_once(base, log_inputs_racing_other_runs) == []
