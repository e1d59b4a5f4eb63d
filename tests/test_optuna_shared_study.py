"""Several sweepers on one Optuna study: the trial budget, surplus trials, dead workers, the
heartbeat, seeds, storages and the pruner setting, on real SQLite and journal studies."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper import (
    INTERRUPTED_ATTR,
    OWNER_ATTR,
    PRUNER_ATTR,
    RETRY_OF_ATTR,
    SURPLUS_ATTR,
    OptunaSweeper,
    budget_used,
    count_finished,
    fail_dead_owners,
    set_aside_surplus,
    trial_id_of,
)
from hydra_plugins.seqbench_optuna_sweeper.pruning import build_pruner
from hydra_plugins.seqbench_optuna_sweeper.storage import open_storage
from hydra_plugins.seqbench_optuna_sweeper.trials import retry_later

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x": FloatDistribution(0.0, 1.0)}
TPE = {"_target_": "optuna.samplers.TPESampler", "seed": 7}


def _sweeper(url: str | None, n_trials: int = 4, **kwargs) -> OptunaSweeper:
    return OptunaSweeper(n_trials, 1, "maximize", url, "s", TPE, {}, None, **kwargs)


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def _owned(study, trial, pid: int) -> None:
    trial.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": pid, "token": "other"})


def test_the_budget_counts_what_ran_and_what_runs_in_live_sweepers(tmp_path):
    me = _sweeper(None).owner
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    study.tell(study.ask(SPACE), 0.5)  # 0 COMPLETE
    study.tell(study.ask(SPACE), state=TrialState.PRUNED)  # 1 PRUNED
    study.tell(study.ask(SPACE), state=TrialState.FAIL)  # 2 FAIL (a broken job): counts
    interrupted = study.ask(SPACE)  # 3 its sweeper died: does not count
    interrupted.set_user_attr(INTERRUPTED_ATTR, True)
    study.tell(interrupted, state=TrialState.FAIL)
    surplus = study.ask(SPACE)  # 4 surplus: does not count
    surplus.set_user_attr(SURPLUS_ATTR, True)
    study.tell(surplus, state=TrialState.FAIL)
    stale = study.ask(SPACE)  # 5 failed by a stale heartbeat; a queued retry points at it
    study.tell(stale, state=TrialState.FAIL)
    study.enqueue_trial({"x": 0.1}, user_attrs={RETRY_OF_ATTR: stale.number})  # 6 WAITING
    _owned(study, study.ask(SPACE), os.getppid())  # pops 6: RUNNING in a live sweeper, counts
    _owned(study, study.ask(SPACE), os.getppid())  # 7 RUNNING in a live sweeper: counts
    _owned(study, study.ask(SPACE), _dead_pid())  # 8 RUNNING, its sweeper is dead: does not

    trials = study.get_trials()
    assert trials[6].params == {"x": 0.1} and trials[6].state == TrialState.RUNNING
    assert count_finished(trials) == 3
    assert budget_used(trials, me) == 3 + 2  # + the two RUNNING trials of live sweepers
    assert budget_used(trials, me, before=3) == 3
    assert budget_used(trials, me, before=7) == 3 + 1  # trial 6 (the popped retry) runs


def test_a_trial_that_loses_the_race_for_the_last_place_is_surplus_and_gives_its_params_back(
    tmp_path,
):
    url = f"sqlite:///{tmp_path}/optuna.db"
    sweeper = _sweeper(url, n_trials=2)
    storage, study = sweeper._open_study()
    study.tell(study.ask(SPACE), 0.5)
    _owned(study, study.ask(SPACE), os.getppid())  # another live sweeper holds the last place
    assert sweeper.next_trial(storage, study, SPACE) is None  # full: nothing asked
    assert len(study.get_trials()) == 2

    # A race: this sweeper counted before the other asked; its own ask comes second.
    study.enqueue_trial({"x": 0.25}, user_attrs={RETRY_OF_ATTR: 99})
    late = study.ask()
    assert budget_used(study.get_trials(), sweeper.owner, before=late.number) >= 2
    set_aside_surplus(storage, study, late)
    trials = study.get_trials()
    assert trials[late.number].state == TrialState.FAIL
    assert trials[late.number].user_attrs[SURPLUS_ATTR] is True
    requeued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(requeued) == 1  # back in the queue
    assert requeued[0].system_attrs["fixed_params"] == {"x": 0.25}
    assert requeued[0].user_attrs[RETRY_OF_ATTR] == 99
    assert count_finished(trials) == 1


def test_sweepers_sharing_a_seeded_study_never_suggest_the_same_parameters(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    first, second = _sweeper(url, n_trials=6), _sweeper(url, n_trials=6)
    # Two sweeper processes: stand-in pids that live (in one process they would see each other's
    # trials as left by a dead sweeper whose pid this process reused).
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    first.owner = {**first.owner, "pid": os.getppid()}
    second.owner = {**second.owner, "pid": sleeper.pid}
    (storage_a, study_a), (storage_b, study_b) = first._open_study(), second._open_study()
    asked = []
    for _ in range(3):  # both start from the same study state, with the same seed
        asked.append(first.next_trial(storage_a, study_a, SPACE))
        asked.append(second.next_trial(storage_b, study_b, SPACE))
    values = [t.params["x"] for t in asked]
    assert len(set(values)) == 6, values
    assert [t.number for t in asked] == list(range(6))
    assert first.next_trial(storage_a, study_a, SPACE) is None  # six RUNNING in live sweepers
    sleeper.kill()
    sleeper.wait()

    again = _sweeper(f"sqlite:///{tmp_path}/again.db", n_trials=6)  # reproducible per number
    storage_c, study_c = again._open_study()
    assert again.next_trial(storage_c, study_c, SPACE).params["x"] == values[0]


def test_a_dead_sweepers_trial_is_failed_and_queued_once_however_many_look(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    one, two = _sweeper(url), _sweeper(url)
    storage, study = one._open_study()
    orphan = study.ask(SPACE)
    _owned(study, orphan, _dead_pid())
    assert fail_dead_owners(storage, study, one.owner) == [orphan.number]
    storage_two, study_two = two._open_study()
    assert fail_dead_owners(storage_two, study_two, two.owner) == []
    retry_later(study, study.get_trials()[orphan.number])  # e.g. the heartbeat callback too
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert trials[orphan.number].user_attrs[INTERRUPTED_ATTR] is True
    retries = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == orphan.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert retries[0].system_attrs["fixed_params"] == orphan.params
    assert count_finished(trials) == 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # this test asks by hand
def test_a_stale_heartbeat_fails_a_trial_of_another_host_and_queues_it_again(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    sweeper = _sweeper(url, heartbeat_interval=1, grace_period=1)
    storage, study = sweeper._open_study()
    elsewhere = study.ask(SPACE)
    elsewhere.set_user_attr(OWNER_ATTR, {"host": "node-7", "pid": 1, "token": "t"})
    storage.record_heartbeat(trial_id_of(storage, study, elsewhere.number))
    assert fail_dead_owners(storage, study, sweeper.owner) == []  # beating: left alone
    assert study.get_trials()[0].state == TrialState.RUNNING
    time.sleep(2.5)
    fail_dead_owners(storage, study, sweeper.owner)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert [t.user_attrs.get(RETRY_OF_ATTR) for t in trials[1:]] == [0]
    assert count_finished(trials) == 0  # the re-run will count, not the stale one


def test_the_pruner_is_checked_set_on_the_study_and_recorded_for_the_jobs(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    median = {"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 1}
    _, study = _sweeper(url, pruner=median)._open_study()
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert optuna.load_study(study_name="s", storage=url).user_attrs[PRUNER_ATTR] == median
    _sweeper(url, pruner=None)._open_study()  # a relaunch without pruning overwrites it
    assert optuna.load_study(study_name="s", storage=url).user_attrs[PRUNER_ATTR] is None

    for bad, message in [
        ({"_target_": "optuna.pruners.NoSuchPruner"}, "cannot build optuna.pruners.NoSuchPruner"),
        ({"_target_": "optuna.pruners.MedianPruner", "n_warmup": 1}, "cannot build"),
        ({"_target_": "optuna.samplers.RandomSampler"}, "is not an Optuna pruner"),
        ({"n_warmup_steps": 1}, "needs a _target_"),
    ]:
        with pytest.raises(ValueError, match=f"hydra.sweeper.pruner.*{message}"):
            build_pruner(bad)
    with pytest.raises(ValueError, match="pruner needs hydra.sweeper.storage"):
        _sweeper(None, pruner=median)._open_study()


def test_a_trial_its_job_pruned_is_counted_as_pruned_and_not_told_again(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    sweeper = _sweeper(url, pruner={"_target_": "optuna.pruners.MedianPruner"})
    storage, study = sweeper._open_study()
    trial = sweeper.next_trial(storage, study, SPACE)
    job_side = optuna.load_study(study_name="s", storage=open_storage(url))  # as the job does
    job_side.tell(trial.number, state=TrialState.PRUNED)
    done = JobReturn(status=JobStatus.COMPLETED, _return_value=0.7)
    assert sweeper._tell(storage, study, trial, done) == "pruned"
    assert study.get_trials()[0].state == TrialState.PRUNED
    assert count_finished(study.get_trials()) == 1


def test_a_journal_file_is_one_study_for_every_process_that_opens_it(tmp_path):
    url = f"journal://{tmp_path}/deep/optuna.journal"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    study.tell(study.ask(SPACE), 0.5)
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    assert [t.value for t in other.get_trials()] == [0.5]
    assert Path(f"{tmp_path}/deep/optuna.journal").is_file()
    assert isinstance(open_storage(url, heartbeat_interval=60), optuna.storages.JournalStorage)


def test_each_job_is_told_its_trial_in_overrides_that_parse_back(tmp_path):
    parser = OverridesParser.create()
    url = f"sqlite:///{tmp_path}/a folder/optuna.db"  # a space: quoted, still the same URL
    sweeper = _sweeper(url, pruner={"_target_": "optuna.pruners.MedianPruner"})
    storage, study = sweeper._open_study()
    trial = sweeper.next_trial(storage, study, SPACE)
    space = {"x": ("model.net.dropout", SPACE["x"])}
    overrides = sweeper._job_overrides(trial, space, ["seed=3"], parser, "s")
    parsed = {o.key_or_group: o.value() for o in parser.parse_overrides(overrides)}
    assert parsed["optuna_trial.storage"] == url
    assert parsed["optuna_trial.study"] == "s" and parsed["optuna_trial.number"] == trial.number
    assert parsed["model.net.dropout"] == trial.params["x"] and parsed["seed"] == 3
    in_memory = _sweeper(None)._job_overrides(trial, space, [], parser, "s")
    assert not [o for o in in_memory if "optuna_trial" in o]  # no storage: nothing to reach


POP = """
import json, sys, warnings
import optuna
from hydra_plugins.seqbench_optuna_sweeper.storage import open_storage
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="q", storage=open_storage(sys.argv[1]))
got = []
while "i" in (trial := study.ask()).user_attrs:
    got.append(trial.user_attrs["i"])
study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the queue is empty
print(json.dumps(got))
"""


@pytest.mark.scenario
def test_processes_popping_one_sqlite_queue_never_take_the_same_trial(tmp_path):
    """Without BEGIN IMMEDIATE, three processes popped 164 of 150 queued trials (14 twice)."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    for i in range(100):
        study.enqueue_trial({}, user_attrs={"i": i})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    pops = [
        subprocess.Popen([sys.executable, "-c", POP, url], stdout=subprocess.PIPE, env=env)
        for _ in range(3)
    ]
    taken = [i for p in pops for i in json.loads(p.communicate(timeout=300)[0])]
    assert all(p.returncode == 0 for p in pops)
    assert sorted(taken) == list(range(100))  # each queued trial popped exactly once


class _TimedLauncher(Launcher):
    """Runs no training: each trial's job takes ``seconds[number]`` and returns its number;
    records when each started and ended (a stand-in for joblib/SLURM, which run elsewhere)."""

    def __init__(self, seconds: dict[int, float]) -> None:
        self.seconds, self.started, self.ended = seconds, {}, {}

    def setup(self, **kwargs) -> None:  # pragma: no cover - not called
        pass

    def launch(self, job_overrides, initial_job_idx):
        (overrides,) = job_overrides
        self.started[initial_job_idx] = time.monotonic()
        time.sleep(self.seconds.get(initial_job_idx, 0.05))
        self.ended[initial_job_idx] = time.monotonic()
        return [JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=0.5)]


def test_a_free_slot_takes_the_next_trial_without_waiting_for_the_slowest(tmp_path):
    sweeper = _sweeper(f"sqlite:///{tmp_path}/optuna.db", n_trials=6)
    sweeper.n_jobs = 2
    sweeper.launcher = launcher = _TimedLauncher({0: 4.0})  # trial 0 is slow
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    sweeper.validate_batch_is_legal = lambda batch: None  # no Hydra app to compose against
    sweeper.sweep(["model.net.dropout=interval(0, 0.5)"])

    assert sorted(launcher.ended) == list(range(6))  # trial numbers are the job indices
    # With batches of two, trial 2 would wait for trial 0; here the free slot went on.
    during_0 = [n for n in range(1, 6) if launcher.ended[n] < launcher.ended[0]]
    assert during_0[:3] == [1, 2, 3], during_0
    trials = optuna.load_study(study_name="s", storage=sweeper.storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
