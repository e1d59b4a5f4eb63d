"""What interruption safety costs on real IMDB: heartbeat overhead per epoch, and resume time.

    python benchmarks/resume_cost.py --archive ../shared/data/aclImdb_v1-labeled.tar.gz

1. Overhead of the guards: the seed LSTM trains 2 epochs three times: with the heartbeat timer
   and the non-finite loss check off (``heartbeat.interval=0``: one beat per epoch only;
   ``nonfinite_check.every_n_steps=0``), with the defaults (a beat every 60 s, the loss checked
   every step), and with a beat every second (a stress setting); ``perf/epoch_seconds`` is read
   back from MLflow.
2. Resume: the seed LSTM is sent SIGTERM in the middle of its 2nd epoch, then the same command
   is launched again. Reported: seconds from the signal to the process exit (checkpoint,
   upload, KILLED), and the relaunch's seconds from process start to its first resumed training
   step (``perf/start_to_first_step_seconds``, logged once per launch) beside the first launch's.

Everything runs through ``seqbench-train`` in a temporary project root (its own MLflow store);
the encoded IMDB cache is shared through ``SEQBENCH_DATA_DIR`` so only the first run encodes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "model=lstm",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.enable_model_summary=false",
]


def _env(root: Path, data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "SEQBENCH_ROOT": str(root), "SEQBENCH_DATA_DIR": str(data_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _launch(args: list[str], root: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "seqbench.train", *args],
        cwd=root,
        env=_env(root, data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _runs(root: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _history(root: Path, run_id: str, key: str) -> list[float]:
    client = MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")
    return [m.value for m in client.get_metric_history(run_id, key)]


def heartbeat_cost(archive: str, root: Path, data_dir: Path) -> dict[str, list[float]]:
    results = {}
    settings = {
        "guards-off": ["heartbeat.interval=0", "nonfinite_check.every_n_steps=0"],
        "defaults": [],
        "heartbeat-every-1s": ["heartbeat.interval=1"],
    }
    for name, overrides in settings.items():
        proc = _launch(
            [
                *COMMON,
                f"data.archive={archive}",
                "trainer.max_epochs=2",
                *overrides,
                f"logger.experiment_name={name}",
            ],
            root,
            data_dir,
        )
        if proc.wait() != 0:
            raise SystemExit(f"training failed for {name}")
        (run,) = _runs(root, name)
        results[name] = _history(root, run.info.run_id, "perf/epoch_seconds")
        print(f"{name}: epoch seconds {results[name]}", flush=True)
    return results


def resume_cost(archive: str, root: Path, data_dir: Path) -> dict[str, float]:
    args = [
        *COMMON,
        f"data.archive={archive}",
        "trainer.max_epochs=2",
        "logger.experiment_name=resume",
    ]
    proc = _launch(args, root, data_dir)
    deadline = time.monotonic() + 900
    while True:  # wait for epoch 1, then half of epoch 2
        runs = _runs(root, "resume")
        if runs and _history(root, runs[0].info.run_id, "train/loss"):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the first launch ended before its first epoch")
        time.sleep(0.5)
    first_epoch = _history(root, runs[0].info.run_id, "perf/epoch_seconds")[0]
    time.sleep(first_epoch / 2)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    stop_seconds = time.monotonic() - signalled
    relaunch = _launch(args, root, data_dir)
    if relaunch.wait() != 0:
        raise SystemExit("the relaunch failed")
    (run,) = _runs(root, "resume")
    starts = _history(root, run.info.run_id, "perf/start_to_first_step_seconds")
    result = {
        "signal_to_exit_seconds": stop_seconds,
        "first_launch_start_to_first_step_seconds": starts[0],
        "relaunch_start_to_first_resumed_step_seconds": starts[-1],
        "status": run.info.status,
        "resumed_from_step": run.data.tags.get("seqbench.resumed_from_step"),
        "val_acc_points": len(_history(root, run.info.run_id, "val/acc")),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--json", type=Path, default=REPO / "outputs/benchmarks/resume_cost.json")
    args = parser.parse_args()
    archive = str(Path(args.archive).resolve())
    with tempfile.TemporaryDirectory(prefix="seqbench-resume-bench-") as tmp:
        root = Path(tmp)
        data_dir = REPO / "outputs" / "data"
        report = {
            "heartbeat_epoch_seconds": heartbeat_cost(archive, root, data_dir),
            "resume": resume_cost(archive, root, data_dir),
            "load_average": os.getloadavg(),
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
