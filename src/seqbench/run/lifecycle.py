"""One owner of a training run's life in MLflow, from the first request to the final status.

``seqbench-train`` composes the data, the task and the trainer inside one ``with`` block::

    with RunLifecycle(cfg) as run:  # signal handlers; connect: the server answers, the experiment
        datamodule = ...  # bad data fails here, before any run exists
        if not run.plan():  # skip, new or resume (rank 0); rank 0's decision (other ranks)
            return run.result
        run.start(datamodule.fingerprint, tags)  # create or reopen the run; heartbeat thread
        trainer = Trainer(logger=run.logger(), callbacks=[*configured, *run.callbacks(configured)])
        ...  # fit from run.ckpt_path, test
        run.log_result(outcome, task, datamodule)
    # the exit marks the run FINISHED, FAILED (reason in seqbench.error) or KILLED (a signal)

Only the rank that tracks (rank 0) talks to MLflow. It decides with ``seqbench.run.resume`` and
passes its decision on: to SLURM's other tasks through ``launch.ddp.publish_decision``, to
Lightning's DDP children through ``launch.ddp.pass_to_children``. A job of an Optuna search
(``optuna_trial.*``) opens its trial in ``plan``, links it in ``start``, lends every rank the
pruning callback and tags a pruned run in ``log_result`` (``seqbench.run.optuna_trial``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from seqbench.config.paths import project_root
from seqbench.config.store import redact_config, redact_uri
from seqbench.launch import cluster, ddp
from seqbench.launch.hydra_job import hydra_tags, in_multirun
from seqbench.run import checkpoints, lineage, optuna_trial, outbox, plots, resume, tracking
from seqbench.run.checkpoint_io import AtomicCheckpoints
from seqbench.run.checkpoints import CheckpointUploader, TrackedCheckpoint
from seqbench.run.heartbeat import DEFAULT_STALE_AFTER, Heartbeat, identity_tags
from seqbench.run.heartbeat_callback import HeartbeatEachEpoch
from seqbench.run.interrupt import SignalGuard, StopOnSignal
from seqbench.run.jobs import JOB_KEY_TAG, job_key, result_params
from seqbench.serving import mlflow_model
from seqbench.training.pruning import OptunaPruning

log = logging.getLogger(__name__)

_SWEEP_TAGS = ("sweep_id", "sweep_dir", "job_num")  # a skipped run joins the relaunched sweep


@dataclass
class TrainResult:
    run_id: str | None  # None on DDP ranks other than 0, which do not track
    metrics: dict[str, float]
    skipped: bool = False  # True: an earlier run of the same job had finished (resume=auto)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class RunLifecycle:
    """A training run's MLflow life as one ``with`` block (see the module docstring).

    ``tracks``: whether this process writes the run (default: rank 0). ``multirun``: whether a
    job that is running elsewhere is skipped rather than refused (default: Hydra's mode).
    """

    def __init__(
        self, cfg: DictConfig, *, tracks: bool | None = None, multirun: bool | None = None
    ) -> None:
        self.cfg = cfg
        self.tracks = rank_zero_only.rank == 0 if tracks is None else tracks
        self.multirun = in_multirun() if multirun is None else multirun
        self.guard = SignalGuard()
        self.client: Any = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None  # set once the run is created or reopened
        self.resumed = 0  # how many times the run has been resumed, this launch included
        self.ckpt_path: str | None = None  # the checkpoint this launch continues from
        self.logged_steps: dict[str, int] | None = None
        self.uploader: CheckpointUploader | None = None
        self.outbox: outbox.Outbox | None = None  # a tracking server's records in transit
        self.result: TrainResult | None = None
        self._decision: resume.ResumePlan | None = None
        self._resolved: dict = {}
        self._key = ""
        self._heartbeat: Heartbeat | None = None
        self.trial: optuna_trial.TrialLink | None = None  # the sweep's trial (optuna_trial.*)

    # -- connect ---------------------------------------------------------------------------

    def __enter__(self) -> RunLifecycle:
        self.guard.install()
        try:
            self.connect()
        except BaseException:
            self.guard.restore()
            raise
        return self

    def connect(self) -> None:
        """Check that the tracking server answers (fail fast), then open the store and the
        experiment (tracking rank only)."""
        if not self.tracks:
            return
        logger = self.cfg.logger
        tracking.check_reachable(logger.tracking_uri)
        self.client, self.experiment_id = tracking.open_store(
            logger.tracking_uri, logger.experiment_name, logger.get("artifact_location")
        )

    # -- plan ------------------------------------------------------------------------------

    def plan(self) -> bool:
        """Decide on the config as the data completed it: True to train (a new run or a
        resume), False to skip (``self.result`` then holds the earlier run's result)."""
        if not self.tracks:
            return self._follow_rank_zero()
        resolved = OmegaConf.to_container(self.cfg, resolve=True)
        self._key = job_key(resolved)  # logger.* is no result key: the same with or without secrets
        self._resolved = redact_config(resolved)  # what the run records: no credentials
        self.trial = optuna_trial.TrialLink.from_config(self.cfg)  # reachable, or nothing written
        stale_after = float(
            (self.cfg.get("heartbeat") or {}).get("stale_after", DEFAULT_STALE_AFTER)
        )
        try:
            self._decision = resume.plan(
                self.client,
                self.experiment_id,
                self._key,
                str(self.cfg.get("resume", "auto")),
                result_params(self._resolved),
                stale_after,
                accept_pruned=self.trial is not None and self.trial.prunes,
            )
        except resume.RunningElsewhere as exc:
            if not self.multirun:
                raise  # a single launch says so and stops
            # Sweeps launched on several machines share the work: leave this job to its owner.
            log.info("skip %s: %s", self.cfg.logger.run_name, exc)
            return self._skip(TrainResult(exc.run.info.run_id, {}, skipped=True))
        if self._decision.action != "skip":
            return True
        run = self._decision.run
        sweep_tags = {k: v for k, v in hydra_tags().items() if k in _SWEEP_TAGS}
        tracking.set_tags(self.client, run.info.run_id, sweep_tags)
        metrics = dict(run.data.metrics)
        log.info(
            "skip %s: finished earlier as MLflow run %s (test/acc %s, val/acc_best %s); "
            "resume=never trains it again",
            self.cfg.logger.run_name,
            run.info.run_id,
            _fmt(metrics.get("test/acc")),
            _fmt(metrics.get("val/acc_best")),
        )
        if self.trial is not None:  # the trial gets the earlier run (and its pruning)
            self.trial.follow_skipped(run.info.run_id, self.experiment_id, run.data.tags)
        return self._skip(TrainResult(run.info.run_id, metrics, skipped=True))

    def _skip(self, result: TrainResult) -> bool:
        self.result = result
        ddp.publish_decision(self.cfg.paths.output_root, skip=True, ckpt_path=None)
        return False

    def _follow_rank_zero(self) -> bool:
        """A rank that does not track: rank 0's decision, read where rank 0 left it."""
        if ddp.slurm_ranks():  # SLURM tasks are not rank 0's children: read its decision file
            decision = ddp.await_decision(self.cfg.paths.output_root)
            if decision["skip"]:
                self.result = TrainResult(None, {}, skipped=True)
                return False
            decided = decision["ckpt_path"]
        else:
            decided = ddp.from_parent()
        self.ckpt_path = decided or self.cfg.get("ckpt_path")
        if self.ckpt_path:
            log.info(
                "rank %d continues from %s (rank 0 decided)", rank_zero_only.rank, self.ckpt_path
            )
        return True

    # -- start -----------------------------------------------------------------------------

    def start(self, fingerprint: str, tags: Mapping[str, str] | None = None) -> None:
        """Create this job's MLflow run, or reopen the interrupted one, with its tags, params
        and config; tell the other ranks; start the heartbeat. ``tags``: the launch's own
        (threads, batch slices), beside the ones the lifecycle knows."""
        if not self.tracks:
            return
        assert self._decision is not None, "plan() before start()"
        launch_tags = {
            **hydra_tags(),
            **identity_tags(),
            **cluster.scheduler_tags(),
            **dict(tags or {}),
            "data.fingerprint": fingerprint,
        }
        decided = None
        try:
            if self._decision.action == "resume":
                decided = self._reopen(self._decision, launch_tags, fingerprint)
            else:
                self._create(launch_tags)
        except checkpoints.NoUsableCheckpoint as exc:  # history cannot continue: a fresh run
            old = self._decision.run.info.run_id
            log.warning("%s; training this job from the start as a new run", exc)
            tracking.set_tags(
                self.client, old, {tracking.FAILURE_REASON_TAG: "no readable checkpoint"}
            )
            self.client.set_terminated(old, "FAILED")
            self._create(launch_tags)
        self.ckpt_path = decided or self.cfg.get("ckpt_path")
        if self.trial is not None:
            self.trial.link_run(self.run_id, self.experiment_id)
        ddp.publish_decision(self.cfg.paths.output_root, False, decided)
        ddp.pass_to_children(self.ckpt_path)
        self.outbox = outbox.for_run(self.client, self.cfg, self.run_id)
        self.uploader = CheckpointUploader(self.client, self.run_id, self.outbox)
        interval = float((self.cfg.get("heartbeat") or {}).get("interval", 60))
        self._heartbeat = Heartbeat(self.client, self.run_id, interval, self.outbox).__enter__()

    def _reopen(
        self, decision: resume.ResumePlan, launch_tags: dict[str, str], fingerprint: str
    ) -> str | None:
        """Reopen the run to resume (status back to RUNNING); the checkpoint to continue from."""
        run, client, cfg = decision.run, self.client, self.cfg
        run_id = run.info.run_id
        before = run.data.tags.get("data.fingerprint")
        if before and before != fingerprint:
            raise resume.ResumeError(
                f"run {run_id} was trained on other data (data.fingerprint {before}, now "
                f"{fingerprint}); launch with resume=never for a new run"
            )
        count = int(run.data.tags.get(resume.RESUME_COUNT_TAG, "0")) + 1
        downloads = Path(str(cfg.paths.output_dir)) / "checkpoints" / "downloaded"
        outbox.deliver_saved(client, outbox.saved_records(cfg.paths.output_root, run_id))
        ckpt = checkpoints.find_checkpoint(client, run, downloads)
        commit = tracking.git_state(project_root()).get("git.commit")
        if commit != run.data.tags.get("git.commit"):
            log.warning(
                "resuming run %s, started at commit %s, under commit %s",
                run_id,
                run.data.tags.get("git.commit"),
                commit,
            )
        step = checkpoints.checkpoint_step(ckpt) if ckpt else 0
        client.update_run(run_id, status="RUNNING")
        self.run_id, self.resumed = run_id, count  # from here on the exit sets its status
        tracking.set_tags(
            client,
            run_id,
            {
                **launch_tags,
                resume.RESUME_COUNT_TAG: str(count),
                resume.RESUMED_FROM_STEP_TAG: str(step if step is not None else "unknown"),
            },
        )
        config_text = OmegaConf.to_yaml(self._resolved)
        client.log_text(run_id, config_text, f"config/config-resume{count}.yaml")
        log.info(
            "resuming MLflow run %s (%s; %s) from %s",
            run_id,
            cfg.logger.run_name,
            decision.reason,
            ckpt or "the start: no checkpoint was saved",
        )
        self.logged_steps = tracking.logged_steps(client, run_id)
        return str(ckpt) if ckpt else None

    def _create(self, launch_tags: dict[str, str]) -> None:
        """A new run tagged with the job key, the code and environment, and the launch."""
        cfg, client = self.cfg, self.client
        tags = {
            "model": cfg.model.arch,
            "seed": str(cfg.seed),
            "mlflow.source.name": "seqbench-train",
            JOB_KEY_TAG: self._key,
            resume.RESUME_COUNT_TAG: "0",
            **tracking.git_state(project_root()),
            **tracking.environment_tags(),
            **launch_tags,
            **{str(k): str(v) for k, v in (cfg.logger.get("tags") or {}).items()},
        }
        run = tracking.create_run(client, self.experiment_id, cfg.logger, tags)
        self.run_id = run.info.run_id
        tracking.log_params(client, self.run_id, self._resolved)
        client.log_text(self.run_id, OmegaConf.to_yaml(self._resolved), "config/config.yaml")
        log.info(
            "MLflow run %s (%s) in experiment %r at %s",
            cfg.logger.run_name,
            self.run_id,
            cfg.logger.experiment_name,
            redact_uri(str(cfg.logger.tracking_uri)),
        )

    def record_inputs(self, datamodule: Any, trainable_params: int) -> None:
        """A new run's data inputs and model size (a resumed run has them already)."""
        if self.run_id is None or self.resumed:
            return
        lineage.log_data(self.client, self.run_id, datamodule)
        self.client.log_metric(self.run_id, "model/trainable_params", trainable_params)

    # -- what the run lends the trainer ------------------------------------------------------

    def logger(self) -> tracking.RunLogger:
        """Lightning's MLflow logger attached to this run; it never sets the run's status."""
        return tracking.RunLogger(
            experiment_name=self.cfg.logger.experiment_name,
            tracking_uri=self.cfg.logger.tracking_uri,
            run_id=self.run_id,
            logged_steps=self.logged_steps,
            outbox=self.outbox,
        )

    def callbacks(self, configured: Sequence[L.Callback]) -> list[L.Callback]:
        """The callbacks the run adds to ``configured`` (which it also wires): each
        ``TrackedCheckpoint`` gets the run's uploader, ``StopOnSignal`` checkpoints and uploads
        on a signal, ``AtomicCheckpoints`` makes every checkpoint write atomic,
        ``HeartbeatEachEpoch`` refreshes the heartbeat after every epoch."""
        checkpoint_dir = Path(str(self.cfg.paths.output_dir)) / "checkpoints"
        for callback in configured:
            if isinstance(callback, TrackedCheckpoint):
                callback.uploader = self.uploader
                checkpoint_dir = Path(callback.dirpath or checkpoint_dir)
        added: list[L.Callback] = [
            AtomicCheckpoints(),
            StopOnSignal(self.guard, checkpoint_dir, self.uploader),
        ]
        if self.outbox is not None:
            added.append(outbox.guard(self.outbox, self.cfg, self.run_id, checkpoint_dir))
        if self._heartbeat is not None:
            added.append(HeartbeatEachEpoch(self._heartbeat.beat))
        if self.cfg.get("optuna_trial"):  # every rank: they all take rank 0's decision
            added.append(OptunaPruning(str(self.cfg.optimized_metric), self.trial))
        return added

    def raise_if_interrupted(self, where: str = "") -> None:
        """Raise ``RunInterrupted`` when a signal arrived while the trainer finished."""
        self.guard.raise_if_requested(where)

    # -- result and exit -------------------------------------------------------------------

    def log_result(self, outcome: Any, task: Any, datamodule: Any) -> TrainResult:
        """Log a ``seqbench.training.fit.FitOutcome``: run-level metrics at step ``resumed``
        (a resumed run adds a point instead of a second one at the same step), the confusion
        matrix, the best checkpoint (unless already uploaded) and the run's MLflow model."""
        metrics = outcome.metrics
        if self.outbox is not None:  # what follows talks to the server directly
            self.outbox.flush(outbox.limit(self.cfg))
        self.result = TrainResult(self.run_id, metrics)
        if self.run_id is None:
            return self.result
        client, run_id = self.client, self.run_id
        if outcome.tested:
            plots.log_confusion_matrix(
                client, run_id, task.confusion_matrix, datamodule.label_names
            )
        client.log_metric(run_id, "perf/fit_seconds", outcome.fit_seconds, step=self.resumed)
        if "val/acc_best" in metrics:
            client.log_metric(run_id, "val/acc_best", metrics["val/acc_best"], step=self.resumed)
        if outcome.pruned_epoch is not None:  # a partial result: no model to keep
            tracking.set_tags(client, run_id, optuna_trial.pruned_tags(outcome.pruned_epoch))
            log.info(
                "pruned after epoch %d: %s", outcome.pruned_epoch, _fmt(metrics.get("val/acc_best"))
            )
            return self.result
        if outcome.best_path and self.uploader is not None:
            self.uploader.upload_best(Path(outcome.best_path))
        mlflow_model.log_run_model(client, run_id, self.cfg, task, datamodule, outcome.best_path)
        log.info("finished: %s", {k: round(v, 4) for k, v in sorted(metrics.items()) if "/" in k})
        return self.result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the heartbeat, set the final status, drop a finished run's resume state, give
        the signals back. Exceptions propagate."""
        try:
            if self._heartbeat is not None:
                self._heartbeat.__exit__(None, None, None)
                self._heartbeat = None
            if self.outbox is not None and not self.outbox.finish(
                exc,
                outbox.saved_records(self.cfg.paths.output_root, self.run_id),
                outbox.limit(self.cfg),
            ):
                return  # the server is away: the next launch delivers and marks the run
            if self.run_id is not None:
                tracking.finish(self.client, self.run_id, exc)
                if exc is None and self.uploader and not self.cfg.logger.keep_resume_checkpoint:
                    self.uploader.drop_resume()  # finished: never resumed again
        finally:
            self.guard.restore()
