"""Real Hydra multiruns through the console entry point: basic grid, parallel joblib jobs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import tiny, train_in_process
from seqbench.report import build_table

TINY = tiny(epochs=2, console=True)


def run_cli(args: list[str], root: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQBENCH_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "seqbench.train", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def store(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")


def finished_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing"
    return client.search_runs([exp.experiment_id])


def test_multirun_grid_gives_one_run_per_job_and_a_correct_table(tmp_path):
    train_in_process(
        tmp_path, ["-m", "model=lstm,cnn_lstm", "seed=1,2", "logger.experiment_name=grid", *TINY]
    )
    client = store(tmp_path)
    runs = finished_runs(client, "grid")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert sorted(r.data.tags["job_num"] for r in runs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["output_dir"] for r in runs}) == 4

    report = build_table(client, "grid", latest_sweep=True)
    table = report.table.set_index("model")
    for arch in ("lstm", "cnn_lstm"):
        accs = [r.data.metrics["test/acc"] for r in runs if r.data.tags["model"] == arch]
        assert table.loc[arch, "n"] == 2
        assert table.loc[arch, "test_acc_mean"] == pytest.approx(np.mean(accs))
        assert table.loc[arch, "test_acc_std"] == pytest.approx(np.std(accs, ddof=1))


@pytest.mark.scenario
def test_parallel_joblib_jobs_share_one_sqlite_store_without_losing_anything(tmp_path):
    """Three jobs at once on a fresh store: schema creation, experiment creation and metric
    writes all race; every run must finish with its full metric history."""
    run_cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=3",
            "seed=1,2,3",
            "model=lstm",
            "logger.experiment_name=parallel",
            *TINY,
        ],
        tmp_path,
    )
    client = store(tmp_path)
    runs = finished_runs(client, "parallel")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        for name in ("train/loss", "val/acc", "val/loss", "perf/epoch_seconds"):
            assert len(client.get_metric_history(run.info.run_id, name)) == 2, (
                name,
                run.info.run_name,
            )
        assert "test/acc" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert len(client.search_experiments()) == 2  # Default + parallel: created once, not per job


@pytest.mark.scenario
def test_launches_in_the_same_second_get_distinct_output_dirs(tmp_path):
    """Two single runs started at the same instant: separate run folders, both tracked.
    (resume=never: the same configuration twice is otherwise one job, see test_resume.py.)"""
    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [
        sys.executable,
        "-m",
        "seqbench.train",
        *TINY,
        "trainer.max_epochs=1",
        "num_threads=1",
        "resume=never",
        "logger.experiment_name=same_second",
    ]
    procs = [
        subprocess.Popen(
            args,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors[0][-2000:] + errors[1][-2000:]
    run_dirs = sorted(d.name for d in (tmp_path / "outputs" / "runs").iterdir())
    assert len(run_dirs) == 2
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{8}", d) for d in run_dirs)
    runs = finished_runs(store(tmp_path), "same_second")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["output_dir"] for r in runs}) == 2
