"""Hydra callbacks: work done once per launch, in the launching process, before any job runs."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from seqbench.config.validation import check_folders
from seqbench.run import tracking

log = logging.getLogger(__name__)


class CheckOutputFolder(Callback):
    """Refuse an unwritable ``paths.output_root`` with one message before Hydra creates its run
    folder there (Hydra would fail with a traceback from ``mkdir``)."""

    def _check(self, config: DictConfig) -> None:
        if problems := check_folders(config, ("paths.output_root",)):
            print(f"error: {problems[0]}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)


class PrepareTrackingStore(Callback):
    """Create the MLflow store and experiment before a multirun launches its jobs.

    Parallel jobs (``hydra/launcher=joblib``) would otherwise race to run the SQLite schema
    migrations and to create the experiment; each job still takes the same file lock, so this
    is an optimisation of the common case, not the only guard.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            logger = config.logger
            tracking.open_store(
                logger.tracking_uri, logger.experiment_name, logger.get("artifact_location")
            )
        except Exception as exc:  # the jobs will report a real problem themselves, with context
            log.warning("could not prepare the MLflow store before the sweep: %s", exc)
