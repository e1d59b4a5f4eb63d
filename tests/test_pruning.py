"""The job's side of Optuna pruning, for real: a real Optuna study in SQLite, real tiny training
runs that get the three overrides the sweeper passes (``++optuna_trial.storage/study/number``),
a real MLflow store read back through ``MlflowClient``, and ``seqbench-report`` on it.

One module-scoped store: study ``pruned`` holds three COMPLETE trials far better than anything a
job with a tiny learning rate reaches, and a ``MedianPruner`` that prunes from the first epoch;
its fourth trial is trained (and pruned), then the same job is launched again for a fifth trial
(a relaunch: skipped, never resumed). Study ``plain`` has no pruner: its trial is trained to
the end and only linked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState, create_trial

from helpers import REPO, free_port, make_config, postgres_missing, tiny
from seqbench.config.store import redact_uri
from seqbench.config.validation import ConfigError, check_config
from seqbench.report import main
from seqbench.run.lifecycle import RunLifecycle
from seqbench.run.optuna_trial import (
    EXPERIMENT_ID_ATTR,
    OUTPUT_DIR_ATTR,
    PRUNED_EPOCH_ATTR,
    PRUNED_EPOCH_TAG,
    PRUNED_TAG,
    PRUNER_ATTR,
    RUN_ID_ATTR,
    TrialUnavailable,
)
from seqbench.train import train
from seqbench.training.fit import FitOutcome
from test_team_server import REQUIRE_POSTGRES

EXPERIMENT = "pruning"
EPOCHS = 3
MEDIAN = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 0, "n_warmup_steps": 0}
# learns nothing in 3 epochs (validation accuracy near chance), far below the trials' 0.99
BAD = ["model.optimizer.lr=1e-7", "seed=5"]

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow


def _trial_overrides(storage: str, study: str, number: int) -> list[str]:
    return [
        f"++optuna_trial.storage={storage}",
        f"++optuna_trial.study={study}",
        f"++optuna_trial.number={number}",
    ]


def _job(root, name: str, overrides: list[str]):
    cfg = make_config(
        root,
        [
            *tiny(epochs=EPOCHS),
            f"paths.output_dir={root}/outputs/{name}",
            f"logger.experiment_name={EXPERIMENT}",
            *overrides,
        ],
    )
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("pruning")
    storage = f"sqlite:///{root}/optuna.db"
    pruned = optuna.create_study(storage=storage, study_name="pruned", direction="maximize")
    for _ in range(3):
        pruned.add_trial(
            create_trial(
                value=0.99, intermediate_values={e: 0.99 for e in range(EPOCHS)}, params={}
            )
        )
    pruned.set_user_attr(PRUNER_ATTR, MEDIAN)
    number = pruned.ask().number
    cfg, result = _job(root, "pruned", [*BAD, *_trial_overrides(storage, "pruned", number)])
    again = pruned.ask().number  # the same job for another trial: a relaunch, a repeated sample
    _, relaunched = _job(root, "again", [*BAD, *_trial_overrides(storage, "pruned", again)])

    plain = optuna.create_study(storage=storage, study_name="plain", direction="maximize")
    plain_number = plain.ask().number
    _, plain_result = _job(root, "plain", _trial_overrides(storage, "plain", plain_number))
    return {
        "root": root,
        "storage": storage,
        "client": MlflowClient(cfg.logger.tracking_uri),
        "pruned": (number, result),
        "again": (again, relaunched),
        "plain": (plain_number, plain_result),
    }


def _trial(store, study: str, number: int):
    return optuna.load_study(study_name=study, storage=store["storage"]).trials[number]


def test_a_pruned_job_stops_at_once_and_says_so_in_optuna_and_mlflow(store):
    number, result = store["pruned"]
    trial = _trial(store, "pruned", number)
    assert trial.state == TrialState.PRUNED  # the job told Optuna itself
    assert trial.user_attrs[PRUNED_EPOCH_ATTR] == 0  # pruned after its first epoch
    assert list(trial.intermediate_values) == [0]
    assert trial.intermediate_values[0] == pytest.approx(result.metrics["val/acc_best"])
    assert trial.value == pytest.approx(result.metrics["val/acc_best"])  # the last reported one
    assert trial.user_attrs[RUN_ID_ATTR] == result.run_id
    run = store["client"].get_run(result.run_id)
    assert trial.user_attrs[EXPERIMENT_ID_ATTR] == run.info.experiment_id
    # the sweeper tells no pruned trial, so the job names its folder, as for a completed one
    assert trial.user_attrs[OUTPUT_DIR_ATTR] == f"{store['root']}/outputs/pruned"
    assert run.info.status == "FINISHED"
    assert run.data.tags[PRUNED_TAG] == "true" and run.data.tags[PRUNED_EPOCH_TAG] == "0"
    assert not [k for k in run.data.metrics if k.startswith("test/")]  # no test stage
    assert len(store["client"].get_metric_history(result.run_id, "val/acc")) == 1  # 1 epoch
    assert not store["client"].list_artifacts(result.run_id, "model")  # no model kept


def test_a_relaunch_skips_the_pruned_run_and_prunes_its_new_trial(store):
    number, result = store["pruned"]
    again, relaunched = store["again"]
    assert relaunched.skipped and relaunched.run_id == result.run_id  # never resumed
    runs = store["client"].search_runs(
        [store["client"].get_run(result.run_id).info.experiment_id],
        f"tags.`{PRUNED_TAG}` = 'true'",
    )
    assert [r.info.run_id for r in runs] == [result.run_id]
    trial = _trial(store, "pruned", again)
    assert trial.state == TrialState.PRUNED and trial.user_attrs[RUN_ID_ATTR] == result.run_id


def test_without_a_pruner_the_job_trains_to_the_end_and_only_links_its_run(store):
    number, result = store["plain"]
    trial = _trial(store, "plain", number)
    assert trial.state == TrialState.RUNNING  # COMPLETE is the sweeper's to tell
    assert trial.intermediate_values == {}  # nothing reported
    assert trial.user_attrs[RUN_ID_ATTR] == result.run_id
    run = store["client"].get_run(result.run_id)
    assert run.info.status == "FINISHED" and PRUNED_TAG not in run.data.tags
    assert "test/acc" in run.data.metrics
    assert len(store["client"].get_metric_history(result.run_id, "val/acc")) == EPOCHS
    assert run.data.params["optuna_trial.storage"] == store["storage"]


def test_an_unreachable_storage_fails_before_any_run_and_never_shows_its_password(store, tmp_path):
    secret = "s3cret-pw"
    cfg = make_config(
        tmp_path,
        [
            *tiny(epochs=1),
            f"logger.tracking_uri={store['client'].tracking_uri}",
            "logger.experiment_name=unreachable",
            *_trial_overrides("postgresql://alice:" + secret + "@127.0.0.1:9/optuna", "s", 0),
        ],
    )
    with pytest.raises(TrialUnavailable) as caught, RunLifecycle(cfg, multirun=False) as run:
        run.plan()
    assert secret not in str(caught.value) and "postgresql://127.0.0.1:9/optuna" in str(
        caught.value
    )
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name("unreachable")
    assert not client.search_runs([experiment.experiment_id])  # nothing written


def test_an_incomplete_trial_node_is_refused(tmp_path):
    cfg = make_config(tmp_path, [*tiny(epochs=1), "++optuna_trial.study=s"])
    with pytest.raises(ConfigError, match="optuna_trial lacks storage, number"):
        check_config(cfg)


def test_the_report_leaves_pruned_runs_out_and_says_how_many(store, tmp_path, capsys):
    pruned_id = store["pruned"][1].run_id
    args = ["--experiment", EXPERIMENT, "--tracking-uri", store["client"].tracking_uri]
    args += ["--no-summary-run", "--out", str(tmp_path / "report")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "1 finished run of" in out and pruned_id not in out
    assert "1 run pruned by Optuna left out" in out and "1 run pruned by Optuna left out" in err

    assert main([*args, "--include-pruned"]) == 0
    out, err = capsys.readouterr()
    assert f"({pruned_id}): FINISHED, pruned by Optuna after epoch 0" in out
    assert "pruned by Optuna left out" not in out + err


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on a free loopback port (scripts/postgres_local.sh); its URI, with
    the password in it as a team's Optuna storage has it."""
    if reason := postgres_missing():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required here (SEQBENCH_REQUIRE_POSTGRES=1): {reason}")
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="seqbench-pruning-pg-"))
    folder.chmod(0o755)  # the postgres user owns the cluster below it
    script = str(REPO / "scripts" / "postgres_local.sh")
    started = subprocess.run(
        [script, "start", str(folder / "pg"), str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "stop", str(folder / "pg")], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_postgres_storage_links_the_run_and_its_password_never_reaches_mlflow(
    postgres, store, tmp_path
):
    password = postgres.split("@")[0].rsplit(":", 1)[1]
    study = optuna.create_study(storage=postgres, study_name="team", direction="maximize")
    number = study.ask().number
    cfg = make_config(
        tmp_path,
        [
            *tiny(epochs=1),
            f"logger.tracking_uri={store['client'].tracking_uri}",
            "logger.experiment_name=postgres",
            "+logger.log_model=false",
            *_trial_overrides(postgres, "team", number),
        ],
    )
    with RunLifecycle(cfg, multirun=False) as run:  # the trainer's part replaced by its outcome
        assert run.plan()
        run.start("fp", {})
        outcome = FitOutcome({"val/acc_best": 0.5}, 1.0, "", tested=False)
        run.log_result(outcome, task=None, datamodule=None)
    client = store["client"]
    recorded = client.get_run(run.run_id)
    config = Path(client.download_artifacts(run.run_id, "config/config.yaml", str(tmp_path)))
    written = json.dumps([recorded.data.params, recorded.data.tags]) + config.read_text()
    assert password and password not in written
    assert recorded.data.params["optuna_trial.storage"] == redact_uri(postgres)
    assert "@" not in redact_uri(postgres)
    linked = optuna.load_study(study_name="team", storage=postgres).trials[number]
    assert linked.user_attrs[RUN_ID_ATTR] == run.run_id
