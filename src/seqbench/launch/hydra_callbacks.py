"""Hydra callbacks: work done once per launch, in the launching process, before any job runs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from seqbench.config.access import TrackingUnreachable, check_reachable
from seqbench.config.store import redact_text
from seqbench.config.validation import check_folders

log = logging.getLogger(__name__)


class _LaunchCheck(Callback):
    """A check run once per launch, single run or sweep, before Hydra creates any folder:
    ``problem`` returns one line, printed as ``error: ...`` with exit status 2, or None."""

    def problem(self, config: DictConfig) -> str | None:
        raise NotImplementedError

    def _check(self, config: DictConfig) -> None:
        if (message := self.problem(config)) is not None:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)


class CheckOutputFolder(_LaunchCheck):
    """Refuse an unwritable ``paths.output_root`` with one message before Hydra creates its run
    folder there (Hydra would fail with a traceback from ``mkdir``)."""

    def problem(self, config: DictConfig) -> str | None:
        problems = check_folders(config, ("paths.output_root",))
        return problems[0] if problems else None


class PrepareTrackingStore(Callback):
    """Create the MLflow store and experiment before a multirun launches its jobs.

    Parallel jobs (``hydra/launcher=joblib``) would otherwise race to run the SQLite schema
    migrations and to create the experiment; each job still takes the same file lock, so this
    is an optimisation of the common case, not the only guard.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from seqbench.run import tracking  # MLflow: a sweep imports it anyway, a single run later

        try:
            logger = config.logger
            tracking.open_store(
                logger.tracking_uri, logger.experiment_name, logger.get("artifact_location")
            )
        except Exception as exc:  # the jobs will report a real problem themselves, with context
            log.warning("could not prepare the MLflow store before the sweep: %s", exc)


class CheckTrackingServer(_LaunchCheck):
    """Refuse a tracking server that does not answer, does not trust us or rejects our
    credentials with one line and exit status 2, before Hydra creates a run or sweep folder and
    before any data is prepared (``seqbench.config.access``)."""

    def problem(self, config: DictConfig) -> str | None:
        try:
            check_reachable(str(config.logger.tracking_uri))
        except TrackingUnreachable as exc:
            return str(exc)
        return None


class RedactHydraFiles(Callback):
    """Remove the credentials of any URI given on the command line (``logger.tracking_uri=
    https://user:pw@host``) from the files Hydra saved of this job (``.hydra/*.yaml``, the
    sweep's ``multirun.yaml``) before the job runs: outputs are shared, passwords are not."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        subdir = config.hydra.output_subdir  # null: Hydra saved nothing
        files = (
            []
            if subdir is None
            else [*(Path(config.hydra.runtime.output_dir) / subdir).glob("*.yaml")]
        )
        if config.hydra.mode == RunMode.MULTIRUN:
            files.append(Path(config.hydra.sweep.dir) / "multirun.yaml")
        for path in files:
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                if (clean := redact_text(text)) != text:
                    path.write_text(clean, encoding="utf-8")
