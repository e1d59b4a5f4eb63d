"""The `hparams_search=optuna` sweeper: search-space parsing, and real searches (real Hydra app,
real Optuna study in SQLite, real training on tiny synthetic data, real MLflow store)."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from helpers import cli_env, make_config, search_cmd, tiny
from hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper import (
    ERROR_ATTR,
    INTERRUPTED_ATTR,
    OWNER_ATTR,
    RESULTS_FILE,
    START_FROM_ATTR,
    OptunaSweeper,
    check_compatible,
    count_finished,
    format_value,
    parse_search_space,
    queue_start_from,
)
from seqbench.config.paths import config_dir

STUDY = "test-study"
SEARCHED = {
    "model.optimizer.lr",
    "model.net.encoder.hidden_size",
    "model.net.dropout",
    "model.net.encoder.embedding_dim",
    "data.batch_size",
}
TINY = tiny(epochs=1, console=True)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- search space ---------------------------------------------------------------------------


def test_search_space_maps_hydra_sweeps_to_optuna_distributions():
    parser = OverridesParser.create()
    params = {
        "lr": "tag(log, interval(1e-4, 1e-2))",
        "dropout": "interval(0, 0.5)",
        "batch": "choice(32, 64, 128)",
        "layers": "range(1, 10, 2)",
        "units": "tag(int, interval(8, 64))",
        "wd": "range(0.0, 0.5, 0.1)",
        "epochs": 5,
    }
    args = ["batch=16", "model=lstm,bilstm", "+extra=choice(a, 'b c', '32')"]
    space, fixed = parse_search_space(parser, params, args)

    assert space["lr"] == ("lr", FloatDistribution(1e-4, 1e-2, log=True))
    assert space["dropout"] == ("dropout", FloatDistribution(0.0, 0.5))
    assert space["layers"] == ("layers", IntDistribution(1, 9, step=2))
    assert space["units"] == ("units", IntDistribution(8, 64))
    assert space["wd"][1] == FloatDistribution(0.0, 0.4, step=0.1)
    assert space["model"] == ("model", CategoricalDistribution(["lstm", "bilstm"]))
    assert space["extra"] == ("+extra", CategoricalDistribution(["a", "b c", "32"]))
    assert "batch" not in space  # pinned on the command line: the command line wins
    assert fixed == ["epochs=5", "batch=16"]


@pytest.mark.parametrize(
    "bad", ["tag(log, choice(1, 2))", "choice([1, 2], [3])", "tag(grid, interval(0, 1))"]
)
def test_search_space_rejects_what_optuna_cannot_sample(bad):
    with pytest.raises(ValueError):
        parse_search_space(OverridesParser.create(), {"x": bad}, [])


@pytest.mark.parametrize(
    "value", [32, 1e-4, 0.1, True, None, "lstm", "32", "true", "b c", "it's", "a=b,c"]
)
def test_trial_values_round_trip_through_the_override_grammar(value):
    parser = OverridesParser.create()
    parsed = parser.parse_override(f"key={format_value(value, parser)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_a_search_space_change_the_study_cannot_store_is_refused():
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 1e-3, "bs": 32},
            distributions={
                "lr": FloatDistribution(1e-4, 1e-2, log=True),
                "bs": CategoricalDistribution([32, 64]),
            },
            value=0.5,
        )
    )
    trials = study.get_trials()
    check_compatible(
        trials, {"lr": FloatDistribution(1e-5, 1e-1, log=True), "new": IntDistribution(1, 3)}, "s"
    )
    for changed in (
        {"lr": FloatDistribution(1e-4, 1e-2)},
        {"bs": CategoricalDistribution([32, 64, 128])},
        {"bs": IntDistribution(32, 64)},
    ):
        with pytest.raises(ValueError, match="does not fit study 's'"):
            check_compatible(trials, changed, "s")


def test_interrupted_trials_do_not_count_towards_n_trials():
    study = optuna.create_study()
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=TrialState.FAIL)
    interrupted = study.ask()
    interrupted.set_user_attr(INTERRUPTED_ATTR, True)
    study.tell(interrupted, state=TrialState.FAIL)
    study.ask()  # still running
    assert count_finished(study.get_trials()) == 2


def test_only_a_provably_dead_sweeper_on_this_host_loses_its_running_trials():
    sweeper = OptunaSweeper(1, 1, "maximize", None, None, None, {}, None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    assert sweeper._owner_is_gone({"host": host, "pid": dead.pid, "token": "old"})
    assert sweeper._owner_is_gone({"host": host, "pid": os.getpid(), "token": "old"})  # pid reused
    assert not sweeper._owner_is_gone({"host": host, "pid": os.getppid(), "token": "other"})
    assert not sweeper._owner_is_gone({"host": host + "-elsewhere", "pid": dead.pid, "token": "x"})
    assert not sweeper._owner_is_gone(None)


def test_hparams_search_selects_the_plugin_and_plain_multirun_keeps_the_basic_sweeper(tmp_path):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        basic = compose("train", overrides=["model=bilstm"], return_hydra_config=True)
        search = compose(
            "train", overrides=["hparams_search=optuna", "model=bilstm"], return_hydra_config=True
        )
    assert basic.hydra.sweeper._target_.endswith("BasicSweeper")
    sweeper = search.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert set(sweeper.params) == SEARCHED
    assert sweeper.direction == "maximize" and search.optimized_metric == "val/acc_best"
    assert sweeper.trial_tags_key == "logger.tags"
    assert search.model.arch == "bilstm"  # the search leaves the model choice alone
    # the searched keys exist in the composed training config
    cfg = make_config(tmp_path, ["model=bilstm"])
    for key in SEARCHED:
        assert OmegaConf.select(cfg, key) is not None, key


# -- real searches --------------------------------------------------------------------------


def _search(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = search_cmd(*TINY, f"hydra.sweeper.study_name={STUDY}", *args)
    env = cli_env(root)
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _storage(root: Path) -> str:
    return f"sqlite:///{root}/outputs/mlflow/optuna.db"


def _load_trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=_storage(root)).get_trials()


def test_start_from_is_queued_once_before_any_sampled_trial_and_checked():
    space = {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "batch": CategoricalDistribution([32, 64]),
        "dropout": FloatDistribution(0.1, 0.6),
    }
    study = optuna.create_study(direction="maximize")
    queue_start_from(study, [{"lr": 3e-3, "batch": 64}], space)
    first = study.ask(space)
    assert first.params["lr"] == 3e-3 and first.params["batch"] == 64  # dropout: sampled
    assert first.user_attrs[START_FROM_ATTR] == 0
    study.tell(first, 0.5)
    queue_start_from(study, [{"lr": 3e-3, "batch": 64}], space)  # a relaunch
    assert not study.get_trials(states=(TrialState.WAITING,))  # not queued twice

    for bad, message in [
        ({"momentum": 0.9}, r"sets \['momentum'\], which the search space does not have"),
        ({"lr": 0.5}, r"lr=0.5 is outside FloatDistribution"),
        ({"batch": 128}, r"batch=128 is outside CategoricalDistribution"),
    ]:
        with pytest.raises(ValueError, match=message):
            queue_start_from(optuna.create_study(), [bad], space)


@pytest.mark.slow
def test_search_runs_trials_tracks_them_and_resumes_to_n_trials_in_total(tmp_path):
    first = _search(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.start_from=[{data.batch_size:32,model.optimizer.lr:0.003}]",
    )
    assert first.returncode == 0, first.stderr[-4000:]
    assert [t.state for t in _load_trials(tmp_path)] == [TrialState.COMPLETE] * 2
    started = _load_trials(tmp_path)[0]  # the start_from configuration ran first
    assert started.params["data.batch_size"] == 32 and started.params["model.optimizer.lr"] == 0.003

    second = _search(tmp_path, "hydra.sweeper.n_trials=3")  # same storage and study: top up to 3
    assert second.returncode == 0, second.stderr[-4000:]
    trials = _load_trials(tmp_path)
    assert [t.number for t in trials] == [0, 1, 2]  # 3 in total, not 2 + 3
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        assert 0.0 <= trial.value <= 1.0
        assert set(trial.params) == SEARCHED
        assert 1e-4 <= trial.params["model.optimizer.lr"] <= 1e-2
        assert trial.params["data.batch_size"] in (32, 64, 128)
        assert Path(trial.user_attrs["seqbench.output_dir"]).is_dir()
        job = OmegaConf.load(Path(trial.user_attrs["seqbench.output_dir"]) / ".hydra/config.yaml")
        assert job.optuna_trial.number == trial.number  # the job can reach its trial
        assert job.optuna_trial.study == STUDY and job.optuna_trial.storage == _storage(tmp_path)

    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    by_trial = {int(r.data.tags["optuna_trial"]): r for r in runs}
    assert sorted(by_trial) == [0, 1, 2]
    for number, run in by_trial.items():
        assert run.data.tags["optuna_study"] == STUDY
        assert math.isclose(run.data.metrics["val/acc_best"], trials[number].value, rel_tol=1e-6)
        assert run.data.params["data.batch_size"] == str(trials[number].params["data.batch_size"])
        assert run.data.params["model.net.encoder.hidden_size"] == str(
            trials[number].params["model.net.encoder.hidden_size"]
        )

    results = sorted((tmp_path / "outputs" / "multirun").glob(f"*/{RESULTS_FILE}"))
    assert len(results) == 2  # one sweep directory per launch
    latest = OmegaConf.load(results[-1])
    best = max(trials, key=lambda t: t.value)
    assert latest.study_name == STUDY and latest.n_finished == 3
    assert latest.best_value == best.value and set(latest.best_params) == SEARCHED


@pytest.mark.scenario
@pytest.mark.slow
def test_failed_jobs_and_trials_of_a_killed_sweeper(tmp_path):
    # A study as a killed sweeper leaves it: trial 0 RUNNING, owned by a process that is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "outputs" / "mlflow").mkdir(parents=True)
    study = optuna.create_study(storage=_storage(tmp_path), study_name=STUDY, direction="maximize")
    stale = study.ask()
    stale.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": dead.pid, "token": "old"})
    # The next two trials are prescribed: the first job raises (dropout 2.0), the second trains.
    study.enqueue_trial({"model.net.dropout": 2.0})
    study.enqueue_trial({"model.net.dropout": 0.1})

    done = _search(tmp_path, "hydra.sweeper.n_trials=2", "model.net.dropout=choice(2.0, 0.1)")
    assert done.returncode == 0, done.stderr[-4000:]
    trials = _load_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs[INTERRUPTED_ATTR] is True  # not counted: two new trials ran
    assert "dropout probability" in trials[1].user_attrs[ERROR_ATTR]
    assert (
        trials[1].params["model.net.dropout"] == 2.0
        and trials[2].params["model.net.dropout"] == 0.1
    )
    assert 0.0 <= trials[2].value <= 1.0

    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    # The refused dropout is caught before its run exists (tests/test_model_checks.py).
    assert {r.data.tags["optuna_trial"]: r.info.status for r in runs} == {"2": "FINISHED"}

    # The YAML's dropout is an interval; this study stores it as a choice: refused up front.
    refused = _search(tmp_path, "hydra.sweeper.n_trials=3")
    assert refused.returncode != 0
    assert "does not fit study" in refused.stderr and "model.net.dropout" in refused.stderr
    assert len(_load_trials(tmp_path)) == 3  # nothing asked, nothing left RUNNING

    # A launch whose every trial fails exits non-zero (a metric the app never logs -> None).
    optuna.load_study(study_name=STUDY, storage=_storage(tmp_path)).enqueue_trial(
        {"model.net.dropout": 0.1}
    )
    broken = _search(
        tmp_path,
        "hydra.sweeper.n_trials=3",
        "model.net.dropout=choice(2.0, 0.1)",
        "optimized_metric=val/missing",
    )
    assert broken.returncode != 0
    assert "all 1 trials of this sweep failed" in broken.stderr
    trials = _load_trials(tmp_path)
    assert len(trials) == 4 and trials[-1].state == TrialState.FAIL
    assert "None" in trials[-1].user_attrs[ERROR_ATTR]
