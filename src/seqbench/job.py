"""One training job: config -> data -> task -> trainer inside the run's lifecycle
(``seqbench.run.lifecycle``), which owns everything MLflow sees of the run.

``seqbench-train`` (``seqbench.train``) imports this module only once the config is valid:
Lightning, torch and MLflow cost ~12 CPU-seconds to import, which ``--help``, ``--cfg job`` and
a mistyped value should not pay. ``seqbench.fit`` (``seqbench.api``) calls ``train`` directly.
"""

from __future__ import annotations

import gc
import logging
import time
import warnings

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from seqbench.config.paths import register_resolvers
from seqbench.config.settings import refusal_message
from seqbench.config.validation import ConfigError, check_config
from seqbench.data.archive import ArchiveError
from seqbench.data.file_format import DataFileError
from seqbench.launch import ddp
from seqbench.models.inputs import InputKindError, adapt_to_data, check_input_kind
from seqbench.run import resume, tracking
from seqbench.run.checkpoint_io import CheckpointWriteError
from seqbench.run.lifecycle import RunLifecycle, TrainResult
from seqbench.run.optuna_trial import TrialUnavailable
from seqbench.run.outbox import TrackingOutage
from seqbench.training import fit
from seqbench.training.callbacks import NonFiniteLossError
from seqbench.training.cpu import configure_cpu
from seqbench.training.hardware import release_freed_memory
from seqbench.training.task import build_task, check_model

__all__ = [
    "JOB_ERRORS",
    "TEMPORARY_FAILURES",
    "USER_ERRORS",
    "TrainResult",
    "setup_datamodule",
    "train",
]

log = logging.getLogger(__name__)
register_resolvers()
_RUNS_IN_PROCESS = 0
# Errors a user fixes by changing the command: ``seqbench-train`` prints one message and exits
# with status 2, no traceback.
USER_ERRORS = (
    ConfigError,
    tracking.TrackingUnreachable,
    resume.ResumeError,
    ArchiveError,
    NonFiniteLossError,
    DataFileError,  # a user's text or series file (SeriesDataError included)
    InputKindError,
    TrialUnavailable,
)
# The user errors that come from one job's own values (a model setting its class refuses, a
# learning rate that overflows): inside a multirun only that job fails and the sweep goes on.
# The others (the tracking server, the archive, a resume conflict) would fail every job alike.
JOB_ERRORS = (ConfigError, NonFiniteLossError)


# Faults outside the command (a full disk, a tracking server away past logger.outage_limit_s):
# ``seqbench-train`` exits EX_TEMPFAIL, "try again later": the same command then resumes the run.
TEMPORARY_FAILURES = (CheckpointWriteError, TrackingOutage)

# Lightning noise that says nothing to a seqbench user: metrics are logged per epoch, not per
# step, and the pytree deprecation is internal to Lightning.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
# The DataModule restores the sampler's position itself (SequenceDataModule.state_dict).
warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")


def _run_origin() -> float | None:
    """When this run started: None for the first run of a process (timed from the process
    start, imports included), now for later jobs of a multirun in the same process."""
    global _RUNS_IN_PROCESS
    origin = None if _RUNS_IN_PROCESS == 0 else time.time()
    _RUNS_IN_PROCESS += 1
    return origin


def train(cfg: DictConfig) -> TrainResult:
    """Train, test on the best validation checkpoint, and record everything in one MLflow run.

    Nothing is written before the config is valid, the tracking server answers and the data is
    ready: a typo or a corrupt archive leaves no run behind. With ``resume=auto`` a finished run
    of the same job is returned instead of retraining, and an interrupted one is continued
    (``seqbench.run.resume``). The metrics include ``val/acc_best`` (what sweeps optimise).
    """
    check_config(cfg)
    check_input_kind(cfg)  # a text-only model on numeric data (or the reverse): before the store
    check_model(cfg)  # a value the model refuses: one message, before anything is written
    origin = _run_origin()
    try:
        with RunLifecycle(cfg) as run:
            L.seed_everything(cfg.seed, workers=True)
            plan = configure_cpu(cfg)
            datamodule = setup_datamodule(cfg)  # bad data fails here, before any MLflow run exists
            # Built before the run exists (check_model has refused bad values already). Nothing
            # else draws random numbers between seeding and the first epoch, so the initial
            # weights are the ones a build after run.start() gave.
            task = build_task(cfg, plan.batch_split)
            if not run.plan():
                return run.result  # finished earlier, or left to the process running it
            threads = {
                "torch.num_threads": str(plan.threads_per_split),
                "batch_split": str(plan.batch_split),
            }
            run.start(datamodule.fingerprint, threads)
            run.record_inputs(datamodule, task.trainable_parameters)
            log.info(
                "model %s: %s trainable parameters; %d CPU thread(s) x %d batch slice(s)",
                cfg.model.arch,
                f"{task.trainable_parameters:,}",
                plan.threads_per_split,
                plan.batch_split,
            )
            configured = fit.config_callbacks(cfg, origin)
            callbacks = [*configured, *run.callbacks(configured), *fit.guard_callbacks(cfg)]
            trainer: L.Trainer = instantiate(cfg.trainer, logger=run.logger(), callbacks=callbacks)
            try:
                with ddp.one_job_per_child(trainer):  # DDP children run this multirun job only
                    seconds = fit.fit(trainer, task, datamodule, run.ckpt_path)
                    run.raise_if_interrupted("after the last epoch; its checkpoint is saved")
                    outcome = fit.evaluate(
                        trainer, task, datamodule, seconds, bool(cfg.get("test", True))
                    )
                    return run.log_result(outcome, task, datamodule)
            finally:
                if task.batch_splitter is not None:  # stop its threads: a multirun builds many
                    task.batch_splitter.close()
    finally:
        gc.collect()
        release_freed_memory()


def _data_refusal(exc: InstantiationException) -> Exception:
    """What the data class's refusal to be built means to a user: its own user error (a file
    that is not there), or a ``ConfigError`` naming the key (a setting it does not take, a value
    it refuses). Anything else stays the unexpected error it is."""
    cause = exc.__cause__
    if isinstance(cause, USER_ERRORS):
        return cause
    if isinstance(cause, (ValueError, TypeError)):
        return ConfigError(f"invalid data configuration: {refusal_message(exc, 'data')}")
    return exc


def setup_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The data, read, checked and encoded; ``data.num_classes: null`` becomes the number of
    classes found, which the model's ``num_classes: ${data.num_classes}`` then follows; numeric
    data tells the model its channel count (``seqbench.models.inputs``)."""
    check_input_kind(cfg)  # before any data is read or cached
    try:
        datamodule = instantiate(cfg.data)
    except InstantiationException as exc:
        raise _data_refusal(exc) from None
    datamodule.sampler_seed = cfg.seed
    datamodule.prepare_data()
    datamodule.setup("fit")
    if cfg.data.get("num_classes") is None:
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes
    adapt_to_data(cfg, datamodule)
    return datamodule
