"""MLflow bookkeeping for a training run: store, experiment, run, params, tags, status.

We create the run ourselves (rather than letting Lightning's ``MLFlowLogger`` do it) so that
tags, the terminal status and, later, resuming into the same run stay under our control; the
logger is then attached to that run id and only streams metrics.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import platform
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow import MlflowClient
from mlflow.entities import Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from seqbench.config.access import (  # noqa: F401 - re-exported: the run's connect step
    TrackingAccessDenied,
    TrackingUnreachable,
    check_reachable,
)
from seqbench.config.store import redact_text, redact_uri, sqlite_path
from seqbench.run.interrupt import RunInterrupted

log = logging.getLogger(__name__)

ERROR_TAG = "seqbench.error"  # why a FAILED or KILLED run ended
# A short reason for the known failures (an exception's ``failure_reason`` attribute, e.g.
# "checkpoint write failed"): what a sweep's report can group by; ERROR_TAG has the details.
FAILURE_REASON_TAG = "seqbench.failure_reason"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length
PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch call
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def is_local_store(uri: str) -> bool:
    """True for stores this process writes directly (SQLite file, plain path)."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file", "sqlite")


def server_answers(uri: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP tracking server answers ``/health`` now (other stores: always)."""
    if urlparse(uri).scheme not in ("http", "https"):
        return True
    import requests

    try:
        return requests.get(uri.rstrip("/") + "/health", timeout=timeout).ok
    except requests.RequestException:
        return False


def store_lock(uri: str) -> FileLock | None:
    """A file lock beside an SQLite store; serialises schema creation across parallel jobs."""
    path = sqlite_path(uri)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``, creating it if needed; safe when parallel jobs race to create it."""
    for _ in range(2):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise MlflowException(
                    f"experiment {name!r} is deleted; restore it in the MLflow UI or choose another "
                    "logger.experiment_name"
                )
            return exp.experiment_id
        try:
            # The kind tag makes MLflow 3's UI open the experiment on its training-runs view
            # instead of the GenAI traces overview.
            return client.create_experiment(
                name,
                artifact_location=artifact_location,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException as exc:  # another job created it between our get and create
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(
                exc
            ):
                raise
    exp = client.get_experiment_by_name(name)
    assert exp is not None
    return exp.experiment_id


def open_store(
    tracking_uri: str, experiment_name: str, artifact_location: str | None
) -> tuple[MlflowClient, str]:
    """Client for ``tracking_uri`` and the experiment id, initialising a local store exactly once.

    Creating the client of a new SQLite store runs MLflow's schema migrations, which fail when
    two processes run them at once ("table ... already exists"): a file lock beside the
    database serialises creation and experiment lookup across parallel jobs.
    """
    if not is_local_store(tracking_uri):
        client = MlflowClient(tracking_uri)
        return client, get_or_create_experiment(client, experiment_name, None)
    location = (
        Path(artifact_location).expanduser().resolve().as_uri() if artifact_location else None
    )
    lock = store_lock(tracking_uri)
    with lock if lock is not None else contextlib.nullcontext():
        client = MlflowClient(tracking_uri)
        return client, get_or_create_experiment(client, experiment_name, location)


def create_run(
    client: MlflowClient, experiment_id: str, logger: Any, tags: Mapping[str, str]
) -> Any:
    """A new run named ``logger.run_name``; a user who may only read the experiment gets
    ``TrackingAccessDenied`` saying whom to ask."""
    try:
        return client.create_run(experiment_id, run_name=logger.run_name, tags=dict(tags))
    except MlflowException as exc:
        if exc.error_code != "PERMISSION_DENIED":
            raise
        raise TrackingAccessDenied(
            f"the MLflow tracking server at {redact_uri(str(logger.tracking_uri))} lets "
            f"this user read experiment {logger.experiment_name!r} but not log runs in it "
            "(403): ask its admin to make you a writer (python -m seqbench.config.team_users "
            "set-role USER --role writer; docs/team-server.md)"
        ) from None


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted ``key=value`` pairs of a nested mapping; lists are kept whole as their repr."""
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, name + ".")
        else:
            text = "null" if value is None else str(value)
            yield name, text[:MAX_PARAM_VALUE]


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """Several tags in one request (MlflowClient only sets one at a time)."""
    if tags:
        client.log_batch(
            run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
        )


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(k, v) for k, v in flatten(params)]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + PARAMS_PER_BATCH], synchronous=True)


def git_state(root: Path) -> dict[str, str]:
    """Commit and dirty flag of the project checkout, or 'unknown' outside a git work tree."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "mlflow.source.git.commit": commit,
    }


def environment_tags() -> dict[str, str]:
    import lightning
    import torch

    from seqbench.version import __version__

    return {
        "version.seqbench": __version__,
        "version.torch": torch.__version__,
        "version.lightning": lightning.__version__,
        "host": platform.node(),
        "mlflow.user": getpass.getuser(),
    }


def final_status(exc: BaseException | None) -> str:
    """FINISHED, or FAILED when ``exc`` ended the run, KILLED for Ctrl-C, SIGTERM or another
    stop signal (e.g. a cluster's time limit: such a run is worth resuming, not debugging)."""
    if exc is None:
        return RunStatus.to_string(RunStatus.FINISHED)
    if isinstance(exc, (KeyboardInterrupt, SIGTERMException, RunInterrupted)):
        return RunStatus.to_string(RunStatus.KILLED)
    return RunStatus.to_string(RunStatus.FAILED)


def finish(client: MlflowClient, run_id: str, exc: BaseException | None = None) -> None:
    """Mark the run with ``final_status(exc)``; an error or signal is kept as ``ERROR_TAG``."""
    status = final_status(exc)
    try:
        if exc is not None:
            client.set_tag(run_id, ERROR_TAG, redact_text(f"{type(exc).__name__}: {exc}")[:5000])
            if reason := getattr(exc, "failure_reason", None):
                client.set_tag(run_id, FAILURE_REASON_TAG, str(reason))
        client.set_terminated(run_id, status)
    except Exception:  # never mask the original error with a bookkeeping one
        log.exception("could not mark MLflow run %s as %s", run_id, status)


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger attached to a run whose status seqbench manages.

    Lightning finalises its loggers at the end of ``fit`` *and* of ``test``; the stock logger
    would mark the run FINISHED before the test metrics exist. ``finish`` sets the status once
    everything is logged.
    """

    def __init__(
        self,
        *args: Any,
        logged_steps: Mapping[str, int] | None = None,
        outbox: Any = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.outbox = outbox  # seqbench.run.outbox.Outbox: batches wait out server outages
        # A resumed run already holds points up to these steps; an epoch repeated after a kill
        # must not add a second point at the same step (MLflow cannot delete points).
        self.logged_steps = dict(logged_steps or {})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.logged_steps and step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self.logged_steps.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    @property
    def experiment(self) -> Any:
        """The run's ``MlflowClient``; with an outbox, one whose ``log_batch`` (all Lightning
        logs through) queues instead of waiting for the server."""
        client = MLFlowLogger.experiment.fget(self)  # type: ignore[attr-defined]
        return client if self.outbox is None else _QueuedClient(client, self.outbox)

    def finalize(self, status: str = "success") -> None:
        """Leave the run's status alone (``Logger.finalize`` is Lightning's public hook).

        Why: ``MLFlowLogger.finalize`` calls ``set_terminated`` on the run; Lightning calls it
        after ``fit`` and again after ``test``. ``tests/test_lifecycle.py`` checks on a real
        store that the stock one still ends the run and this one does not.
        """


class _QueuedClient:
    """An ``MlflowClient`` whose ``log_batch`` goes to an outbox; everything else is the client's."""

    def __init__(self, client: MlflowClient, outbox: Any) -> None:
        self._client, self._outbox = client, outbox

    def log_batch(self, run_id: str, metrics=(), params=(), tags=(), **_: Any) -> None:
        self._outbox.put_batch(run_id, metrics, params, tags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def logged_steps(client: MlflowClient, run_id: str) -> dict[str, int]:
    """The last step of every metric a run has logged."""
    keys = client.get_run(run_id).data.metrics
    return {k: max(m.step for m in client.get_metric_history(run_id, k)) for k in keys}
