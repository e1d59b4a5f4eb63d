"""Single-review latency of ``mlflow models serve`` for a seqbench model (issue 9).

    python benchmarks/serve_latency.py --archive ../shared/data/aclImdb_v1-labeled.tar.gz \
        --model models:/imdb-lstm@champion [--requests 200]

Starts ``mlflow models serve -m MODEL --env-manager local`` on a free 127.0.0.1 port, sends 20
warm-up requests, then ``--requests`` sequential requests of one IMDB test review each
(``{"inputs": [review]}``, one keep-alive connection, reviews in archive order), and prints the
median, 95th percentile and maximum of the client-side round-trip time. Stops the server.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()

    from seqbench.config.paths import project_root
    from seqbench.data.imdb import locate, read_imdb

    root, _ = locate(args.archive, project_root() / "outputs" / "data" / "imdb")
    texts = read_imdb(root).test_texts[: args.requests]
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    if args.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = args.tracking_uri
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            args.model,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            try:
                if requests.get(f"{base}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() - started > 180:
                log.seek(0)
                raise SystemExit(f"server did not start:\n{log.read()[-3000:]}")
            time.sleep(0.25)
        print(f"server ready after {time.monotonic() - started:.1f} s")
        session = requests.Session()

        def call(text: str) -> float:
            t0 = time.perf_counter()
            response = session.post(f"{base}/invocations", json={"inputs": [text]}, timeout=30)
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            return elapsed

        for text in texts[:20]:
            call(text)
        ms = sorted(1000 * call(text) for text in texts)
        p95 = ms[min(len(ms) - 1, int(round(0.95 * len(ms))) - 1)]
        print(
            f"{len(ms)} requests of one review each: median {statistics.median(ms):.1f} ms, "
            f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms, mean {statistics.mean(ms):.1f} ms; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        os.unlink(log.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
