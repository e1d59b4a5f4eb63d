"""The Optuna trial a job runs for, as the sweeper names it: ``optuna_trial.{storage,study,number}``.

The Optuna sweeper (``hydra_plugins.seqbench_optuna_sweeper``) passes each job where its trial
lives, so the job reaches it wherever it runs (the sweeper's process, a joblib worker, a SLURM
node). The job then

- links its MLflow run to the trial (user attributes ``mlflow_run_id`` and
  ``mlflow_experiment_id``; the run already carries the trial number as a tag), so a study
  browser (optuna-dashboard) leads to the run;
- when the study has a pruner (the study's user attribute ``seqbench.pruner``, a ``_target_``
  dict the sweeper stores; absent or null: no pruning), reports the optimised metric after
  every validation epoch and asks whether to stop (``seqbench.training.pruning``);
- when pruned, marks the trial PRUNED itself (user attribute ``seqbench.pruned_epoch``), so
  the storage is right even if the sweeper dies, and tags its MLflow run ``seqbench.pruned``.

Only the rank that tracks (rank 0) opens the storage. Optuna (and Hydra's instantiate) are
imported only when a job has a trial: ``seqbench-report`` reads the tags from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from seqbench.config.store import redact_text, redact_uri

log = logging.getLogger(__name__)

PRUNER_ATTR = "seqbench.pruner"  # study user attr: the pruner's config, absent/None = off
PRUNED_EPOCH_ATTR = "seqbench.pruned_epoch"  # trial user attr: the epoch the pruner stopped at
RUN_ID_ATTR = "mlflow_run_id"  # trial user attrs: the MLflow run the trial trained
EXPERIMENT_ID_ATTR = "mlflow_experiment_id"
# the job's output folder; the sweeper writes the same attr (hydra_plugins' trials.py, which
# imports nothing from seqbench) on trials it tells, the job on every trial it links
OUTPUT_DIR_ATTR = "seqbench.output_dir"
PRUNED_TAG = "seqbench.pruned"  # MLflow run tags of a pruned run: "true" and the epoch
PRUNED_EPOCH_TAG = "seqbench.pruned_epoch"


class TrialUnavailable(RuntimeError):
    """The job's Optuna trial cannot be reached (storage away, study or trial unknown)."""


def pruned_tags(epoch: int) -> dict[str, str]:
    """The MLflow tags of a run the pruner stopped after (0-based) ``epoch``."""
    return {PRUNED_TAG: "true", PRUNED_EPOCH_TAG: str(epoch)}


def is_pruned(tags: Mapping[str, str]) -> bool:
    """Whether a run's tags say that Optuna's pruner stopped it."""
    return tags.get(PRUNED_TAG) == "true"


def _open_storage(url: str):  # noqa: ANN202 - an optuna.storages.BaseStorage
    """The storage behind ``url``, opened as the sweeper opens it (its ``journal:///`` URLs,
    SQLite's immediate transactions), else by Optuna's own URL rules (database URLs)."""
    try:
        from hydra_plugins.seqbench_optuna_sweeper.storage import open_storage
    except ImportError:  # a sweeper that has no storage module of its own
        import optuna

        return optuna.storages.get_storage(url)
    return open_storage(url)


class TrialLink:
    """One trial of a study in an Optuna storage, opened by the job that runs it."""

    def __init__(
        self, storage: str, study_name: str, number: int, output_dir: str | None = None
    ) -> None:
        import optuna
        from hydra.utils import instantiate

        self.number = number
        self.output_dir = output_dir  # the job's folder, recorded on the trial when linked
        self.where = f"trial {number} of study {study_name!r} in {redact_uri(storage)}"
        try:
            backend = _open_storage(storage)
            study_id = backend.get_study_id_from_name(study_name)
            spec = backend.get_study_user_attrs(study_id).get(PRUNER_ATTR)
            pruner = instantiate(spec) if spec else optuna.pruners.NopPruner()
            # The job never samples: a random sampler keeps Trial() from loading TPE's state.
            self.study = optuna.load_study(
                study_name=study_name,
                storage=backend,
                pruner=pruner,
                sampler=optuna.samplers.RandomSampler(),
            )
            self._trial_id = backend.get_trial_id_from_study_id_trial_number(study_id, number)
            self.trial = optuna.trial.Trial(self.study, self._trial_id)
        except Exception as exc:  # storage away, driver missing, unknown study or trial
            raise TrialUnavailable(
                f"cannot open Optuna {self.where}: {redact_text(f'{type(exc).__name__}: {exc}')}"
            ) from None
        self._storage = backend
        self.prunes = bool(spec)  # False: link the run, report nothing, prune nothing
        self.maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrialLink | None:
        """The trial ``cfg.optuna_trial`` names, or None when the job runs for no trial."""
        spec = cfg.get("optuna_trial")
        if not spec:
            return None
        values = OmegaConf.to_container(spec, resolve=True)
        assert isinstance(values, dict)
        output_dir = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
        return cls(
            str(values["storage"]),
            str(values["study"]),
            int(values["number"]),
            str(output_dir) if output_dir else None,
        )

    def _finished(self) -> bool:
        return self._storage.get_trial(self._trial_id).state.is_finished()

    def link_run(self, run_id: str, experiment_id: str) -> None:
        """Name the trial's MLflow run and the job's output folder, before the job can prune
        the trial: a finished trial takes no attributes (and keeps those it has)."""
        if self._finished():
            log.info("Optuna %s is finished already; not linking run %s", self.where, run_id)
            return
        self.trial.set_user_attr(RUN_ID_ATTR, run_id)
        self.trial.set_user_attr(EXPERIMENT_ID_ATTR, str(experiment_id))
        if self.output_dir:
            self.trial.set_user_attr(OUTPUT_DIR_ATTR, self.output_dir)

    def report(self, value: float, epoch: int) -> bool:
        """Report ``value`` at step ``epoch``; whether the study's pruner stops the trial. A trial
        finished elsewhere (the sweeper gave up on it) takes no report and prunes nothing."""
        if not self.prunes:
            return False
        if self._finished():
            log.warning("Optuna %s is finished already: epoch %d not reported", self.where, epoch)
            return False
        self.trial.report(value, step=epoch)
        return self.trial.should_prune()

    def tell_pruned(self, epoch: int) -> None:
        """Mark the trial PRUNED at ``epoch`` (its value: the last reported one). A trial the
        sweeper finished meanwhile is left as it is."""
        from optuna.trial import TrialState

        if not self._finished():
            self.trial.set_user_attr(PRUNED_EPOCH_ATTR, epoch)
        self.study.tell(self.number, state=TrialState.PRUNED, skip_if_finished=True)
        log.info("Optuna %s pruned after epoch %d", self.where, epoch)

    def follow_skipped(self, run_id: str, experiment_id: str, tags: Mapping[str, str]) -> None:
        """A job skipped because an earlier run finished it: link that run, and prune the trial
        too when the pruner had stopped that run (its partial value is no result)."""
        self.link_run(run_id, experiment_id)
        if is_pruned(tags):
            self.tell_pruned(int(tags.get(PRUNED_EPOCH_TAG, -1)))
