"""Sweeps through Hydra's submitit launchers, for real: local processes (``slurm_local``) and a
single-node SLURM started from Debian's packages (``hydra/launcher=slurm``); preemption
checkpoints, requeues and continues the same MLflow run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import REPO, cli_env, experiment_runs, metric_points, wait_until
from seqbench.config.paths import config_dir
from seqbench.run.resume import RESUME_COUNT_TAG
from test_sweeps import TINY

REQUIRE_SLURM = os.environ.get("SEQBENCH_REQUIRE_SLURM") == "1"
SLURM_SCRIPT = REPO / "scripts" / "slurm_localhost.sh"
# Epochs of a few seconds, so a signal lands inside the second one.
PREEMPTIBLE = [
    *TINY,
    "data.n_train=2500",
    "data.max_len=40",
    "trainer.max_epochs=2",
    "num_threads=1",
]


def _launcher(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.launcher


def test_slurm_job_shape_follows_the_trainer_config():
    launcher = _launcher(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
        ]
    )
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4
    assert launcher.nodes == 2 and launcher.partition == "gpu"
    assert launcher.preempt_signal == "USR1" and launcher.signal_delay_s == 120
    assert launcher.max_num_timeout >= 1 and launcher.timeout_min == 240
    cpu = _launcher(["hydra/launcher=slurm", "trainer=ddp", "trainer.accelerator=cpu"])
    with pytest.raises(Exception, match="trainer.devices=-1 cannot size a cluster job"):
        _ = cpu.tasks_per_node  # -1 (all GPUs) says nothing about how many tasks to ask for
    one = _launcher(["hydra/launcher=slurm"])  # trainer=cpu
    assert one.tasks_per_node == 1 and one.gpus_per_node is None and one.nodes == 1


def test_slurm_launcher_without_the_extra_names_the_fix(tmp_path):
    """The plugin loads without hydra-submitit-launcher and says how to install it."""
    code = (
        "import sys\n"
        "sys.modules['hydra_plugins.hydra_submitit_launcher'] = None\n"
        "sys.modules['hydra_plugins.hydra_submitit_launcher.submitit_launcher'] = None\n"
        "from seqbench.train import main\n"
        "sys.argv = ['seqbench-train', '-m', 'hydra/launcher=slurm', 'data=synthetic']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "pip install -e '.[slurm]'" in done.stderr, done.stderr[-2000:]


def _slurm_missing() -> str | None:
    for tool in ("slurmctld", "slurmd", "sbatch", "munged", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install slurm-wlm munge; CI=true make test does)"
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd starts jobs as their users)"
    if not Path("/etc/munge/munge.key").is_file():
        return "/etc/munge/munge.key missing (the munge package creates it)"
    return None


def _start_sweep(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(root / "sweep.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "seqbench.train", "-m", *args],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _preempt_first_job_and_finish(root: Path, proc, experiment: str, preempt) -> None:
    """Once seed 1's run has logged its first epoch, preempt it; wait for the sweep to end."""
    try:
        run = wait_until(
            lambda: next(
                (
                    r
                    for r in experiment_runs(root, experiment)
                    if r.data.tags.get("seed") == "1"
                    and metric_points(root, r.info.run_id, "train/loss")
                ),
                None,
            ),
            proc,
            timeout=300,
            what="the first epoch of seed 1",
        )
        preempt(run)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (root / "sweep.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    runs = experiment_runs(root, experiment)
    assert len(runs) == 2, [(r.info.run_name, r.info.status) for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs)
    (preempted,) = [r for r in runs if r.data.tags["seed"] == "1"]
    assert preempted.info.run_id == run.info.run_id  # the requeued job continued the same run
    assert preempted.data.tags[RESUME_COUNT_TAG] == "1"
    assert len({m.step for m in metric_points(root, run.info.run_id, "val/acc")}) == 2
    assert "test/acc" in preempted.data.metrics
    seconds = [m.value for m in metric_points(root, run.info.run_id, "perf/epoch_seconds")]
    assert len(seconds) == 2 and all(0 < s < 300 for s in seconds), seconds
    (other,) = [r for r in runs if r.data.tags["seed"] == "2"]
    assert other.data.tags[RESUME_COUNT_TAG] == "0"


@pytest.mark.scenario
@pytest.mark.slow
@pytest.mark.skipif(
    _slurm_missing() is None,
    reason="SLURM is installed: the real-SLURM preemption test runs this path through sbatch",
)
def test_slurm_local_sweep_a_preempted_job_is_requeued_into_the_same_run(tmp_path):
    """Two jobs as local submitit processes; SIGUSR1 to one (what SLURM sends before a time
    limit or preemption): it checkpoints, submitit requeues it, it finishes the same run.
    Where SLURM is installed (CI) the real-SLURM test below covers the same path, so this one
    (the fallback for machines without SLURM) does not spend another two minutes on it."""
    proc = _start_sweep(
        ["hydra/launcher=slurm_local", "seed=1,2", *PREEMPTIBLE, "logger.experiment_name=local"],
        tmp_path,
        cli_env(tmp_path),
    )

    def preempt(run) -> None:
        os.kill(int(run.data.tags["seqbench.pid"]), signal.SIGUSR1)

    _preempt_first_job_and_finish(tmp_path, proc, "local", preempt)
    job_log = next(tmp_path.glob("outputs/multirun/*/0/train.log")).read_text()
    assert "handing SIGUSR1 over" in job_log and "Requeued job" in job_log
    assert job_log.index("Requeued job") < job_log.index("resuming MLflow run")


# -- a real single-node SLURM ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm():
    """slurmctld + slurmd + munged on localhost in a temporary folder; stopped afterwards."""
    if reason := _slurm_missing():
        if REQUIRE_SLURM:
            pytest.fail(f"SLURM is required here (SEQBENCH_REQUIRE_SLURM=1): {reason}")
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="seqbench-slurm-"))
    folder.chmod(0o755)  # munged and slurmd run as other users
    started = subprocess.run(
        [str(SLURM_SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=180
    )
    try:
        if started.returncode != 0:
            logs = "\n".join(p.read_text()[-1500:] for p in folder.rglob("*.log"))
            pytest.fail(f"local SLURM did not start:\n{started.stdout}{started.stderr}\n{logs}")
        yield folder / "slurm.conf"
    finally:
        subprocess.run([str(SLURM_SCRIPT), "stop", str(folder)], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.scenario
@pytest.mark.slow
def test_real_slurm_sweep_a_preempted_job_is_requeued_into_the_same_run(slurm, tmp_path):
    """`hydra/launcher=slurm` through sbatch/srun on a real slurmctld; `scancel --signal=USR1`
    on one job: it checkpoints, submitit runs `scontrol requeue`, SLURM starts it again and it
    continues the same MLflow run. Both jobs end FINISHED."""
    tmp_path.chmod(0o755)
    env = {**cli_env(tmp_path), "SLURM_CONF": str(slurm)}
    proc = _start_sweep(
        ["hydra/launcher=slurm", "seed=1,2", *PREEMPTIBLE, "logger.experiment_name=slurm"],
        tmp_path,
        env,
    )

    def preempt(run) -> None:
        job = run.data.tags["slurm.job_id"]
        subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True, timeout=30)

    _preempt_first_job_and_finish(tmp_path, proc, "slurm", preempt)
    job_log = next(tmp_path.glob("outputs/multirun/*/0/train.log")).read_text()
    assert "handing SIGUSR1 over" in job_log and "Requeued job" in job_log
    assert job_log.index("Requeued job") < job_log.index("resuming MLflow run")
    runs = experiment_runs(tmp_path, "slurm")
    assert all("_" in r.data.tags["slurm.job_id"] for r in runs)  # tasks of one job array
    script = next(tmp_path.glob("outputs/multirun/*/.submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR1@120" in script and "#SBATCH --ntasks-per-node=1" in script


@pytest.mark.scenario
@pytest.mark.slow
def test_real_slurm_ddp_job_with_two_tasks_then_the_relaunch_skips_it(slurm, tmp_path):
    """trainer=ddp with 2 SLURM tasks (gloo on CPU): Lightning takes the ranks from SLURM, one
    run, tracked by rank 0, metrics over both ranks' data. Relaunching the sweep skips the
    finished job on every task (rank 0's decision reaches the task srun started beside it)."""
    tmp_path.chmod(0o755)
    env = {**cli_env(tmp_path), "SLURM_CONF": str(slurm)}
    args = [
        "hydra/launcher=slurm",
        "seed=1",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *TINY,
        "trainer.max_epochs=1",
        "logger.experiment_name=slurmddp",
    ]
    for _launch in range(2):
        proc = _start_sweep(args, tmp_path, env)
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, (tmp_path / "sweep.log").read_text()[-4000:]
        (run,) = experiment_runs(tmp_path, "slurmddp")
        assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    script = next(tmp_path.glob("outputs/multirun/*/.submitit/*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
    logs = [p.read_text() for p in tmp_path.glob("outputs/multirun/*/.submitit/*/*_1_log.*")]
    assert any("GLOBAL_RANK: 1" in text for text in logs)  # a second SLURM task took part
    assert "skip lstm-seed1" in "".join(
        p.read_text() for p in tmp_path.glob("outputs/multirun/*/0/train.log")
    )
