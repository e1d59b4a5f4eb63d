"""Hydra sweeper that asks Optuna for trials and runs them as Hydra jobs.

The search space is written in Hydra's override grammar, in ``hydra.sweeper.params`` or on the
command line::

    choice(a, b, c) / a,b,c          -> CategoricalDistribution
    range(start, stop[, step])       -> IntDistribution (FloatDistribution for float bounds)
    interval(low, high)              -> FloatDistribution
    tag(log, interval(low, high))    -> FloatDistribution(log=True)
    tag(int, interval(low, high))    -> IntDistribution   (``tag(int, log, ...)`` for both)

Any other override is passed unchanged to every job; a job's return value is the objective.

**Asynchronous.** There are no batches: the sweeper keeps up to ``n_jobs`` trials in flight and
asks for the next one as soon as one finishes. A launcher that runs jobs in other processes
(``hydra/launcher=joblib``, ``slurm``, ``slurm_local``) gets one ``launch`` call per trial from
one thread per slot; Hydra's basic launcher runs jobs in this process, one at a time.

**Shared studies.** ``n_trials`` is the number of finished trials the study should hold
(COMPLETE, PRUNED or FAIL), so relaunching the same command resumes a persistent study, and
several sweepers started with the same command on one study (a database or journal storage,
see :mod:`.storage`) together finish exactly ``n_trials`` (:mod:`.trials`). Before each ask a
sweeper fails the trials of dead sweepers (same host: the pid is gone; any host: Optuna's
heartbeat went stale) and queues their parameters again, so one re-run, by whichever sweeper
asks next, continues the interrupted MLflow run (same parameters, same job key).

**Pruning.** ``pruner`` is an Optuna pruner config (``_target_``). The sweeper builds it once to
check it, sets it on the study and stores its config as the study attribute
``seqbench.pruner``; each job gets ``++optuna_trial.storage/study/number`` overrides, reports its
validation metric per epoch, and tells Optuna itself when it prunes. That needs a storage both
processes reach, so pruning with ``storage: null`` is refused.

A study keeps each parameter's kind and choices: changing them (not just a numeric range) is
refused before any trial starts; use a new ``study_name``.
"""

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from .config import OptunaSweeperConf  # noqa: F401 - registers hydra/sweeper=seqbench_optuna
from .heartbeat import TrialHeartbeat
from .pruning import build_pruner, plain_config
from .results import RESULTS_FILE, write_results  # noqa: F401
from .space import (  # noqa: F401 - re-exported: the sweeper's public helpers
    check_compatible,
    fits,
    format_value,
    param_name,
    parse_search_space,
    suggest,
    to_distribution,
)
from .storage import open_storage
from .trials import (  # noqa: F401 - re-exported
    ERROR_ATTR,
    INTERRUPTED_ATTR,
    OUTPUT_DIR_ATTR,
    OWNER_ATTR,
    PRUNER_ATTR,
    RETRY_OF_ATTR,
    START_FROM_ATTR,
    SURPLUS_ATTR,
    budget_used,
    count_finished,
    fail_dead_owners,
    interrupt,
    new_owner,
    owner_is_gone,
    queue_start_from,
    retry_later,
    set_aside_surplus,
    trial_id_of,
)

log = logging.getLogger(__name__)

TRIAL_KEY = "optuna_trial"  # each job's ++optuna_trial.{storage,study,number}


def _redact(url: str | None) -> str | None:
    return None if url is None else re.sub(r"//([^/:@]+):[^/@]*@", r"//\1:***@", url)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        direction: str,
        storage: str | None,
        study_name: str | None,
        sampler: Any,
        params: Mapping[str, Any] | None,
        trial_tags_key: str | None,
        start_from: Sequence[Mapping[str, Any]] | None = None,
        pruner: Any = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
    ) -> None:
        for name, value, valid, expected in (
            ("n_trials", n_trials, n_trials >= 0, ">= 0"),
            ("n_jobs", n_jobs, n_jobs >= 1, ">= 1"),
            (
                "direction",
                direction,
                direction in ("maximize", "minimize"),
                "'maximize' or 'minimize'",
            ),
        ):
            if not valid:
                raise ValueError(f"{name} must be {expected}, got {value!r}")
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.direction = direction
        self.params = dict(params or {})  # the search: space and sampler
        self.sampler_conf = sampler
        self.pruner_conf = plain_config(pruner) if pruner is not None else None
        self.storage_url = storage  # where the study lives
        self.study_name = study_name
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.trial_tags_key = trial_tags_key
        self.start_from = [dict(plain_config(c)) for c in (start_from or [])]
        self.owner = new_owner()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- study ------------------------------------------------------------------------------

    def _owner_is_gone(self, owner: Any) -> bool:
        return owner_is_gone(owner, self.owner)

    def _open_study(self) -> tuple[Any, Any]:
        import optuna

        pruner = build_pruner(self.pruner_conf)
        if pruner is not None and self.storage_url is None:
            raise ValueError(
                "hydra.sweeper.pruner needs hydra.sweeper.storage: the jobs report to their "
                "trial through the storage (e.g. sqlite:///outputs/mlflow/optuna.db); "
                "or set hydra.sweeper.pruner=null"
            )
        if self.storage_url is None:
            log.warning(
                "hydra.sweeper.storage is null: the study lives in memory and cannot be resumed"
            )
        storage = open_storage(
            self.storage_url,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            stale_trial_callback=retry_later,
        )
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            direction=self.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise ValueError(
                f"study {study.study_name!r} in {_redact(self.storage_url)} was created to "
                f"{study.direction.name.lower()}, not {self.direction}; choose another study_name"
            )
        if pruner is not None:
            study.pruner = pruner
        study.set_user_attr(PRUNER_ATTR, self.pruner_conf)  # what the jobs build (None: off)
        study.sampler = self._make_sampler(len(study.get_trials(deepcopy=False)))
        return storage, study

    def _make_sampler(self, seed_offset: int) -> Any:
        """The configured sampler; a set ``seed`` is offset (by the trial number it samples
        for), so a resumed study does not replay the first launch's random suggestions and
        sweepers sharing a study do not suggest the same ones."""
        from hydra.utils import instantiate

        conf = self.sampler_conf
        if conf is None:
            return None
        if not OmegaConf.is_config(conf) and not isinstance(conf, Mapping):
            return conf  # already a sampler object
        conf = OmegaConf.create(plain_config(conf))
        if conf.get("seed") is not None:
            conf.seed = int(conf.seed) + seed_offset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental options (constant_liar) warn each time
            return instantiate(conf)

    def _seeded(self) -> bool:
        conf = self.sampler_conf
        return (OmegaConf.is_config(conf) or isinstance(conf, Mapping)) and (
            conf.get("seed") is not None
        )

    def _fail_interrupted_trials(self, storage: Any, study: Any, report: bool = False) -> None:
        from optuna.trial import TrialState

        fail_dead_owners(storage, study, self.owner)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        others = [t.number for t in running if t.user_attrs.get(OWNER_ATTR) != self.owner]
        if others and report:
            log.info("trial(s) %s are RUNNING in other live sweepers; left alone", others)

    def next_trial(self, storage: Any, study: Any, distributions: Mapping[str, Any]) -> Any:
        """Ask for the next trial and suggest its parameters; None when the study has (or is
        running) its ``n_trials``. A trial that loses a race with another sweeper for the last
        places is set aside as surplus (and None returned)."""
        from optuna.trial import TrialState

        self._fail_interrupted_trials(storage, study)
        trials = study.get_trials(deepcopy=False)
        if budget_used(trials, self.owner) >= self.n_trials:
            return None
        if self._seeded():
            study.sampler = self._make_sampler(len(trials))  # the number it will most likely get
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat ... used with Study.optimize"
            trial = study.ask()
        trial.set_user_attr(OWNER_ATTR, self.owner)
        if budget_used(study.get_trials(deepcopy=False), self.owner, before=trial.number) >= (
            self.n_trials
        ):
            set_aside_surplus(storage, study, trial)
            return None
        if self._seeded() and trial.number != len(trials):
            study.sampler = self._make_sampler(trial.number)
        try:
            for name, dist in distributions.items():
                suggest(trial, name, dist)
        except BaseException:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        return trial

    # -- sweep ------------------------------------------------------------------------------

    def _runs_in_process(self) -> bool:
        """Hydra's basic launcher runs the job in this process (Hydra's global state, chdir,
        logging): one at a time. Other launchers start processes or cluster jobs."""
        return type(self.launcher).__name__ == "BasicLauncher"

    def sweep(self, arguments: list[str]) -> Any:
        assert (
            self.config is not None and self.launcher is not None and self.hydra_context is not None
        )
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = parse_search_space(parser, self.params, arguments)
        if not space:
            raise ValueError(
                "nothing to search: set hydra.sweeper.params or pass choice()/interval() overrides"
            )
        distributions = {name: dist for name, (_, dist) in space.items()}

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        storage, study = self._open_study()
        check_compatible(study.get_trials(deepcopy=False), distributions, study.study_name)
        queue_start_from(study, self.start_from, distributions)
        self._fail_interrupted_trials(storage, study, report=True)
        log.info(
            "Optuna study %r in %s: %d of %d trials finished; %s %s over %s; pruner %s",
            study.study_name,
            _redact(self.storage_url) or "memory",
            count_finished(study.get_trials(deepcopy=False)),
            self.n_trials,
            self.direction,
            self.config.get("optimized_metric", "the return value"),
            {name: str(dist) for name, dist in distributions.items()},
            (self.pruner_conf or {}).get("_target_"),
        )

        slots = 1 if self._runs_in_process() else self.n_jobs
        # Only a database storage beats (getattr: a journal or memory storage has no heartbeat).
        heartbeat = TrialHeartbeat(
            storage, getattr(storage, "get_heartbeat_interval", lambda: None)()
        )
        pool = ThreadPoolExecutor(slots, thread_name_prefix="trial") if slots > 1 else None
        in_flight: dict[Future | None, Any] = {}
        outcomes: dict[str, int] = {"complete": 0, "pruned": 0, "failed": 0}
        returns: list[Sequence[JobReturn]] = []

        try:
            while True:
                while len(in_flight) < slots:
                    trial = self.next_trial(storage, study, distributions)
                    if trial is None:
                        break
                    overrides = self._job_overrides(trial, space, fixed, parser, study.study_name)
                    self.validate_batch_is_legal([overrides])
                    heartbeat.add(trial_id_of(storage, study, trial.number))
                    if pool is not None:
                        future = pool.submit(self.launcher.launch, [overrides], trial.number)
                        in_flight[future] = trial
                        continue
                    in_flight[None] = trial  # in this process: run it now
                    results = self.launcher.launch([overrides], initial_job_idx=trial.number)
                    del in_flight[None]
                    self._finish(storage, study, trial, results, heartbeat, outcomes, returns)
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    results = future.result()  # a launcher error: handled below, still in flight
                    trial = in_flight.pop(future)
                    self._finish(storage, study, trial, results, heartbeat, outcomes, returns)
        except BaseException:  # Ctrl-C, a signal, a launcher error: leave no trial RUNNING
            for trial in in_flight.values():
                interrupt(storage, study, trial)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            heartbeat.stop()
        if pool is not None:
            pool.shutdown()

        write_results(
            study,
            sweep_dir,
            {
                "storage": _redact(self.storage_url),
                "direction": self.direction,
                "n_trials": self.n_trials,
                "pruner": self.pruner_conf,
            },
        )
        launched = sum(outcomes.values())
        if launched and not outcomes["complete"] and not outcomes["pruned"]:
            raise RuntimeError(
                f"all {launched} trials of this sweep failed; see the job logs under {sweep_dir}"
            )
        return returns

    def _finish(
        self,
        storage: Any,
        study: Any,
        trial: Any,
        results: Sequence[JobReturn],
        heartbeat: TrialHeartbeat,
        outcomes: dict[str, int],
        returns: list[Sequence[JobReturn]],
    ) -> None:
        heartbeat.discard(trial_id_of(storage, study, trial.number))
        outcomes[self._tell(storage, study, trial, results[0])] += 1
        returns.append(results)

    def _job_overrides(
        self,
        trial: Any,
        space: Mapping[str, tuple[str, Any]],
        fixed: list[str],
        parser: OverridesParser,
        study_name: str,
    ) -> list[str]:
        overrides = [
            *fixed,
            *(
                f"{key}={format_value(trial.params[name], parser)}"
                for name, (key, _) in space.items()
            ),
        ]
        if self.trial_tags_key:
            overrides += [
                f"++{self.trial_tags_key}.optuna_trial={trial.number}",
                f"++{self.trial_tags_key}.optuna_study={format_value(study_name, parser)}",
            ]
        if self.storage_url is not None:  # the job reaches its trial through the storage
            overrides += [
                f"++{TRIAL_KEY}.storage={format_value(self.storage_url, parser)}",
                f"++{TRIAL_KEY}.study={format_value(study_name, parser)}",
                f"++{TRIAL_KEY}.number={trial.number}",
            ]
        return overrides

    def _tell(self, storage: Any, study: Any, trial: Any, result: JobReturn) -> str:
        """Report one job's outcome: "complete", "pruned" (the job told Optuna itself) or
        "failed"."""
        from optuna.trial import TrialState

        stored = storage.get_trial(trial_id_of(storage, study, trial.number))
        if stored.state.is_finished():  # the job pruned it (or a sweeper failed it as stale)
            if stored.state == TrialState.PRUNED:
                log.info("trial %d pruned by its job at step %s", trial.number, stored.last_step)
                return "pruned"
            log.warning("trial %d was already %s; not told again", trial.number, stored.state.name)
            return "failed"
        try:
            output_dir = result.hydra_cfg.hydra.runtime.output_dir if result.hydra_cfg else None
            if output_dir:
                trial.set_user_attr(OUTPUT_DIR_ATTR, str(output_dir))
        except Exception:  # bookkeeping only
            pass
        try:
            raw = result.return_value  # re-raises the job's exception if it failed
        except Exception as exc:
            # A job's own refused values (seqbench.train.JobFailed) need no traceback.
            trace = None if isinstance(exc, CompactHydraException) else exc
            log.warning(
                "trial %d failed: %s: %s", trial.number, type(exc).__name__, exc, exc_info=trace
            )
            trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}"[:1000])
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return "failed"
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value):
            metric = self.config.get("optimized_metric") if self.config is not None else None
            log.warning(
                "trial %d returned %r (optimized_metric %r missing?); marked FAIL",
                trial.number,
                raw,
                metric,
            )
            trial.set_user_attr(ERROR_ATTR, f"unusable return value {raw!r}")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return "failed"
        study.tell(trial, value, skip_if_finished=True)
        log.info("trial %d finished: %s with %s", trial.number, value, trial.params)
        return "complete"
