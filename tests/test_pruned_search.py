"""Pruning inside a real Hydra sweep: `seqbench-train -m hparams_search=optuna` with a
MedianPruner on tiny synthetic data prunes trials (PRUNED in the Optuna storage, tagged
`seqbench.pruned` in MLflow, left out of the report), and with `pruner=null` prunes none.
(Killed and relaunched searches are tests/test_optuna_workers.py.)"""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from helpers import tiny, train_in_process
from hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper import count_finished

pytestmark = [pytest.mark.scenario, pytest.mark.slow]


def _search(root, study: str, n_trials: int, pruner: list[str]) -> optuna.Study:
    storage = f"sqlite:///{root}/optuna.db"
    train_in_process(
        root,
        [
            "-m",
            "hparams_search=optuna",
            *tiny(epochs=3),
            "num_threads=1",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweeper.study_name={study}",
            f"hydra.sweeper.n_trials={n_trials}",
            # from hopeless to good rates, so some trials trail the median after one epoch
            "hydra.sweeper.params={model.optimizer.lr: 'tag(log, interval(1e-6, 3e-2))'}",
            f"logger.experiment_name={study}",
            *pruner,
        ],
    )
    return optuna.load_study(study_name=study, storage=storage)


def test_a_median_pruned_search_prunes_and_a_null_pruner_prunes_nothing(tmp_path):
    study = _search(
        tmp_path,
        "pruned",
        10,
        [
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.pruner.n_warmup_steps=0",
        ],
    )
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
