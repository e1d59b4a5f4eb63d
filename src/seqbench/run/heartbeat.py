"""Is a RUNNING MLflow run really running? Heartbeat tags written by the run, read by others.

A process killed with SIGKILL, a lost node or a power cut never marks its run: MLflow keeps
it RUNNING forever. Every training run therefore records its host, process id and process
start time, and refreshes a heartbeat tag once per epoch and on a timer. Another process then
decides: on the same host, the run is dead as soon as its process is gone (the start time
guards against a reused pid); on another host, when the heartbeat is older than
``stale_after`` seconds. ``seqbench-report`` lists such runs as stale and ``resume=auto``
continues them.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run, RunTag

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "seqbench.run.heartbeat"  # unix seconds of the last beat
HOST_TAG = "seqbench.host"
PID_TAG = "seqbench.pid"
PID_START_TAG = "seqbench.pid_start"  # unix seconds the process started
DEFAULT_STALE_AFTER = 900.0


def boot_relative_start(pid: int) -> float | None:
    """Unix time process ``pid`` started (Linux ``/proc``), or None when it does not exist or
    ``/proc`` is not available."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def process_start_time() -> float | None:
    """Unix time this process started, or None where that is not available.

    Read from the kernel rather than taken at import so that interpreter start-up and imports
    count too: "start to first training step" is what a user waits for.
    """
    return boot_relative_start(os.getpid())


def identity_tags() -> dict[str, str]:
    """Tags naming this process, written when a run starts or resumes."""
    started = process_start_time()
    return {
        HOST_TAG: platform.node(),
        PID_TAG: str(os.getpid()),
        PID_START_TAG: f"{started:.0f}" if started is not None else "",
        HEARTBEAT_TAG: f"{time.time():.0f}",
    }


@dataclass(frozen=True)
class Liveness:
    alive: bool
    reason: str


def liveness(
    run: Run, stale_after: float = DEFAULT_STALE_AFTER, now: float | None = None
) -> Liveness:
    """Whether a RUNNING run's process is still working on it, and why we think so."""
    now = time.time() if now is None else now
    tags = run.data.tags
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if host and pid and host == platform.node():
        started = boot_relative_start(int(pid))
        recorded = float(tags.get(PID_START_TAG) or 0)
        if started is None:
            return Liveness(False, f"its process {pid} on {host} is gone")
        if recorded and abs(started - recorded) > 2:
            return Liveness(False, f"its process {pid} on {host} is gone (pid reused)")
        return Liveness(True, f"process {pid} on {host} is running")
    beat = tags.get(HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000.0
    age = now - last
    where = f" on {host}" if host else ""
    if age > stale_after:
        return Liveness(False, f"no heartbeat{where} for {age:.0f} s (limit {stale_after:.0f} s)")
    return Liveness(True, f"heartbeat{where} {age:.0f} s ago")


class Heartbeat:
    """Refreshes ``HEARTBEAT_TAG`` every ``interval`` seconds in a daemon thread, and on ``beat``.

    A failed write is logged and retried at the next beat: a tracking-server hiccup must not
    stop training.
    """

    def __init__(
        self, client: MlflowClient, run_id: str, interval: float, outbox: Any = None
    ) -> None:
        self.client, self.run_id, self.interval = client, run_id, float(interval)
        self.outbox = outbox  # seqbench.run.outbox.Outbox: beats queue, never wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        if self.outbox is not None:
            tag = RunTag(HEARTBEAT_TAG, f"{time.time():.0f}")
            self.outbox.put_batch(self.run_id, tags=[tag], key=HEARTBEAT_TAG)
            if seconds := self.outbox.outage_seconds():
                log.warning(
                    "heartbeat: MLflow tracking server %s unreachable for %.0f s, %d records "
                    "queued; training continues",
                    self.outbox.uri,
                    seconds,
                    self.outbox.pending(),
                )
            return
        try:
            self.client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
        except Exception as exc:
            log.warning("heartbeat for run %s not written: %s", self.run_id, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        if self.interval > 0:
            self._thread = threading.Thread(
                target=self._loop, name="seqbench-heartbeat", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
