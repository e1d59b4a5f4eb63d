"""DDP inside Hydra multiruns, for real: 2 gloo processes on the CPU per job (seqbench.launch.ddp)."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from helpers import (
    SLOW_SYNTHETIC,
    experiment_runs,
    last_log,
    metric_points,
    run_cli_to_end,
    start_cli,
    store,
    wait_until,
)
from seqbench.run.resume import RESUME_COUNT_TAG
from test_resume import _runs_with_epochs
from test_sweeps import TINY, run_cli

DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]


@pytest.mark.scenario
@pytest.mark.slow
def test_ddp_multirun_runs_each_job_once_with_synced_metrics(tmp_path):
    """`-m seed=1,2 trainer=ddp` on 2 processes: 2 runs (not 4), one sweep folder, children in
    their job's folder, one checkpoint per run, test metrics over the whole test split."""
    done = run_cli(
        ["-m", "seed=1,2", *DDP_CPU, *ONE_EPOCH, "logger.experiment_name=ddpsweep"], tmp_path
    )
    assert done.stdout.count("Launching 2 jobs") + done.stderr.count("Launching 2 jobs") == 1

    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, f"the sweep was started again: {sweeps}"
    assert not (tmp_path / "outputs" / "runs").exists()  # no child ran outside its job folder
    for job in ("0", "1"):
        assert (sweeps[0] / job / "train_ddp_process_1.log").is_file()

    client = store(tmp_path)
    runs = experiment_runs(tmp_path, "ddpsweep")
    assert len(runs) == 2, [r.info.run_name for r in runs]
    assert sorted(r.data.tags["seed"] for r in runs) == ["1", "2"]
    assert sorted(r.data.tags["job_num"] for r in runs) == ["0", "1"]
    for run in runs:
        run_id = run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["trainer.devices"] == "2"
        checkpoints = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
        assert len(checkpoints) == 1 and checkpoints[0].endswith(".ckpt")
        assert len(metric_points(tmp_path, run_id, "val/acc")) == 1
        # Each rank tests half of the 100 examples; the logged metrics are over all of them.
        path = client.download_artifacts(run_id, "plots/confusion_matrix_test.json", str(tmp_path))
        counts = json.loads(Path(path).read_text())["counts"]
        total = sum(map(sum, counts))
        assert total == 100
        correct = sum(counts[i][i] for i in range(len(counts)))
        assert run.data.metrics["test/acc"] == pytest.approx(correct / total, abs=1e-6)


@pytest.mark.scenario
@pytest.mark.slow
def test_interrupted_ddp_job_resumes_into_the_same_run(tmp_path):
    """SIGUSR1 to every rank mid-epoch: all ranks stop at the same batch with one checkpoint and
    the run is KILLED; the same command continues that run: rank 0 decides, the child rank
    continues from the checkpoint rank 0 names.

    Four epochs of ~4 s: the signal is sent a third of an epoch after epoch 1 is seen, and a slow
    poll on a loaded machine must still land it inside training (with 2 short epochs it once
    arrived during the final test, after the run had finished)."""
    epochs = 4
    args = [
        *SLOW_SYNTHETIC,
        *DDP_CPU,
        "data.n_train=4000",
        "data.max_len=40",
        f"trainer.max_epochs={epochs}",
        "logger.experiment_name=ddpresume",
    ]
    proc = start_cli(args, tmp_path, own_group=True)
    try:
        (run,) = wait_until(
            lambda: _runs_with_epochs(tmp_path, "ddpresume", 1), proc, what="epoch 1"
        )
        seconds = metric_points(tmp_path, run.info.run_id, "perf/epoch_seconds")[0].value
        time.sleep(max(0.2, seconds / 3))
    finally:
        os.killpg(proc.pid, signal.SIGUSR1)
        proc.wait(timeout=120)
    log = last_log(tmp_path)
    assert proc.returncode == 128 + signal.SIGUSR1, log[-3000:]
    client = store(tmp_path)
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED"
    assert "resume/last.ckpt" in [a.path for a in client.list_artifacts(run.info.run_id, "resume")]

    rc, log = run_cli_to_end(args, tmp_path)
    assert rc == 0, log[-3000:]
    assert f"resuming MLflow run {run.info.run_id}" in log
    (after,) = experiment_runs(tmp_path, "ddpresume")
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags[RESUME_COUNT_TAG] == "1"
    steps = [m.step for m in metric_points(tmp_path, run.info.run_id, "val/acc")]
    assert len(steps) == epochs and len(set(steps)) == epochs
    child_log = Path(after.data.tags["output_dir"]) / "train_ddp_process_1.log"
    assert "continues from" in child_log.read_text() and "last.ckpt" in child_log.read_text()
    assert "test/acc" in after.data.metrics
