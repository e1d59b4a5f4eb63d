"""What a run logs while its tracking server is away: kept, then delivered in order.

A tracking server restarts for an upgrade, its database fails over: minutes without an answer.
MLflow's HTTP client retries with back-off while the training thread waits, then raises and
the run dies. MLflow's asynchronous logging (``MLFLOW_ENABLE_ASYNC_LOGGING``) does not help:
its queue hands each batch to the store once, and a batch that still fails after the HTTP
retries is logged as an error and dropped (``mlflow.utils.async_logging.async_logging_queue``,
MLflow 3.x). Hence this small bounded queue of our own:

- the training thread only appends (metrics, params, tags, checkpoint uploads) and never waits;
- one sender thread delivers the items in order; when the server does not answer it keeps the
  item, polls the server's ``/health`` every ``POLL_S`` seconds and goes on when it is back;
- the heartbeat reads ``outage_seconds`` and says so in the log; after the outage the run gets
  ``OUTAGE_TAG`` (how long, how many records waited);
- past ``logger.outage_limit_s`` the run saves its checkpoint and raises ``TrackingOutage``
  (``OutageGuard``); ``save`` writes what is still queued to a file beside the outputs, and the
  next launch's resume delivers it (``deliver_saved``) before it continues the same run.

Errors that a retry cannot fix (HTTP 4xx, e.g. a param logged twice with another value) are
logged and the item dropped, so one bad record never blocks the queue. A 5xx is the server
away: ``mlflow server`` answers 503 (TEMPORARILY_UNAVAILABLE) to every write while its
database restarts, and its ``/health`` still says OK, so each pause ends with another try.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

OUTAGE_TAG = "seqbench.outage"  # the last outage the run lived through
POLL_S = 1.0  # how often the sender asks an absent server's /health whether it is back
MAX_ITEMS = 100_000  # bound of the queue: ~10 MB of metrics; beyond it the oldest metrics go


class TrackingOutage(RuntimeError):
    """The tracking server stayed away longer than ``logger.outage_limit_s``."""

    failure_reason = "tracking server unreachable"


@dataclass(eq=False)  # items are compared by identity: two equal records are two records
class Item:
    kind: str  # "batch" | "artifact"
    run_id: str
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    artifact: tuple[str, str, str] | None = None  # local file, name, artifact folder
    key: str = ""  # items with the same key replace each other (heartbeat, a checkpoint copy)


def _permanent(exc: BaseException) -> bool:
    """An error a retry cannot fix: the server answered, and said no (4xx, not 429)."""
    if not isinstance(exc, MlflowException):
        return False
    status = exc.get_http_status_code()
    return 400 <= status < 500 and status != 429


def _reason(exc: BaseException) -> str:
    """The line that says why: for MLflow's exhausted HTTP retries, urllib3's cause (a refused
    connection, or ``too many 503 error responses`` from a server whose database is away)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    cause = re.search(r"\(Caused by (.+)\)\s*$", text)
    return (cause.group(1) if cause else text)[:200]


class Outbox:
    """The ordered queue of one run's records and its sender thread (see the module doc)."""

    def __init__(self, client: MlflowClient, uri: str, spool: Path) -> None:
        self.client, self.uri, self.spool = client, uri, Path(spool)
        self._items: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self.down_since: float | None = None  # when the first failed attempt started
        self._attempt_started: float | None = None
        self.delivered_late = 0
        self._last_run_id: str | None = None
        self._thread = threading.Thread(target=self._send_loop, name="seqbench-outbox", daemon=True)
        self._thread.start()

    # -- the training thread's side ------------------------------------------------------------

    def put(self, item: Item) -> None:
        with self._cond:
            if self._stop:  # saved or finished: nothing would deliver it or save it
                log.warning("outbox closed: a %s for run %s not sent", item.kind, item.run_id)
                if item.artifact is not None:
                    Path(item.artifact[0]).unlink(missing_ok=True)
                return
            self._last_run_id = item.run_id
            if item.key:  # a newer heartbeat or checkpoint copy replaces a waiting one
                replaced = [i for i in self._items if i.key == item.key and i is not self._head()]
                for old in replaced:
                    self._items.remove(old)
                    if old.artifact is not None:
                        Path(old.artifact[0]).unlink(missing_ok=True)
            if len(self._items) >= MAX_ITEMS:
                self._items.popleft()
                log.error("MLflow outbox full (%d records): the oldest one is dropped", MAX_ITEMS)
            self._items.append(item)
            self._cond.notify_all()

    def _head(self) -> Item | None:
        return self._items[0] if self._items else None

    def put_batch(
        self,
        run_id: str,
        metrics: list[Metric] | tuple = (),
        params: list[Param] | tuple = (),
        tags: list[RunTag] | tuple = (),
        key: str = "",
    ) -> None:
        self.put(
            Item(
                "batch",
                run_id,
                metrics=[(m.key, float(m.value), int(m.timestamp), int(m.step)) for m in metrics],
                params=[(p.key, str(p.value)) for p in params],
                tags=[(t.key, str(t.value)) for t in tags],
                key=key,
            )
        )

    def put_artifact(self, run_id: str, path: Path, name: str, folder: str) -> None:
        """Queue a copy of ``path`` (a hard link where possible: checkpoints are replaced by
        rename, so the linked version stays as it was) as ``<folder>/<name>``."""
        staged = self.spool / "files" / f"{time.time_ns()}-{name}"
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, staged)
        except OSError:
            shutil.copyfile(path, staged)
        self.put(
            Item("artifact", run_id, artifact=(str(staged), name, folder), key=f"{folder}/{name}")
        )

    def outage_seconds(self) -> float:
        """How long the server has not answered (0 when it does)."""
        now = time.time()
        if self.down_since is not None:
            return now - self.down_since
        started = self._attempt_started
        return now - started if started is not None and now - started > 5 else 0.0

    def pending(self) -> int:
        return len(self._items)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is delivered; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def finish(self, exc: BaseException | None, saved: Path, timeout: float) -> bool:
        """At the run's end: deliver what is queued. False when the run's status cannot be
        set now (the server is away: what is left is saved for the next launch)."""
        if isinstance(exc, TrackingOutage):
            return False  # saved by OutageGuard already
        if self.flush(timeout):
            self.close()
            return True
        count = self.save(saved)
        log.error(
            "MLflow tracking server %s unreachable at the end of the run; %d records kept in %s "
            "(the same command again delivers them and marks the run)",
            self.uri,
            count,
            saved,
        )
        return False

    def save(self, path: Path) -> int:
        """Write what is still queued to ``path`` (JSON lines) for the next launch; the count."""
        self.close()
        with self._cond:
            items = list(self._items)
            self._items.clear()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            for item in items:
                fh.write(json.dumps(item.__dict__) + "\n")
        return len(items)

    # -- the sender thread -----------------------------------------------------------------

    def _deliver(self, item: Item) -> None:
        if item.kind == "artifact":
            from seqbench.run.checkpoints import upload_checkpoint

            local, name, folder = item.artifact  # type: ignore[misc]
            upload_checkpoint(self.client, item.run_id, Path(local), name, folder)
            Path(local).unlink(missing_ok=True)
            return
        self.client.log_batch(
            item.run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in item.metrics],
            params=[Param(k, v) for k, v in item.params],
            tags=[RunTag(k, v) for k, v in item.tags],
            synchronous=True,
        )

    def _healthy(self) -> bool:
        from seqbench.run.tracking import server_answers

        return server_answers(self.uri, timeout=2.0)

    def _next(self) -> list[Item]:
        """The head item, with the batches right behind it merged into one request (within
        MLflow's limits per ``log_batch``): a server that answers slowly still keeps up."""
        items = [self._items[0]]
        if items[0].kind != "batch":
            return items
        sizes = [len(part) for part in (items[0].metrics, items[0].params, items[0].tags)]
        for item in list(self._items)[1:]:
            parts = (item.metrics, item.params, item.tags)
            grown = [n + len(part) for n, part in zip(sizes, parts, strict=True)]
            too_big = grown[0] > 1000 or grown[1] > 100 or grown[2] > 100
            if item.kind != "batch" or item.run_id != items[0].run_id or too_big:
                break
            items.append(item)
            sizes = grown
        return items

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                items = self._next()
            merged = items[0]
            if len(items) > 1:
                tags = {k: v for item in items for k, v in item.tags}  # the last value wins
                merged = Item(
                    "batch",
                    merged.run_id,
                    metrics=[m for item in items for m in item.metrics],
                    params=list(dict(p for item in items for p in item.params).items()),
                    tags=list(tags.items()),
                )
            self._attempt_started = time.time()
            try:
                self._deliver(merged)
            except Exception as exc:
                if _permanent(exc) and self._healthy():
                    log.error("MLflow refused a record, dropped: %s", exc)
                else:
                    self._wait_out(exc)
                    continue
            finally:
                self._attempt_started = None
            with self._cond:
                for item in items:  # coalescing may have replaced some: remove those left
                    if item in self._items:
                        self._items.remove(item)
                self._cond.notify_all()
            if self.down_since is not None and not self._items:
                self._recovered()

    def _wait_out(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = self._attempt_started or time.time()
            log.warning(
                "MLflow tracking server %s unreachable (%s); training continues, records are "
                "queued and delivered in order when it is back",
                self.uri,
                _reason(exc),
            )
        while not self._stop:  # at least one pause: a server can answer /health, not writes
            time.sleep(POLL_S)
            if self._healthy():
                break
        self.delivered_late = max(self.delivered_late, len(self._items))

    def _recovered(self) -> None:
        seconds = time.time() - (self.down_since or time.time())
        count, self.down_since, self.delivered_late = self.delivered_late, None, 0
        log.warning(
            "MLflow tracking server %s is back after %.0f s; %d queued records delivered",
            self.uri,
            seconds,
            count,
        )
        note = f"unreachable {seconds:.0f} s until {time.strftime('%Y-%m-%dT%H:%M:%S')}, "
        note += f"{count} records delivered late"
        if self._last_run_id:
            self.put(Item("batch", self._last_run_id, tags=[(OUTAGE_TAG, note)], key=OUTAGE_TAG))


def deliver_saved(client: MlflowClient, path: Path) -> int:
    """Deliver, in order, the records an earlier launch saved at ``path`` when the server stayed
    away past the limit; the file is removed once all are in. Returns how many."""
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    sender = Outbox.__new__(Outbox)  # the delivery code without a thread
    sender.client = client
    for line in lines:
        item = Item(**json.loads(line))
        if item.artifact is not None:
            item.artifact = tuple(item.artifact)  # type: ignore[assignment]
        sender._deliver(item)
    path.unlink()
    log.info("delivered %d records queued during the last launch's outage", len(lines))
    return len(lines)


DEFAULT_LIMIT_S = 600.0


def limit(cfg: Any) -> float:
    """``logger.outage_limit_s``: how long a run trains on without its server (0: no limit)."""
    return float(cfg.logger.get("outage_limit_s", DEFAULT_LIMIT_S) or 0) or float("inf")


def for_run(client: MlflowClient, cfg: Any, run_id: str) -> Outbox | None:
    """The run's outbox when it tracks to a server (a local store has no outages)."""
    from seqbench.run.tracking import is_local_store

    uri = str(cfg.logger.tracking_uri)
    if is_local_store(uri):
        return None
    return Outbox(client, uri, spool_dir(cfg.paths.output_root, run_id))


def guard(box: Outbox, cfg: Any, run_id: str, checkpoint_dir: Path) -> OutageGuard:
    return OutageGuard(
        box, limit(cfg), checkpoint_dir, saved_records(cfg.paths.output_root, run_id)
    )


def spool_dir(output_root: str | Path, run_id: str) -> Path:
    """Where a run's queued files and saved records wait (shared by the launches of a project)."""
    return Path(str(output_root)) / "outbox" / run_id


def saved_records(output_root: str | Path, run_id: str) -> Path:
    return spool_dir(output_root, run_id) / "records.jsonl"


class OutageGuard(L.Callback):
    """Stops the run with a checkpoint once the server has been away for ``limit_s`` seconds.

    Checked at each training batch's end, like ``seqbench.run.interrupt.StopOnSignal``: the
    checkpoint is then exact to the batch, and the queued records are saved for the next launch.
    """

    def __init__(self, outbox: Outbox, limit_s: float, checkpoint_dir: Path, saved: Path) -> None:
        self.outbox, self.limit_s = outbox, float(limit_s)
        self.checkpoint_dir, self.saved = Path(checkpoint_dir), saved

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        seconds = self.outbox.outage_seconds()
        if seconds <= self.limit_s:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            # Not at an epoch's last batch: Lightning resumes such a checkpoint in the next
            # epoch without this one's validation, and its val/acc point would be missing.
            return
        path = self.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(path)
        count = self.outbox.save(self.saved)
        raise TrackingOutage(
            f"the MLflow tracking server {self.outbox.uri} has been unreachable for "
            f"{seconds:.0f} s (logger.outage_limit_s={self.limit_s:.0f}); stopped at epoch "
            f"{trainer.current_epoch + 1}, batch {batch_idx + 1} with checkpoint {path}, "
            f"{count} records kept in {self.saved}. Run the same command again once the server "
            "is back: it continues the same MLflow run and delivers them"
        )
