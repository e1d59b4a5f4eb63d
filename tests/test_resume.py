"""Interruption as a non-event: real training processes killed with real signals, relaunched
with the same command, read back from a real SQLite MLflow store (no mocks anywhere)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import (
    SLOW_SYNTHETIC,
    experiment_runs,
    kill_a_joblib_job,
    make_config,
    metric_points,
    run_cli_to_end,
    run_main,
    start_cli,
    store,
    wait_until,
)
from seqbench.report import ReportError, build_table
from seqbench.run.heartbeat import HOST_TAG, process_start_time
from seqbench.run.jobs import JOB_KEY_TAG, job_key, params_diff, result_params
from seqbench.run.resume import RESUME_COUNT_TAG
from seqbench.serving import predict

pytestmark = pytest.mark.slow


def _runs_with_epochs(root: Path, experiment: str, epochs: int, status: str = "RUNNING"):
    """Runs in ``status`` whose ``train/loss`` (logged last in an epoch) has ``epochs`` points."""
    return [
        r
        for r in experiment_runs(root, experiment)
        if r.info.status == status
        and len(metric_points(root, r.info.run_id, "train/loss")) >= epochs
    ]


def _inside_next_epoch(root: Path, run) -> None:
    """Sleep a third of an epoch, so a signal lands inside the epoch after the last logged one."""
    seconds = metric_points(root, run.info.run_id, "perf/epoch_seconds")[0].value
    time.sleep(max(0.2, seconds / 3))


def _kill(proc, sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=120)


def test_job_key_ignores_where_and_how_fast_but_not_what(tmp_path):
    base = make_config(tmp_path / "a", ["data=synthetic"])
    moved = make_config(
        tmp_path / "b", ["data=synthetic", "num_threads=1", "batch_split=1", "heartbeat.interval=5"]
    )
    other = make_config(tmp_path / "a", ["data=synthetic", "model.optimizer.lr=0.002"])
    assert job_key(base) == job_key(moved)  # other folders, threads, heartbeat: same job
    assert job_key(base) != job_key(other)
    assert params_diff(result_params(other), result_params(base)) == [
        "model.optimizer.lr: 0.001 (run) -> 0.002 (now)"
    ]


def test_sigkill_in_the_third_of_four_epochs_then_the_same_command_finishes_that_run(
    tmp_path, monkeypatch, capfd
):
    """SIGKILL leaves a RUNNING run that MLflow alone would keep forever. The report calls it
    stale (its process is gone); had it been launched on another host, only its heartbeat could
    tell, and a relaunch is refused while the heartbeat is fresh. Then the same command resumes
    it on a machine without the first launch's output folder (checkpoints from MLflow). The
    killed launch is a process; the two relaunches run the command in this process."""
    args = [*SLOW_SYNTHETIC, "trainer.max_epochs=4", "logger.experiment_name=kill9"]
    proc = start_cli(args, tmp_path)
    try:
        (run,) = wait_until(lambda: _runs_with_epochs(tmp_path, "kill9", 2), proc, what="2 epochs")
        _inside_next_epoch(tmp_path, run)
    finally:
        _kill(proc)
    (ghost,) = experiment_runs(tmp_path, "kill9")
    assert ghost.info.status == "RUNNING"  # what MLflow alone would keep forever
    client = store(tmp_path)

    def report_says() -> str:
        """What ``seqbench-report`` says of the ghost (it is the only run, so no table)."""
        with pytest.raises(ReportError) as refused:
            build_table(client, "kill9", stale_after=3)
        return str(refused.value)

    # Same host: the process is gone, so the run is stale at once.
    assert f"({run.info.run_id}): RUNNING, stale: its process" in report_says()
    # Another host (we rewrite the tag a remote launch would have written): only the heartbeat
    # can tell. Fresh, the run counts as running, and a relaunch is refused (default limit
    # 900 s); after the limit it is stale.
    client.set_tag(run.info.run_id, HOST_TAG, "another-host")
    client.set_tag(run.info.run_id, "seqbench.run.heartbeat", f"{time.time():.0f}")
    assert "still running (heartbeat on another-host" in report_says()
    refused, log = run_main(tmp_path, args, monkeypatch, capfd)
    assert refused == 2 and "already running" in log
    wait_until(lambda: "stale: no heartbeat on another-host" in report_says(), None, 30, "stale")
    client.set_tag(run.info.run_id, HOST_TAG, ghost.data.tags[HOST_TAG])  # back to this host
    # As if relaunched on another machine: the first launch's output folder is not there, so
    # last.ckpt and best.ckpt come from the run's MLflow artifacts.
    shutil.rmtree(ghost.data.tags["output_dir"])

    rc, log = run_main(tmp_path, args, monkeypatch, capfd)
    assert rc == 0, log[-3000:]
    assert f"resuming MLflow run {run.info.run_id}" in log and "process" in log  # found dead
    assert "checkpoints/downloaded/last.ckpt" in log
    (after,) = experiment_runs(tmp_path, "kill9")  # the same run, no second one
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags[RESUME_COUNT_TAG] == "1"
    val = metric_points(tmp_path, run.info.run_id, "val/acc")
    steps = [m.step for m in val]
    assert len(val) == 4 and len(set(steps)) == 4
    epoch_at = {m.step: m.value for m in metric_points(tmp_path, run.info.run_id, "epoch")}
    assert sorted(epoch_at[s] for s in steps) == [0, 1, 2, 3]  # 4 distinct epochs
    # At most one epoch repeated: it continued from a checkpoint at or after the end of epoch 2.
    assert int(after.data.tags["seqbench.resumed_from_step"]) >= steps[1] + 1
    assert "test/acc" in after.data.metrics
    # params logged once, by the first launch, and never re-logged with other values
    assert after.data.params["trainer.max_epochs"] == "4"


@pytest.mark.scenario
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_checkpoints_marks_killed_and_the_next_launch_resumes_exactly(
    tmp_path, sig, capsys
):
    args = [
        *SLOW_SYNTHETIC,
        "model=lstm_dropout",
        "trainer.max_epochs=3",
        "logger.experiment_name=signals",
    ]
    proc = start_cli(args, tmp_path)
    try:
        (run,) = wait_until(lambda: _runs_with_epochs(tmp_path, "signals", 1), proc, what="epoch 1")
        _inside_next_epoch(tmp_path, run)
    finally:
        _kill(proc, sig)
    assert proc.returncode == 128 + sig  # a clean exit, as a shell reports the signal
    client = store(tmp_path)
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED"
    assert signal.Signals(sig).name in killed.data.tags["seqbench.error"]
    assert (Path(killed.data.tags["output_dir"]) / "checkpoints" / "last.ckpt").is_file()
    assert "resume/last.ckpt" in [a.path for a in client.list_artifacts(run.info.run_id, "resume")]

    rc, log = run_cli_to_end(args, tmp_path)
    assert rc == 0, log[-3000:]
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags[RESUME_COUNT_TAG] == "1"
    assert len(experiment_runs(tmp_path, "signals")) == 1
    if sig != signal.SIGTERM:
        return
    # The mid-epoch checkpoint holds the sampler position and the random state, so the resumed
    # run equals an uninterrupted one with the same seed (dropout included).
    rc, log = run_cli_to_end([*args, "resume=never"], tmp_path)
    assert rc == 0, log[-3000:]
    (fresh,) = [r for r in experiment_runs(tmp_path, "signals") if r.info.run_id != run.info.run_id]
    for key in ("val/acc", "val/loss"):
        assert [m.value for m in metric_points(tmp_path, run.info.run_id, key)] == [
            m.value for m in metric_points(tmp_path, fresh.info.run_id, key)
        ]
    assert resumed.data.metrics["test/loss"] == fresh.data.metrics["test/loss"]
    # Features compose: the resumed run logged a servable model, which scores like the other.
    texts = ["5 3 9 4 7 8", "4 6 6 3 9 12 12 4"]
    scores = {}
    for run_id in (run.info.run_id, fresh.info.run_id):
        code = predict.main(
            ["--tracking-uri", client.tracking_uri, "--model", run_id, "--format", "jsonl", *texts]
        )
        out = capsys.readouterr().out
        assert code == 0
        scores[run_id] = [json.loads(line)["probabilities"] for line in out.splitlines()]
    assert scores[run.info.run_id] == scores[fresh.info.run_id]


GRID = ["-m", "model=lstm,cnn_lstm", "seed=1,2", "trainer.max_epochs=2", *SLOW_SYNTHETIC]


@pytest.mark.scenario
def test_a_grid_sweep_killed_in_its_third_job_relaunches_only_what_is_missing(tmp_path):
    args = [*GRID, "data.n_train=3000", "logger.experiment_name=grid"]
    proc = start_cli(args, tmp_path)
    try:
        wait_until(
            lambda: (
                len([r for r in experiment_runs(tmp_path, "grid") if r.info.status == "FINISHED"])
                == 2
                and _runs_with_epochs(tmp_path, "grid", 1)
            ),
            proc,
            timeout=600,
            what="job 3 in training",
        )
    finally:
        _kill(proc)
    before = {r.info.run_id: r for r in experiment_runs(tmp_path, "grid")}
    finished = {i: r.info.end_time for i, r in before.items() if r.info.status == "FINISHED"}
    assert len(before) == 3 and len(finished) == 2

    rc, log = run_cli_to_end(args, tmp_path)
    assert rc == 0, log[-3000:]
    assert log.count("skip ") == 2  # one line per finished job
    after = experiment_runs(tmp_path, "grid")
    assert len(after) == 4 and {r.info.status for r in after} == {"FINISHED"}
    for run in after:
        if run.info.run_id in finished:  # not retrained: same run, same end time
            assert run.info.end_time == finished[run.info.run_id]
    assert set(before) <= {r.info.run_id for r in after}  # the killed job kept its run
    assert len({r.data.tags[JOB_KEY_TAG] for r in after}) == 4
    # the relaunched sweep owns all four runs, so --latest-sweep tables see the whole grid
    assert len({r.data.tags["sweep_id"] for r in after}) == 1
    assert build_table(store(tmp_path), "grid", latest_sweep=True).table["n"].sum() == 4


@pytest.mark.scenario
def test_a_joblib_sweep_with_one_job_killed_relaunches_only_what_is_missing(tmp_path):
    args = [
        *GRID,
        "data.n_train=3000",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "logger.experiment_name=parallel",
    ]
    victim = kill_a_joblib_job(
        start_cli(args, tmp_path), lambda: _runs_with_epochs(tmp_path, "parallel", 1)
    )
    before = {r.info.run_id: r for r in experiment_runs(tmp_path, "parallel")}
    finished = {i: r.info.end_time for i, r in before.items() if r.info.status == "FINISHED"}

    rc, log = run_cli_to_end(args, tmp_path)
    assert rc == 0, log[-3000:]
    after = experiment_runs(tmp_path, "parallel")
    assert len(after) == 4 and {r.info.status for r in after} == {"FINISHED"}
    assert victim.info.run_id in {r.info.run_id for r in after}
    assert int(store(tmp_path).get_run(victim.info.run_id).data.tags[RESUME_COUNT_TAG]) >= 1
    for run in after:
        if run.info.run_id in finished:
            assert run.info.end_time == finished[run.info.run_id]


@pytest.mark.scenario
def test_an_optuna_search_interrupted_in_trial_2_ends_with_3_complete_trials(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna",
        *SLOW_SYNTHETIC,
        "data.n_train=3000",
        "trainer.max_epochs=2",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.study_name=resume",
        "model.net.encoder.hidden_size=32",
        "model.net.encoder.embedding_dim=16",
        "data.batch_size=64",
    ]
    proc = start_cli(args, tmp_path)
    try:
        wait_until(
            lambda: [
                r
                for r in _runs_with_epochs(tmp_path, "synthetic", 1)
                if r.data.tags.get("optuna_trial") == "1"
            ],
            proc,
            timeout=600,
            what="trial 2 in training",
        )
    finally:
        _kill(proc)

    rc, log = run_cli_to_end(args, tmp_path)
    assert rc == 0, log[-3000:]
    study = optuna.load_study(
        study_name="resume", storage=f"sqlite:///{tmp_path}/outputs/mlflow/optuna.db"
    )
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    interrupted = [t for t in trials if t.user_attrs.get("seqbench.interrupted")]
    assert [t.number for t in interrupted] == [1]
    retry = [t for t in complete if t.user_attrs.get("seqbench.retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == interrupted[0].params  # completed once
    runs = experiment_runs(tmp_path, "synthetic")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}  # resumed, no ghost


@pytest.mark.scenario
def test_a_sweep_leaves_a_job_running_elsewhere_to_its_owner(tmp_path):
    """Several machines may run the same sweep: a job that a live process is training is
    skipped with one line (not retrained, not an error); a single launch of it is refused."""
    tiny = [
        *SLOW_SYNTHETIC,
        "data.n_train=300",
        "trainer.max_epochs=1",
        "logger.experiment_name=shared",
    ]
    rc, log = run_cli_to_end([*tiny, "seed=1"], tmp_path)
    assert rc == 0, log[-3000:]
    (done,) = experiment_runs(tmp_path, "shared")
    # The same job, RUNNING in a live process (this test's own), as a launch elsewhere leaves it.
    client = store(tmp_path)
    owner = client.create_run(done.info.experiment_id, run_name="lstm-seed1")
    for key, value in done.data.tags.items():
        if key.startswith(("seqbench.", "model", "seed")):
            client.set_tag(owner.info.run_id, key, value)
    client.set_tag(owner.info.run_id, "seqbench.pid", str(os.getpid()))
    client.set_tag(owner.info.run_id, "seqbench.pid_start", f"{process_start_time():.0f}")
    client.delete_run(done.info.run_id)

    rc, log = run_cli_to_end(["-m", *tiny, "seed=1,2"], tmp_path)
    assert rc == 0, log[-3000:]
    assert f"skip lstm-seed1: this job is already running as MLflow run {owner.info.run_id}" in log
    runs = {r.data.tags["seed"]: r for r in experiment_runs(tmp_path, "shared")}
    assert runs["1"].info.run_id == owner.info.run_id and runs["1"].info.status == "RUNNING"
    assert runs["2"].info.status == "FINISHED"

    refused, log = run_cli_to_end([*tiny, "seed=1"], tmp_path)
    assert refused == 2 and "already running" in log
