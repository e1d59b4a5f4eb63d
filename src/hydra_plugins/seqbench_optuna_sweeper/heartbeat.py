"""Optuna heartbeats for the trials a sweeper has in flight."""

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class TrialHeartbeat:
    """Records Optuna heartbeats for this sweeper's RUNNING trials while their jobs run (the
    jobs may be elsewhere; the sweeper is the process whose death must be noticed)."""

    def __init__(self, storage: Any, interval: int | None) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if interval:
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()

    def add(self, trial_id: int) -> None:
        if self.interval:
            self.storage.record_heartbeat(trial_id)
            with self._lock:
                self.trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a database hiccup must not end the sweep
                    log.warning("heartbeat of trial id %d failed: %s", trial_id, exc)

    def stop(self) -> None:
        self._stop.set()
