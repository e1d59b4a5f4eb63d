"""Load test of an MLflow tracking server: N processes log metrics as fast as they can for a
fixed time, then every logged step is read back (zero lost) and the server must still answer.

    # against a server it starts itself on 127.0.0.1 (SQLite file or a local PostgreSQL)
    python benchmarks/tracking_load.py --backend sqlite --processes 8 --seconds 60
    python benchmarks/tracking_load.py --backend postgresql --processes 8 --seconds 60
    # the same with MLflow's basic-auth app on, the processes signed in as a writer
    python benchmarks/tracking_load.py --backend postgresql --auth --processes 8 --seconds 60
    # against a running server (signed in with MLFLOW_TRACKING_USERNAME / _PASSWORD if set)
    python benchmarks/tracking_load.py --tracking-uri http://127.0.0.1:5000

Each process owns one run and logs ``--metrics`` metrics per step in one ``log_batch`` request
(as Lightning's MLflow logger does once per logging step), steps 0, 1, 2, ... until the time is
up or ``--max-steps`` (a bound, so a fast server cannot run away). Results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    backend: str
    processes: int
    seconds: float
    metrics_per_step: int
    points_logged: int
    points_read_back: int
    lost: int
    points_per_second: float
    requests_per_second: float
    healthy_after: bool


def _worker(
    uri: str,
    experiment_id: str,
    index: int,
    seconds: float,
    metrics: int,
    max_steps: int,
    out: mp.Queue,
) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id, run_name=f"load-{index}").info.run_id
    keys = [f"m{k}" for k in range(metrics)]
    began = time.time()
    deadline = time.monotonic() + seconds
    step = 0
    while step < max_steps and time.monotonic() < deadline:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(k, float(step), now, step) for k in keys], synchronous=True
        )
        step += 1
    ended = time.time()
    client.set_terminated(run_id)
    out.put((run_id, step, began, ended))


def run_load(
    uri: str,
    processes: int,
    seconds: float,
    metrics: int = 5,
    max_steps: int = 1_000_000,
    backend: str = "",
) -> Result:
    """Drive the server at ``uri``; read every point back. Raises nothing on lost points: the
    caller checks ``Result.lost``."""
    import requests
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"load-test-{os.getpid()}-{time.time_ns()}")
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(uri, experiment_id, i, seconds, metrics, max_steps, out))
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    done = [out.get(timeout=seconds + 300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    # The window in which processes were logging (interpreter start-up excluded).
    elapsed = max(d[3] for d in done) - min(d[2] for d in done)
    logged = sum(d[1] for d in done) * metrics
    read_back = 0
    for run_id, steps, _, _ in done:
        for k in range(metrics):
            history = client.get_metric_history(run_id, f"m{k}")
            got = sorted(m.step for m in history)
            if got == list(range(steps)):
                read_back += steps
            else:
                read_back += len(set(got) & set(range(steps)))
    healthy = requests.get(uri.rstrip("/") + "/health", timeout=10).ok
    return Result(
        backend=backend or uri,
        processes=processes,
        seconds=round(elapsed, 1),
        metrics_per_step=metrics,
        points_logged=logged,
        points_read_back=read_back,
        lost=logged - read_back,
        points_per_second=round(logged / elapsed, 1),
        requests_per_second=round(logged / metrics / elapsed, 1),
        healthy_after=healthy,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(
    backend: str, folder: Path, workers: int, auth: bool = False
) -> tuple[str, subprocess.Popen]:
    """``mlflow server`` on 127.0.0.1 over a fresh SQLite file or local PostgreSQL; ``auth``:
    with MLflow's basic-auth app (a random admin password), else ``AUTH=off``."""
    import requests

    if backend == "sqlite":
        store = f"sqlite:///{folder}/mlflow.db"
    else:
        folder.chmod(0o755)
        store = subprocess.run(
            [
                str(REPO / "scripts" / "postgres_local.sh"),
                "start",
                str(folder / "pg"),
                str(_free_port()),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": store,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"),
        "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
        "SERVER_DIR": str(folder / "server"),
        "AUTH": "on" if auth else "off",
    }
    if auth:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = secrets.token_urlsafe(18)
    log = open(folder / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "team_server.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(uri + "/health", timeout=2).ok:
                if auth:
                    _sign_in_as_writer(uri, env["MLFLOW_AUTH_ADMIN_PASSWORD"])
                return uri, proc
        except requests.ConnectionError:
            time.sleep(0.5)
    raise RuntimeError((folder / "server.log").read_text()[-3000:])


def _sign_in_as_writer(uri: str, admin_password: str) -> None:
    """Add the user ``load`` as a writer (``python -m seqbench.config.team_users``, as an admin
    would) and sign this process and its workers in as that user: every request then pays the
    auth app's password check and the experiment-permission lookup a team member's would."""
    password = secrets.token_urlsafe(18)
    admin = {
        **os.environ,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": admin_password,
    }
    cmd = [sys.executable, "-m", "seqbench.config.team_users", "--tracking-uri", uri, "add"]
    subprocess.run(
        [*cmd, "load", "--role", "writer", "--password-stdin"],
        input=password + "\n",
        env=admin,
        check=True,
        text=True,
        timeout=300,
    )
    os.environ["MLFLOW_TRACKING_USERNAME"] = "load"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="a running server (else --backend starts one)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--metrics", type=int, default=5, help="metrics per step (one request)")
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--server-workers", type=int, default=4)
    parser.add_argument(
        "--auth", action="store_true", help="start the server with authentication on"
    )
    parser.add_argument("--json", type=Path, help="append the result as one JSON line")
    args = parser.parse_args()

    proc = None
    folder = Path(tempfile.mkdtemp(prefix="seqbench-load-"))
    try:
        if args.tracking_uri:
            uri, backend = args.tracking_uri, args.tracking_uri
        else:
            uri, proc = _start_server(args.backend, folder, args.server_workers, args.auth)
            signed_in = ", basic-auth, a writer" if args.auth else ""
            backend = f"{args.backend} ({args.server_workers} server workers{signed_in})"
        result = run_load(uri, args.processes, args.seconds, args.metrics, args.max_steps, backend)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        if not args.tracking_uri and args.backend == "postgresql":
            subprocess.run(
                [str(REPO / "scripts" / "postgres_local.sh"), "stop", str(folder / "pg")],
                check=False,
            )
    print(json.dumps(asdict(result), indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "a") as fh:
            fh.write(json.dumps(asdict(result)) + "\n")
    if result.lost or not result.healthy_after:
        sys.exit(1)


if __name__ == "__main__":
    main()
