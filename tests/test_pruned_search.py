"""Pruning inside a real Hydra sweep: `seqbench-train -m hparams_search=optuna` with a
MedianPruner on tiny synthetic data prunes trials (PRUNED in the Optuna storage, tagged
`seqbench.pruned` in MLflow, left out of the report), and with `pruner=null` prunes none; a
pruned search SIGKILLed mid-trial and relaunched ends with exactly its 10 finished trials.
(Two workers on one study, killed and relaunched: tests/test_optuna_workers.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from helpers import cli_env, search_cmd, tiny, train_in_process
from hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper import (
    INTERRUPTED_ATTR,
    RETRY_OF_ATTR,
    count_finished,
)

pytestmark = [pytest.mark.scenario, pytest.mark.slow]


MEDIAN = ["hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0"]


def _storage(root) -> str:
    return f"sqlite:///{root}/optuna.db"


def _args(root, study: str, n_trials: int, pruner: list[str]) -> list[str]:
    """The search's overrides after ``-m hparams_search=optuna``."""
    return [
        *tiny(epochs=3),
        "num_threads=1",
        f"hydra.sweeper.storage={_storage(root)}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={n_trials}",
        # from hopeless to good rates, so some trials trail the median after one epoch
        "hydra.sweeper.params={model.optimizer.lr: 'tag(log, interval(1e-6, 3e-2))'}",
        f"logger.experiment_name={study}",
        *pruner,
    ]


def _search(root, study: str, n_trials: int, pruner: list[str]) -> optuna.Study:
    args = _args(root, study, n_trials, pruner)
    train_in_process(root, ["-m", "hparams_search=optuna", *args])
    return optuna.load_study(study_name=study, storage=_storage(root))


def test_a_median_pruned_search_prunes_and_a_null_pruner_prunes_nothing(tmp_path):
    study = _search(tmp_path, "pruned", 10, MEDIAN)
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert count_finished(trials) == 10
    assert pruned, [(t.number, t.state.name, t.intermediate_values) for t in trials]
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    for trial in pruned:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["seqbench.pruned"] == "true"
        assert "test/acc" not in run.data.metrics  # stopped at once, never tested
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(
        "seqbench.pruned" not in client.get_run(t.user_attrs["mlflow_run_id"]).data.tags
        for t in complete
    )

    study = _search(tmp_path, "unpruned", 4, ["hydra.sweeper.pruner=null"])
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] * 4


def test_a_pruned_search_killed_mid_trial_and_relaunched_finishes_exactly_10(tmp_path):
    """SIGKILL the sweeper while a trial runs, after some trials finished; the same command
    again: the killed trial is marked interrupted and re-run once, and the study ends with
    exactly 10 finished trials (COMPLETE or PRUNED), none more."""
    cmd = search_cmd(*_args(tmp_path, "killed", 10, MEDIAN))
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name="killed", storage=_storage(tmp_path)).trials
        except KeyError:  # the study does not exist yet
            continue
        # a trial whose job has trained an epoch (a trial asked but not yet suggested has
        # nothing to re-run, and the sweeper rightly queues nothing for it)
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        if count_finished(trials) >= 3 and running:
            killed = running[0].number
            os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert killed is not None, (tmp_path / "first.log").read_text()[-3000:]

    trials = _search(tmp_path, "killed", 10, MEDIAN).get_trials(deepcopy=False)
    assert count_finished(trials) == 10
    assert trials[killed].user_attrs[INTERRUPTED_ATTR] is True
    assert [t.state for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == killed] in (
        [TrialState.COMPLETE],
        [TrialState.PRUNED],
    )
    assert not [t for t in trials if t.state == TrialState.RUNNING]
