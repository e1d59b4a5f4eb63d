"""Hydra sweeper that asks Optuna for trials and runs them as Hydra jobs.

The search space is written in Hydra's override grammar, in ``hydra.sweeper.params`` or on the
command line::

    choice(a, b, c) / a,b,c          -> CategoricalDistribution
    range(start, stop[, step])       -> IntDistribution (FloatDistribution for float bounds)
    interval(low, high)              -> FloatDistribution
    tag(log, interval(low, high))    -> FloatDistribution(log=True)
    tag(int, interval(low, high))    -> IntDistribution   (``tag(int, log, ...)`` for both)

Any other override is passed unchanged to every job. Each batch of ``n_jobs`` trials is launched
together through the configured Hydra launcher (``hydra/launcher=joblib`` runs it in parallel);
a job's return value is the objective.

``n_trials`` is the number of finished trials the study should hold (COMPLETE, PRUNED or FAIL),
so relaunching the same command resumes a persistent study instead of adding ``n_trials`` more.
Trials left RUNNING by a sweeper process that no longer exists (killed, crashed) are marked FAIL
with the user attribute ``seqbench.interrupted`` and do not count; the same for a batch cut short
by Ctrl-C or a signal. Their parameters are queued again, so the next launch re-runs each such
trial once with the same configuration, which resumes its MLflow run from its checkpoint. A study keeps each parameter's kind and choices: changing
them (not just a numeric range) is refused before any trial starts; use a new ``study_name``.
"""

import logging
import math
import os
import re
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString, Transformer
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException, HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from seqbench.config.store import sqlite_path

log = logging.getLogger(__name__)

OWNER_ATTR = "seqbench.sweeper"  # {"host", "pid", "token"} of the sweeper process that asked for it
INTERRUPTED_ATTR = "seqbench.interrupted"  # marks a trial failed because its sweeper died
ERROR_ATTR = "seqbench.error"  # why a trial failed (exception or unusable return value)
RETRY_OF_ATTR = "seqbench.retry_of"  # an interrupted trial this one re-runs
START_FROM_ATTR = "seqbench.start_from"  # a trial queued from hydra.sweeper.start_from
OUTPUT_DIR_ATTR = "seqbench.output_dir"  # the job's Hydra output directory
RESULTS_FILE = "optimization_results.yaml"
_SEARCH_TAGS = {"log", "int"}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # Keep `sampler` a config: the sweeper instantiates it itself (to offset its seed on resume).
    _recursive_: bool = False
    # Total finished trials (COMPLETE/PRUNED/FAIL) the study should hold; a relaunch tops it up.
    n_trials: int = 20
    # Trials asked for and launched together per batch (parallel with hydra/launcher=joblib).
    n_jobs: int = 1
    # "maximize" or "minimize" the value the task function returns.
    direction: str = "maximize"
    # Optuna storage URL (e.g. sqlite:///path/optuna.db); null = in memory (no resume).
    storage: str | None = None
    # Study in `storage`; loaded if it exists. null = a fresh auto-named study.
    study_name: str | None = None
    # Optuna sampler, instantiated with `seed` + (trials already in the study).
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None}
    )
    # Search space: {config key or group: override value}, e.g. {lr: "tag(log, interval(1e-4, 1e-2))"}.
    params: dict[str, Any] = field(default_factory=dict)
    # If set (e.g. "logger.tags"), every job gets ++<key>.optuna_trial=N and ++<key>.optuna_study=NAME.
    trial_tags_key: str | None = None
    # Configurations to try first, each {param: value} over (some of) `params`, queued once when
    # the study is new (Optuna's enqueue_trial): a known good start, e.g. a hand-tuned model,
    # that the sampler then has to beat. Parameters a configuration leaves out are sampled.
    start_from: list[dict[str, Any]] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="seqbench_optuna",
    node=OptunaSweeperConf,
    provider="seqbench_optuna_sweeper",
)


def _plain(value: Any) -> Any:
    """A parsed override element without Hydra's quoting wrapper."""
    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def param_name(override: Override) -> str:
    """The name a swept key gets in Optuna (no +/++ prefix): ``model.optimizer.lr``, ``model``."""
    return (
        override.key_or_group
        if override.package is None
        else f"{override.key_or_group}@{override.package}"
    )


def to_distribution(override: Override) -> Any:
    """The Optuna distribution for one sweep override (choice, range or interval)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    name = param_name(override)
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()) or set())
    if unknown := tags - _SEARCH_TAGS:
        raise ValueError(
            f"{name}: unsupported tag(s) {sorted(unknown)}; use {sorted(_SEARCH_TAGS)}"
        )
    log_scale, integer = "log" in tags, "int" in tags

    if override.is_choice_sweep():
        if tags:
            raise ValueError(f"{name}: tags {sorted(tags)} do not apply to choice()")
        choices = [_plain(v) for v in override.sweep_iterator()]
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise ValueError(
                    f"{name}: choice values must be null, bool, int, float or str, got {choice!r}"
                )
        return CategoricalDistribution(choices)

    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{name}: {override.get_value_string()} is empty")
        low, high, step = min(values), max(values), abs(sweep.step)
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)) or integer:
            return IntDistribution(int(low), int(high), log=log_scale, step=int(step))
        if log_scale:
            raise ValueError(
                f"{name}: a float range() cannot be log-scaled; use tag(log, interval(...))"
            )
        return FloatDistribution(float(low), float(high), step=float(step))

    if override.is_interval_sweep():
        if integer:
            return IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)

    raise ValueError(f"{name}: {override.input_line!r} is not a choice, range or interval sweep")


def format_value(value: Any, parser: OverridesParser) -> str:
    """``value`` as the right-hand side of an override that parses back to exactly ``value``."""
    text = Transformer.str(value)
    if isinstance(value, str):
        try:
            parsed = parser.parse_override(f"key={text}").value()
        except HydraException:
            parsed = None
        if not isinstance(parsed, str) or parsed != value:  # e.g. "32", "true", "a b", "it's"
            text = QuotedString(text=value, quote=Quote.single).with_quotes()
    return text


def parse_search_space(
    parser: OverridesParser, params: Mapping[str, Any], arguments: Sequence[str]
) -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """Split ``params`` (config) and ``arguments`` (command line, wins on the same key) into the
    search space ``{name: (override key, distribution)}`` and overrides every job gets as they are."""
    lines = [f"{key}={value}" for key, value in params.items()]
    merged: dict[str, Override] = {}
    for override in [*parser.parse_overrides(lines), *parser.parse_overrides(list(arguments))]:
        merged.pop(param_name(override), None)  # a later override of the same key replaces it
        merged[param_name(override)] = override
    space: dict[str, tuple[str, Any]] = {}
    fixed: list[str] = []
    for name, override in merged.items():
        if override.is_sweep_override():
            space[name] = (override.get_key_element(), to_distribution(override))
        else:
            assert override.input_line is not None
            fixed.append(override.input_line)
    return space, fixed


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial.suggest_*`` for one distribution (what ``study.ask(distributions)`` does, but with
    the trial already in hand should a suggestion fail)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def check_compatible(
    trials: Sequence[Any], distributions: Mapping[str, Any], study_name: str
) -> None:
    """Fail early, before any trial is asked for, when the search space changes a parameter in a
    way an existing study cannot store: another kind (choice vs interval), another log setting,
    or other choices."""
    problems = []
    for name, new in distributions.items():
        old = next(
            (t.distributions[name] for t in reversed(trials) if name in t.distributions), None
        )
        if old is None or old == new:
            continue
        numeric = not hasattr(new, "choices") and not hasattr(old, "choices")
        if type(old) is not type(new) or not numeric or old.log != new.log:
            problems.append(f"{name}: {old} in the study, now {new}")
    if problems:
        raise ValueError(
            f"the search space does not fit study {study_name!r} (choose a new hydra.sweeper.study_name "
            "or keep these parameters as they were):\n  " + "\n  ".join(problems)
        )


def count_finished(trials: Iterable[Any]) -> int:
    """Trials that count towards ``n_trials``: COMPLETE, PRUNED or FAIL, but not interrupted."""
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in trials if t.state in finished and not t.user_attrs.get(INTERRUPTED_ATTR))


def _fits(dist: Any, value: Any) -> bool:
    """Whether ``value`` is one of a choice's values or inside an interval."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):  # a categorical raises for a value it does not hold
        return False


def retry_later(study: Any, trial: Any) -> None:
    """Queue an interrupted trial's parameters for the next ``ask``. The relaunched job then has
    the same configuration, hence the same seqbench job key, and continues the interrupted
    MLflow run from its checkpoint instead of starting a new one (``seqbench.run.resume``)."""
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF_ATTR: trial.number})


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
        self.storage_url = storage  # where the study lives
        self.study_name = study_name
        self.trial_tags_key = trial_tags_key
        self.start_from = [
            dict(OmegaConf.to_container(c) if OmegaConf.is_config(c) else c)
            for c in (start_from or [])
        ]
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
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

    def _open_study(self) -> tuple[Any, Any]:
        import optuna

        if self.storage_url is None:
            log.warning(
                "hydra.sweeper.storage is null: the study lives in memory and cannot be resumed"
            )
        elif (database := sqlite_path(self.storage_url)) is not None:
            database.expanduser().parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.get_storage(self.storage_url)
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
        seed_offset = len(study.get_trials(deepcopy=False))
        study.sampler = self._make_sampler(seed_offset)
        return storage, study

    def _make_sampler(self, seed_offset: int) -> Any:
        """The configured sampler; a set ``seed`` is offset by the study's size so a resumed
        study does not replay the random start-up suggestions of the first launch."""
        from hydra.utils import instantiate

        conf = self.sampler_conf
        if conf is None:
            return None
        if not OmegaConf.is_config(conf) and not isinstance(conf, Mapping):
            return conf  # already a sampler object
        conf = OmegaConf.create(
            OmegaConf.to_container(conf, resolve=True) if OmegaConf.is_config(conf) else dict(conf)
        )
        if conf.get("seed") is not None:
            conf.seed = int(conf.seed) + seed_offset
        return instantiate(conf)

    def _owner_is_gone(self, owner: Any) -> bool:
        """True when the sweeper process that asked for a trial provably no longer runs."""
        if not isinstance(owner, Mapping) or owner.get("host") != self.owner["host"]:
            return False  # another machine (or not ours): cannot tell, leave it
        if owner.get("token") == self.owner["token"]:
            return False
        pid = int(owner.get("pid", -1))
        if pid == os.getpid():
            return True  # same pid, other token: the pid was reused after that sweeper died
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OSError):
            return False
        return False

    def _fail_interrupted_trials(self, storage: Any, study: Any) -> None:
        from optuna.trial import TrialState

        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        stale = [t for t in running if self._owner_is_gone(t.user_attrs.get(OWNER_ATTR))]
        if stale:
            study_id = storage.get_study_id_from_name(study.study_name)
            for trial in stale:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                if trial.params:  # asked and suggested: re-run exactly that configuration
                    retry_later(study, trial)
            log.warning(
                "marked %d trial(s) left RUNNING by a dead sweeper as FAIL (not counted) and "
                "queued them again with the same parameters: %s",
                len(stale),
                [t.number for t in stale],
            )
        if others := len(running) - len(stale):
            log.warning(
                "%d trial(s) are RUNNING in another live sweeper or on another host; left alone",
                others,
            )

    def _queue_start_from(self, study: Any, distributions: Mapping[str, Any]) -> None:
        """Queue ``start_from`` before the study's first trial (never again on a relaunch)."""
        for i, params in enumerate(self.start_from):
            if unknown := sorted(set(params) - set(distributions)):
                raise ValueError(
                    f"hydra.sweeper.start_from[{i}] sets {unknown}, which the search space does "
                    f"not have; searched: {sorted(distributions)}"
                )
            for name, value in params.items():
                if not _fits(distributions[name], value):
                    raise ValueError(
                        f"hydra.sweeper.start_from[{i}]: {name}={value!r} is outside "
                        f"{distributions[name]}"
                    )
        if self.start_from and not study.get_trials(deepcopy=False):
            for i, params in enumerate(self.start_from):
                study.enqueue_trial(params, user_attrs={START_FROM_ATTR: i})
            log.info("queued %d start_from configuration(s) first", len(self.start_from))

    # -- sweep ------------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> Any:
        assert (
            self.config is not None and self.launcher is not None and self.hydra_context is not None
        )
        from optuna.trial import TrialState

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
        self._queue_start_from(study, distributions)
        self._fail_interrupted_trials(storage, study)
        done = count_finished(study.get_trials(deepcopy=False))
        log.info(
            "Optuna study %r in %s: %d of %d trials finished; %s %s over %s",
            study.study_name,
            _redact(self.storage_url) or "memory",
            done,
            self.n_trials,
            self.direction,
            self.config.get("optimized_metric", "the return value"),
            {name: str(dist) for name, dist in distributions.items()},
        )

        returns: list[Sequence[JobReturn]] = []
        launched = completed = 0
        while (remaining := self.n_trials - count_finished(study.get_trials(deepcopy=False))) > 0:
            trials: list[Any] = []
            try:
                for _ in range(min(self.n_jobs, remaining)):
                    trials.append(study.ask())
                    trials[-1].set_user_attr(OWNER_ATTR, self.owner)
                    for name, dist in distributions.items():
                        suggest(trials[-1], name, dist)
                batch = [
                    self._job_overrides(trial, space, fixed, parser, study.study_name)
                    for trial in trials
                ]
                self.validate_batch_is_legal(batch)
                results = self.launcher.launch(batch, initial_job_idx=launched)
            except BaseException:  # Ctrl-C, a signal, bad config: leave no trial RUNNING
                for trial in trials:  # none has been told yet
                    trial.set_user_attr(INTERRUPTED_ATTR, True)
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    if len(trial.params) == len(distributions):
                        retry_later(study, trial)
                raise
            for trial, result in zip(trials, results, strict=True):
                completed += self._tell(study, trial, result)
            launched += len(trials)
            returns.append(results)

        self._report(study, sweep_dir)
        if launched and not completed:
            raise RuntimeError(
                f"all {launched} trials of this sweep failed; see the job logs under {sweep_dir}"
            )
        return returns

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
        return overrides

    def _tell(self, study: Any, trial: Any, result: JobReturn) -> bool:
        """Report one job's outcome; True when the trial completed with a usable value."""
        from optuna.trial import TrialState

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
            study.tell(trial, state=TrialState.FAIL)
            return False
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
            study.tell(trial, state=TrialState.FAIL)
            return False
        study.tell(trial, value)
        log.info("trial %d finished: %s with %s", trial.number, value, trial.params)
        return True

    def _report(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        states = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": _redact(self.storage_url),
            "direction": self.direction,
            "n_trials": self.n_trials,
            "n_finished": count_finished(trials),
            "trial_states": {k: v for k, v in states.items() if v},
            "best_trial": None,
            "best_value": None,
            "best_params": None,
        }
        if states.get("COMPLETE"):
            best = study.best_trial
            results |= {
                "best_trial": best.number,
                "best_value": best.value,
                "best_params": dict(best.params),
            }
            log.info("Best trial %d: value %s with %s", best.number, best.value, best.params)
        else:
            log.warning("no COMPLETE trial in study %r yet", study.study_name)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        log.info("wrote %s", sweep_dir / RESULTS_FILE)
