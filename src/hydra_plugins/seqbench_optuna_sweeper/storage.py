"""Where a study lives: one URL, opened the same way by the sweeper and by its jobs.

- ``sqlite:///path/optuna.db``: one machine, several processes. SQLite transactions are made
  ``BEGIN IMMEDIATE`` so Optuna's read-then-write steps (pop a queued trial, fail a RUNNING
  one) are atomic between processes: without it pysqlite starts a transaction only at the
  first write, and two sweepers could both pop the same queued trial or both re-queue the same
  interrupted one.
- ``postgresql://user@host/db`` (any SQLAlchemy URL): several machines; Optuna's RDB storage.
- ``journal:///path/optuna.journal``: one machine, an append-only log file
  (``optuna.storages.JournalStorage`` on a ``JournalFileBackend``, file-locked); no database.
- ``None``: in memory, this process only (no resume, no distribution, no pruning by the jobs).

A job that reports to its trial opens the URL it was given with :func:`open_storage` too, so a
``journal://`` URL means the same file to both.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_SCHEME = "journal://"


def journal_path(url: str | None) -> Path | None:
    """The log file of a ``journal:///path`` URL (``journal://relative/path`` is relative to
    the working directory), else None."""
    if url is None or not url.startswith(JOURNAL_SCHEME):
        return None
    return Path(url[len(JOURNAL_SCHEME) :]).expanduser()


def _sqlite_immediate(engine: Any) -> None:
    """SQLAlchemy's recipe for real transactions on pysqlite: let SQLAlchemy emit BEGIN, and
    make it BEGIN IMMEDIATE so a transaction holds the write lock from its first read."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners (schema check) are not reused


def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[Any, Any], None] | None = None,
) -> Any:
    """The Optuna storage behind ``url`` (see the module docstring). ``heartbeat_interval``,
    ``grace_period`` and ``stale_trial_callback`` turn on Optuna's heartbeat (database storage
    only; ignored for a journal, which is for one machine, or memory):
    a RUNNING trial whose heartbeat is older than ``grace_period`` seconds is failed by the
    next sweeper that looks, and the callback runs once for it."""
    import inspect
    import warnings

    import optuna

    if heartbeat_interval is not None and (url is None or journal_path(url) is not None):
        log.info(
            "%s has no heartbeat (hydra.sweeper.heartbeat_interval ignored); dead sweepers on "
            "this machine are still found by their process id",
            url or "an in-memory study",
        )
    if url is None:
        return optuna.storages.InMemoryStorage()
    if (path := journal_path(url)) is not None:
        from optuna.storages.journal import JournalFileBackend

        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:
        kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        if stale_trial_callback is not None:  # renamed in Optuna 4.9
            params = inspect.signature(optuna.storages.RDBStorage).parameters
            name = (
                "heartbeat_stale_trial_callback"
                if "heartbeat_stale_trial_callback" in params
                else "failed_trial_callback"
            )
            kwargs[name] = stale_trial_callback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(url, **kwargs)
    if rdb.engine.name == "sqlite":
        _sqlite_immediate(rdb.engine)
    return optuna.storages.get_storage(rdb)  # Optuna's cache in front, as create_study adds
