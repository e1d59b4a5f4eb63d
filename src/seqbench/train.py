"""``seqbench-train``: compose the config with Hydra, train and test one model, track it in MLflow.

seqbench-train model=bilstm
seqbench-train model=cnn_lstm seed=2 trainer=gpu trainer.precision=bf16-mixed
seqbench-train -m model=lstm,bilstm seed=1,2,3

This module is the command: Hydra composes the config, a wrong value exits here, and only a
valid config imports the job (``seqbench.job``: data -> task -> trainer inside the run's
lifecycle) with Lightning, torch and MLflow, ~12 CPU-seconds of imports that ``--help``,
``--cfg job`` and a mistyped value do not pay. It owns the exit statuses (docs/exit-codes.md).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from seqbench.config.paths import config_dir, register_resolvers
from seqbench.config.validation import ConfigError, check_config
from seqbench.launch.hydra_job import in_multirun

__all__ = ["EXIT_TEMPFAIL", "JobFailed", "main"]  # and, loaded on first use, _FROM_JOB

log = logging.getLogger(__name__)
register_resolvers()

# Faults outside the command (a full disk, a tracking server away past logger.outage_limit_s):
# one message and EX_TEMPFAIL (75), "try again later": the same command then resumes the run.
EXIT_TEMPFAIL = 75
# The job's names, still importable from here (``from seqbench.train import train``) but loaded
# with the job on first use.
_FROM_JOB = frozenset(
    ["JOB_ERRORS", "TEMPORARY_FAILURES", "USER_ERRORS", "TrainResult", "setup_datamodule", "train"]
)


def __getattr__(name: str) -> Any:
    """``train``, ``setup_datamodule``, ``TrainResult`` and the error tuples, from
    ``seqbench.job`` when first asked for (PEP 562), so importing this module stays cheap."""
    if name in _FROM_JOB:
        from seqbench import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class JobFailed(CompactHydraException):
    """One job of a multirun failed for a reason its own values cause. Hydra records the job as
    failed and runs the others; a grid sweep then exits 1 with this message (no traceback, as
    a ``CompactHydraException``), and the Optuna sweeper marks the trial FAIL."""


def _user_error(exc: Exception, own_values: bool) -> NoReturn:
    """One message and exit status 2; inside a multirun, an error the job's own values cause
    (``own_values``) fails only that job (``JobFailed``) and the sweep goes on."""
    log.error("%s", exc)
    if own_values and in_multirun():
        raise JobFailed(str(exc)) from None
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> Any:
    """Console entry point; returns ``cfg.optimized_metric`` for sweepers (e.g. Optuna).

    Errors a user can fix (bad config, unreachable server, resume conflicts, bad data) print
    one message and exit with status 2; inside a multirun, one whose cause is the job's own
    values (``JOB_ERRORS``) fails only that job (``JobFailed``); an interrupted run exits 128 +
    the signal number, as a shell reports a killed process, after saying how to resume it.
    """
    try:
        check_config(cfg)  # before the job's imports: a mistyped value costs no Lightning import
    except ConfigError as exc:
        _user_error(exc, own_values=True)
    from seqbench import job
    from seqbench.run.interrupt import RunInterrupted, hand_over

    try:
        result = job.train(cfg)
    except job.USER_ERRORS as exc:
        _user_error(exc, own_values=isinstance(exc, job.JOB_ERRORS))
    except job.TEMPORARY_FAILURES as exc:
        log.error("%s", exc)
        sys.exit(EXIT_TEMPFAIL)
    except RunInterrupted as exc:
        log.warning("%s; run the same command again to resume", exc)
        hand_over(exc.signum)  # under submitit: requeue the job (it resumes this run)
        sys.exit(128 + exc.signum)
    key = cfg.get("optimized_metric")
    return result.metrics.get(key) if key else None


if __name__ == "__main__":
    main()
