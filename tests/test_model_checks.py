"""A model value its class refuses is caught before any MLflow run, data cache or checkpoint
exists (``seqbench.training.task.check_model``): a single launch exits 2 with one message naming
the key and what is allowed; inside a grid sweep only that job fails and the others run; in an
Optuna search that trial is FAIL and the search goes on. No run is created for the bad value.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from helpers import cli_env, run_main, tiny
from hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper import ERROR_ATTR

SMALL = [
    *tiny(1, n_train=100, n_test=40, max_len=20, console=True),
    "model=bilstm_pool",
    "model.net.encoder.embedding_dim=8",
    "model.net.encoder.hidden_size=8",
]
POOLING = "model.net.encoder.pooling='attention' is not valid: expected one of: max_mean, max, mean"


def _run_main(root: Path, args: list[str], monkeypatch, capfd) -> tuple[int, str]:
    """``seqbench-train ARGS`` through the real Hydra entry point in this process."""
    return run_main(root, [*args], monkeypatch, capfd)


def _runs(root: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model.net.encoder.pooling=attention"], POOLING),
        (
            ["model=bigru_ngram", "model.net.encoder.branch_dropout=1.5"],
            "model.net.encoder.branch_dropout=1.5 is not valid: expected a dropout probability "
            "in [0, 1)",
        ),
        (
            ["model=bigru_ngram", "+model.lr_scales.x=2"],
            "model.lr_scales names ['x'], which this model does not have; its submodules: [",
        ),
        (
            ["+model.net.encoder.heads=4"],
            "model.net.encoder.heads is not a setting of PooledRNNEncoder; its settings: "
            "vocab_size, embedding_dim,",
        ),
    ],
    ids=["pooling", "branch_dropout", "lr_scales", "unknown"],
)
def test_a_single_launch_refuses_before_anything_is_written(
    tmp_path, monkeypatch, capfd, args, expected
):
    code, output = _run_main(tmp_path, [*SMALL, *args], monkeypatch, capfd)
    assert code == 2, output[-3000:]
    assert output.count("invalid model configuration") == 1 and expected in output, output[-3000:]
    assert "Traceback" not in output
    assert not (tmp_path / "outputs" / "mlflow").exists()  # the store is not even opened
    assert not (tmp_path / "outputs" / "data").exists()


def test_the_check_comes_before_the_imdb_cache(tmp_path, monkeypatch, capfd, fake_imdb_dir):
    args = ["model=bilstm_pool", f"data.archive={fake_imdb_dir}", "model.net.encoder.pooling=x"]
    code, output = _run_main(tmp_path, args, monkeypatch, capfd)
    assert code == 2 and "model.net.encoder.pooling='x' is not valid" in output, output[-3000:]
    assert not (tmp_path / "outputs" / "data").exists()  # nothing extracted, nothing encoded


def _sweep(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(root)
    env.pop("HYDRA_FULL_ERROR")  # the user's view: Hydra's short report of a failed job
    return subprocess.run(
        [sys.executable, "-m", "seqbench.train", "-m", *SMALL, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_in_a_grid_sweep_only_the_job_with_the_bad_value_fails(tmp_path):
    done = _sweep(tmp_path, "model.net.encoder.pooling=max,attention,mean")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]  # docs/exit-codes.md: some jobs failed
    assert "Traceback" not in output
    assert "Error executing job with overrides" in output and POOLING in output, output[-4000:]
    runs = _runs(tmp_path, "synthetic")
    assert sorted(r.data.params["model.net.encoder.pooling"] for r in runs) == ["max", "mean"]
    assert all(r.info.status == "FINISHED" for r in runs)  # the job after the bad one ran too


@pytest.mark.scenario
@pytest.mark.slow
def test_in_an_optuna_search_the_trial_fails_and_the_search_goes_on(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="checks", direction="maximize")
    for pooling in ("attention", "max"):  # the first trial gets the bad value, the second not
        study.enqueue_trial({"model.net.encoder.pooling": pooling})
    done = _sweep(
        tmp_path,
        "hydra/sweeper=seqbench_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=checks",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.trial_tags_key=logger.tags",
        "model.net.encoder.pooling=choice(attention,max)",
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    trials = optuna.load_study(study_name="checks", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert POOLING in trials[0].user_attrs[ERROR_ATTR]
    assert 0.0 <= trials[1].value <= 1.0
    (run,) = _runs(tmp_path, "synthetic")  # none for the failed trial
    assert run.data.tags["optuna_trial"] == "1" and run.info.status == "FINISHED"
