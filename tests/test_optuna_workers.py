"""Distributed searches for real: two `seqbench-train -m hparams_search=optuna` processes on one
study finish exactly n_trials, and a worker killed mid-trial (SIGKILL) and relaunched leaves
one re-run of its trial that continues the killed MLflow run. Real processes, real Optuna
studies (journal file, SQLite), real training on tiny synthetic data, a real MLflow store."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from helpers import cli_env, free_port, postgres_missing, search_cmd, tiny
from hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper import (
    INTERRUPTED_ATTR,
    OUTPUT_DIR_ATTR,
    OWNER_ATTR,
    PRUNER_ATTR,
    RETRY_OF_ATTR,
    SURPLUS_ATTR,
    count_finished,
)
from hydra_plugins.seqbench_optuna_sweeper.storage import open_storage

pytestmark = [pytest.mark.scenario, pytest.mark.slow]
STUDY = "shared"
N_TRIALS = 6
RESUME_COUNT_TAG = "seqbench.resume_count"
JOB_KEY_TAG = "seqbench.job_key"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _worker(root: Path, storage: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {**cli_env(root), **(env or {})}
    cmd = search_cmd(
        *tiny(epochs=2, console=True),
        "num_threads=1",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={STUDY}",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        *args,
    )
    log = open(root / f"worker-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait(workers: list[subprocess.Popen], root: Path) -> None:
    for worker in workers:
        try:
            worker.wait(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            raise
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(root.glob("worker-*.log")))
    assert all(w.returncode == 0 for w in workers), logs


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL on 127.0.0.1 (scripts/postgres_local.sh); yields its URI without the
    password, which the workers get as PGPASSWORD, as docs/search.md advises."""
    from test_team_server import SCRIPTS

    if reason := postgres_missing():
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="seqbench-optuna-pg-"))
    folder.chmod(0o755)  # the postgres user owns the cluster below it
    started = subprocess.run(
        [str(SCRIPTS / "postgres_local.sh"), "start", str(folder / "pg"), str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    uri = started.stdout.strip()
    password = uri.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    os.environ["PGPASSWORD"] = password  # this process reads the study too
    try:
        yield uri.replace(f":{password}@", "@")
    finally:
        os.environ.pop("PGPASSWORD", None)
        subprocess.run([str(SCRIPTS / "postgres_local.sh"), "stop", str(folder / "pg")], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=open_storage(storage)).get_trials()


def _runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("synthetic")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _check_study(trials: list, runs: list, launched: int) -> list:
    """Exactly N_TRIALS finished (COMPLETE, or PRUNED: the search's default MedianPruner may
    prune the sixth trial, 5 trials being its startup), no parameter set twice, and one
    FINISHED MLflow run (one job key) per finished trial (a pruned run ends FINISHED too);
    ``launched`` trials had a job (finished + interrupted)."""
    complete = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(complete) == N_TRIALS and count_finished(trials) == N_TRIALS
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == N_TRIALS  # no configuration ran twice
    ran = [
        t for t in trials if t.state != TrialState.WAITING and not t.user_attrs.get(SURPLUS_ATTR)
    ]
    assert len(ran) == launched
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == N_TRIALS
    assert len({r.data.tags[JOB_KEY_TAG] for r in runs}) == N_TRIALS  # one run per job key
    return complete


def test_two_workers_on_one_journal_study_finish_exactly_n_trials(tmp_path):
    storage = f"journal://{tmp_path}/outputs/mlflow/optuna.journal"
    workers = [_worker(tmp_path, storage), _worker(tmp_path, storage)]
    _wait(workers, tmp_path)

    trials, runs = _trials(storage), _runs(tmp_path)
    complete = _check_study(trials, runs, launched=N_TRIALS)
    assert len({t.user_attrs[OWNER_ATTR]["pid"] for t in complete}) == 2  # both workers worked
    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    assert study.user_attrs[PRUNER_ATTR] == {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 1,
    }
    by_trial = {int(r.data.tags["optuna_trial"]): r for r in runs}
    assert sorted(by_trial) == sorted(t.number for t in complete)
    for trial in complete:  # each job got its trial's identity
        # every finished trial names the job's folder, a pruned one too (the pruner may stop
        # the sixth): the job records it when it links its run, before it can prune
        output_dir = trial.user_attrs[OUTPUT_DIR_ATTR]
        assert output_dir == by_trial[trial.number].data.tags["output_dir"]
        job = OmegaConf.load(Path(output_dir) / ".hydra" / "config.yaml")
        assert job.optuna_trial.number == trial.number
        assert job.optuna_trial.study == STUDY and job.optuna_trial.storage == storage


def test_two_workers_on_one_postgresql_study_finish_exactly_n_trials(tmp_path, postgres):
    workers = [_worker(tmp_path, postgres), _worker(tmp_path, postgres)]
    _wait(workers, tmp_path)
    complete = _check_study(_trials(postgres), _runs(tmp_path), launched=N_TRIALS)
    assert len({t.user_attrs[OWNER_ATTR]["pid"] for t in complete}) == 2  # both workers worked


def test_a_worker_killed_mid_trial_and_relaunched_leaves_one_resumed_rerun(tmp_path):
    storage = f"sqlite:///{tmp_path}/outputs/mlflow/optuna.db"
    victim, other = _worker(tmp_path, storage), _worker(tmp_path, storage)
    killed_trial = killed_run = None
    deadline = time.monotonic() + 300
    while killed_run is None and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.3)
        try:
            mine = [
                t
                for t in _trials(storage)
                if t.state == TrialState.RUNNING
                and t.user_attrs.get(OWNER_ATTR, {}).get("pid") == victim.pid
            ]
            running = {int(r.data.tags.get("optuna_trial", -1)): r for r in _runs(tmp_path)}
        except Exception:  # the study or the experiment does not exist yet
            continue
        for trial in mine:
            run = running.get(trial.number)
            if run is not None and run.info.status == "RUNNING":
                killed_trial, killed_run = trial, run.info.run_id
    assert killed_run is not None, "the victim never had a trial RUNNING with its MLflow run"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    relaunched = _worker(tmp_path, storage)  # the same command again
    _wait([other, relaunched], tmp_path)

    trials, runs = _trials(storage), _runs(tmp_path)
    _check_study(trials, runs, launched=N_TRIALS + 1)
    assert trials[killed_trial.number].state == TrialState.FAIL
    assert trials[killed_trial.number].user_attrs[INTERRUPTED_ATTR] is True
    reruns = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == killed_trial.number]
    assert len(reruns) == 1 and reruns[0].state in (
        TrialState.COMPLETE,
        TrialState.PRUNED,
    )  # re-run once
    assert reruns[0].params == killed_trial.params
    resumed = next(r for r in runs if r.info.run_id == killed_run)  # the killed run, finished
    assert int(resumed.data.tags[RESUME_COUNT_TAG]) >= 1
    assert abs(resumed.data.metrics["val/acc_best"] - reruns[0].value) < 1e-6
