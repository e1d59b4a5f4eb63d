"""The study's trial budget when several sweeper processes share it, and what happens to the
trials of a sweeper that died.

``n_trials`` counts *finished* trials (COMPLETE, PRUNED, FAIL) that really ran: not the ones
failed because their sweeper died (``seqbench.interrupted``, or a FAIL that a queued retry
points to), nor surplus ones (``seqbench.surplus``: asked by one sweeper after the others had
already filled the budget, never launched). Several sweepers keep to the budget without talking
to each other:

- before asking, a sweeper counts finished trials plus RUNNING ones whose owner is alive, and
  asks only while that is below ``n_trials``;
- after asking, trial numbers (which the storage hands out in order) decide a race: the new
  trial is surplus when the trials counted *with a smaller number* already reach ``n_trials``.

So at most ``n_trials`` trials are launched (plus one re-run per interrupted trial), and at
most one surplus trial per sweeper is ever asked for.
"""

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .space import fits

log = logging.getLogger(__name__)

OWNER_ATTR = "seqbench.sweeper"  # {"host", "pid", "token"} of the sweeper process that asked for it
INTERRUPTED_ATTR = "seqbench.interrupted"  # marks a trial failed because its sweeper died
SURPLUS_ATTR = "seqbench.surplus"  # asked for after the budget was full; never launched
ERROR_ATTR = "seqbench.error"  # why a trial failed (exception or unusable return value)
RETRY_OF_ATTR = "seqbench.retry_of"  # an interrupted trial this one re-runs
START_FROM_ATTR = "seqbench.start_from"  # a trial queued from hydra.sweeper.start_from
OUTPUT_DIR_ATTR = "seqbench.output_dir"  # the job's Hydra output directory
PRUNER_ATTR = "seqbench.pruner"  # study attr: the pruner config the jobs build (None: off)
_QUEUE_ATTRS = (RETRY_OF_ATTR, START_FROM_ATTR)  # what a queued trial carries


def new_owner() -> dict[str, Any]:
    """This sweeper process, as recorded on the trials it asks for."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}


def owner_is_gone(owner: Any, me: Mapping[str, Any]) -> bool:
    """True when the sweeper process that asked for a trial provably no longer runs: same host,
    and its pid is gone (or is ours under another token: reused after it died). Another host's
    sweeper cannot be checked this way; Optuna's heartbeat covers it (``heartbeat_interval``)."""
    if not isinstance(owner, Mapping) or owner.get("host") != me["host"]:
        return False
    if owner.get("token") == me["token"]:
        return False
    pid = int(owner.get("pid", -1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


def _retried(trials: Iterable[Any]) -> set[int]:
    return {int(t.user_attrs[RETRY_OF_ATTR]) for t in trials if RETRY_OF_ATTR in t.user_attrs}


def _counted(trial: Any, retried: set[int]) -> bool:
    from optuna.trial import TrialState

    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        return False
    if trial.user_attrs.get(INTERRUPTED_ATTR) or trial.user_attrs.get(SURPLUS_ATTR):
        return False
    return not (trial.state == TrialState.FAIL and trial.number in retried)


def count_finished(trials: Iterable[Any]) -> int:
    """Trials that count towards ``n_trials``: COMPLETE, PRUNED or FAIL, but not interrupted
    (by a dead sweeper, a signal or a stale heartbeat) and not surplus."""
    trials = list(trials)
    retried = _retried(trials)
    return sum(1 for t in trials if _counted(t, retried))


def _live(trial: Any, me: Mapping[str, Any]) -> bool:
    from optuna.trial import TrialState

    return (
        trial.state == TrialState.RUNNING
        and not trial.user_attrs.get(INTERRUPTED_ATTR)
        and not owner_is_gone(trial.user_attrs.get(OWNER_ATTR), me)
    )


def budget_used(trials: Iterable[Any], me: Mapping[str, Any], before: int | None = None) -> int:
    """Finished trials that count plus RUNNING ones of live sweepers; with ``before``, only the
    trials numbered below it (what decides whether trial ``before`` is surplus)."""
    trials = list(trials)
    retried = _retried(trials)
    return sum(
        1
        for t in trials
        if (before is None or t.number < before) and (_counted(t, retried) or _live(t, me))
    )


def trial_id_of(storage: Any, study: Any, number: int) -> int:
    """The storage's id of trial ``number`` (public storage API, not ``Trial._trial_id``)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def retry_later(study: Any, trial: Any) -> None:
    """Queue an interrupted trial's parameters for the next ``ask`` (of any sweeper on the
    study). The re-run job then has the same configuration, hence the same seqbench job key,
    and continues the interrupted MLflow run from its checkpoint (``seqbench.run.resume``).
    Also Optuna's heartbeat callback: there the trial is already FAIL, and the queued retry
    pointing at it is what keeps it from counting."""
    if not trial.params:  # asked but never suggested: nothing ran, nothing to repeat
        return
    if any(
        t.user_attrs.get(RETRY_OF_ATTR) == trial.number for t in study.get_trials(deepcopy=False)
    ):
        return  # queued (or re-run) already
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF_ATTR: trial.number})
    log.warning("queued trial %d's parameters again (its sweeper died)", trial.number)


def fail_interrupted(storage: Any, study: Any, trial: Any) -> bool:
    """Mark a RUNNING trial of a dead sweeper FAIL (interrupted, not counted) and queue its
    parameters once. False when another process finished it first (an atomic state change:
    only one of several sweepers that see the same dead trial re-queues it)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial_id = trial_id_of(storage, study, trial.number)
    try:
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    retry_later(study, trial)
    return True


def fail_dead_owners(storage: Any, study: Any, me: Mapping[str, Any]) -> list[int]:
    """Fail (and queue again) the RUNNING trials of sweepers on this host that no longer run,
    and, when the storage has a heartbeat, those whose heartbeat went stale (any host)."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op without a heartbeat
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = [t for t in running if owner_is_gone(t.user_attrs.get(OWNER_ATTR), me)]
    failed = [t.number for t in stale if fail_interrupted(storage, study, t)]
    if failed:
        log.warning(
            "marked trial(s) %s, left RUNNING by a dead sweeper, FAIL (not counted); "
            "their parameters are queued to run once more",
            failed,
        )
    return failed


def set_aside_surplus(storage: Any, study: Any, trial: Any) -> None:
    """A trial asked for after the budget was full: FAIL with ``seqbench.surplus`` (never
    counted, never launched); a queued configuration it took goes back into the queue."""
    from optuna.trial import TrialState

    frozen = storage.get_trial(trial_id_of(storage, study, trial.number))
    trial.set_user_attr(SURPLUS_ATTR, True)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    fixed = frozen.system_attrs.get("fixed_params")
    if fixed:
        attrs = {k: v for k, v in frozen.user_attrs.items() if k in _QUEUE_ATTRS}
        study.enqueue_trial(dict(fixed), user_attrs=attrs)
    log.info("trial %d is surplus (the study already has its trials); not launched", trial.number)


def interrupt(storage: Any, study: Any, trial: Any) -> None:
    """A trial cut off in this process (signal, Ctrl-C): FAIL, not counted, queued again."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial_id = trial_id_of(storage, study, trial.number)
    try:
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
    except UpdateFinishedTrialError:
        return  # its job finished it (pruned) before the interruption
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    retry_later(study, trial)


def queue_start_from(
    study: Any, start_from: Sequence[Mapping[str, Any]], distributions: Mapping[str, Any]
) -> None:
    """Queue ``start_from`` before the study's first trial (never again on a relaunch)."""
    for i, params in enumerate(start_from):
        if unknown := sorted(set(params) - set(distributions)):
            raise ValueError(
                f"hydra.sweeper.start_from[{i}] sets {unknown}, which the search space does "
                f"not have; searched: {sorted(distributions)}"
            )
        for name, value in params.items():
            if not fits(distributions[name], value):
                raise ValueError(
                    f"hydra.sweeper.start_from[{i}]: {name}={value!r} is outside "
                    f"{distributions[name]}"
                )
    if start_from and not study.get_trials(deepcopy=False):
        for i, params in enumerate(start_from):
            study.enqueue_trial(params, user_attrs={START_FROM_ATTR: i})
        log.info("queued %d start_from configuration(s) first", len(start_from))
