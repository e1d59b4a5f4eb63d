"""A job's identity: which configuration values decide a run's result, and the key they hash to.

Two launches of the same configuration in the same experiment are the same job: a relaunch
skips it when it finished and continues it when it was interrupted (``seqbench.run.resume``). The
key hashes the resolved config *minus* the values below, which say where and how fast a run
executes, never what it computes. This list is the one place that decides it.

The code version (git commit) is deliberately *not* part of the key: a sweep relaunched after
a commit (a fix elsewhere, docs, a new model) must still skip its finished jobs and resume its
interrupted ones, which is the point of relaunching. The commit each run started on stays in
its ``git.commit`` tag and a resume under another commit is logged; ``resume=never`` starts
fresh runs when a code change should invalidate old results.

Upgrades that add a config key keep every existing key: a key listed in ``NEUTRAL_DEFAULTS`` is
left out of the hash while it holds its neutral value (the value that computes what the code
did before the key existed), so a sweep finished on an older seqbench is still skipped. Only a
value that changes the result enters the hash, and then the job is a new one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seqbench.run.tracking import flatten

JOB_KEY_TAG = "seqbench.job_key"

# Dotted keys (fnmatch patterns) that never change a run's result.
NON_RESULT_KEYS: tuple[str, ...] = (
    "paths.*",  # where outputs go
    "logger.*",  # where the run is recorded and what it is called (incl. Optuna trial tags)
    "hydra.*",
    "optimized_metric",  # what a sweeper reads, not what the run computes
    "optuna_trial",  # which Optuna trial the run reports to (null: none) ...
    "optuna_trial.*",  # ... its storage, study and number: a re-run trial is the same job
    "resume",  # how this launch treats earlier runs
    "heartbeat.*",  # liveness bookkeeping
    "nonfinite_check.*",  # a guard: it stops a broken run, it never changes a good one
    "num_threads",  # execution plan: the same computation on more or fewer cores
    "batch_split",  # same gradient, summed over slices (seqbench.training.parallel)
    "flush_denormal",  # only values below 1e-38 differ
    "data.archive",  # the same data from another folder (data.fingerprint is checked on resume)
    "data.cache_dir",
    "data.url",
    "data.num_workers",
    "data.pin_memory",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.*.dirpath",
    "callbacks.progress_bar.*",
    "callbacks.epoch_timer.*",
)


# New config keys at the value that keeps the behaviour from before they existed: dotted key ->
# neutral value. A key at its neutral value is left out of the job key, so adding it keeps every
# existing job's key (tests/test_upgrade_keys.py). When you add a config key that changes a
# result only when set to something else, add its neutral default here, in the same commit.
# Never list a key that existing jobs already hashed (anything in the configs before this
# registry appeared, e.g. data.val_split): dropping it would change their keys.
NEUTRAL_DEFAULTS: dict[str, object] = {}


# Classes named by ``_target_`` that moved to another module: the job key hashes the name they
# had when the key was first computed, so a relaunch after the move still finds finished jobs
# (tests/test_job_keys.py pins the keys of the shipped configurations). New path -> old path.
MOVED_TARGETS: dict[str, str] = {
    "seqbench.run.checkpoints.TrackedCheckpoint": "seqbench.callbacks.TrackedCheckpoint",
}


def _identity_value(key: str, value: str) -> str:
    """A param's value as the job key sees it: moved classes under their first name."""
    if key.endswith("._target_"):
        return MOVED_TARGETS.get(value, value)
    return value


def _container(cfg: DictConfig | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return cfg


def is_result_key(key: str) -> bool:
    return not any(fnmatch.fnmatchcase(key, pattern) for pattern in NON_RESULT_KEYS)


def _as_logged(value: object) -> str:
    """A config value as ``tracking.flatten`` logs it."""
    return "null" if value is None else str(value)


def is_neutral(key: str, value: str) -> bool:
    """Whether ``key`` (logged as ``value``) holds the neutral default of a key added later."""
    return key in NEUTRAL_DEFAULTS and value == _as_logged(NEUTRAL_DEFAULTS[key])


def _hashed(key: str, value: str) -> bool:
    return is_result_key(key) and not is_neutral(key, value)


def result_params(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """The flattened ``key -> value`` pairs (as logged to MLflow) that decide the result: all
    but ``NON_RESULT_KEYS`` and keys at their ``NEUTRAL_DEFAULTS`` value."""
    return {k: _identity_value(k, v) for k, v in flatten(_container(cfg)) if _hashed(k, v)}


def job_key(cfg: DictConfig | Mapping[str, Any]) -> str:
    """A stable hash of ``result_params(cfg)``: equal configurations, equal keys."""
    text = json.dumps(result_params(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def params_diff(current: Mapping[str, str], logged: Mapping[str, str]) -> list[str]:
    """Human-readable differences between this launch's result params and a run's params."""
    lines = []
    for key in sorted(set(current) | {k for k, v in logged.items() if _hashed(k, v)}):
        now = current.get(key, "<absent>")
        then = _identity_value(key, logged.get(key, "<absent>"))
        if now != then:
            lines.append(f"{key}: {then} (run) -> {now} (now)")
    return lines
