"""One validation pass over the composed config, before any MLflow run or cache is created.

Hydra already rejects unknown config groups, choices and keys (naming the valid ones). This
pass checks the values: a typo (``seed=abc``, ``data.val_fraction=1.5``) then costs one clear
message naming the key, the value and what is allowed, instead of a traceback or a FAILED run
in the store. Rules apply to the keys a config has (``data.subset`` only exists for IMDB).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqbench.training.hardware import cpu_bf16_problem  # no torch: reads /proc/cpuinfo

_MISSING = object()
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ConfigError(ValueError):
    """Invalid values in the composed config; the message lists every one of them."""


@dataclass(frozen=True)
class Rule:
    key: str
    check: Callable[[object], bool]
    allowed: str
    nullable: bool = False


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))  # type: ignore[arg-type]
    )


def _int_at_least(low: int) -> Callable[[object], bool]:
    return lambda v: _is_int(v) and v >= low  # type: ignore[operator]


def _one_of(*choices: str) -> Callable[[object], bool]:
    return lambda v: v in choices


def _integer(key: str, low: int, note: str = "", nullable: bool = False) -> Rule:
    """An integer >= ``low`` (``note`` says why), or also null; the message follows the bound."""
    allowed = f"an integer >= {low}{note}"
    return Rule(key, _int_at_least(low), f"null or {allowed}" if nullable else allowed, nullable)


def _choice(key: str, *choices: str) -> Rule:
    """One of ``choices``; the message lists them."""
    return Rule(key, _one_of(*choices), "one of: " + ", ".join(choices))


PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64")

RULES: tuple[Rule, ...] = (
    _integer("seed", 0),
    _integer("num_threads", 1, nullable=True),
    _integer("batch_split", 1, nullable=True),
    Rule(
        "data.val_fraction",
        lambda v: _is_number(v) and 0 < v < 1,
        "a number between 0 and 1 (exclusive)",
    ),  # type: ignore[operator]
    _integer("data.max_len", 1),
    _integer("data.batch_size", 1),
    _integer("data.eval_batch_size", 1),
    _integer("data.subset", 2, " (N train and N test reviews)", nullable=True),
    _integer("data.n_train", 10),
    _integer("data.n_test", 2),
    _integer("data.min_len", 2),
    Rule(
        "data.vocab_size",
        _int_at_least(4),
        "an integer >= 4 (3 indices are reserved); null for numeric series",
        nullable=True,
    ),
    _choice("data.normalize", "series", "channel", "none"),
    _choice("data.input_kind", "tokens", "numeric"),
    _choice("data.padding", "pre", "post"),
    _choice("data.truncating", "pre", "post"),
    _choice("data.val_split", "stratified", "grouped"),
    _choice("data.tokenizer", "word", "char"),
    Rule("data.bucketing", lambda v: isinstance(v, bool), "true or false"),
    _integer("model.vocab_size", 4, " (pad, start and out-of-vocabulary take 3)"),
    _choice("model.init", "keras", "torch"),
    Rule("model.optimizer.lr", lambda v: _is_number(v) and v > 0, "a finite number > 0"),  # type: ignore[operator]
    _integer("trainer.max_epochs", 1),
    Rule("trainer.precision", lambda v: str(v) in PRECISIONS, "one of: " + ", ".join(PRECISIONS)),
    Rule(
        "heartbeat.interval",
        lambda v: _is_number(v) and v >= 0,
        "a number of seconds >= 0 (0: per epoch only)",
    ),  # type: ignore[operator]
    Rule("heartbeat.stale_after", lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),  # type: ignore[operator]
    _integer("nonfinite_check.every_n_steps", 0, " (0: off)"),
    _integer("optuna_trial.number", 0, " (set by the Optuna sweeper)"),
)


def writable_folder_problem(key: str, folder: object) -> str | None:
    """Why ``folder`` (a config value) cannot be created or written, or None when it can.

    Looks at the nearest existing ancestor, so nothing is created by the check itself."""
    path = Path(str(folder)).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{key}={path} cannot be created: {probe} exists and is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{key}={path} is not writable (no write permission on {probe})"
    return None


def check_folders(
    cfg: DictConfig,
    keys: tuple[str, ...] = ("paths.output_root", "paths.data_dir", "paths.mlflow_dir"),
) -> list[str]:
    """Problems with the folders a run writes to (output, data cache, local MLflow store)."""
    problems = []
    for key in keys:
        folder = _value(cfg, key)
        if folder is not _MISSING and folder is not None:
            problem = writable_folder_problem(key, folder)
            if problem:
                problems.append(problem + "; choose another folder (or set SEQBENCH_ROOT)")
    return problems


def _value(cfg: DictConfig, key: str) -> object:
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=True)


def resume_problem(value: object) -> str | None:
    """What is wrong with a ``resume=`` value, or None (``seqbench.run.resume`` acts on it)."""
    text = str(value)
    if text in ("auto", "never") or _RUN_ID.match(text):
        return None
    return f"resume={text!r} is not valid; use auto, never, or a 32-character run id"


def _cpu_precision_problem(cfg: DictConfig) -> str | None:
    """bf16 on a CPU whose kernels cannot compute it: refused before any run, not as a oneDNN
    error in the first training step."""
    precision = str(_value(cfg, "trainer.precision"))
    if _value(cfg, "trainer.accelerator") != "cpu" or not precision.startswith("bf16"):
        return None
    if why := cpu_bf16_problem():
        return (
            f"trainer.precision={precision} cannot train on this CPU: {why}; use "
            "trainer.precision=32-true (what trainer=cpu picks here)"
        )
    return None


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every value that breaks a rule. Only omegaconf is imported
    here: ``seqbench-train`` runs this before it loads Lightning, torch and MLflow."""
    problems = check_folders(cfg)
    if data_min := _value(cfg, "data.min_len"):
        max_len = _value(cfg, "data.max_len")
        if _is_int(data_min) and _is_int(max_len) and data_min > max_len:  # type: ignore[operator]
            problems.append(f"data.min_len={data_min} is larger than data.max_len={max_len}")
    for rule in RULES:
        value = _value(cfg, rule.key)
        if value is _MISSING or (value is None and rule.nullable):
            continue
        if not rule.check(value):
            problems.append(f"{rule.key}={value!r} is not valid: expected {rule.allowed}")
    trial = _value(cfg, "optuna_trial")
    if trial not in (_MISSING, None):
        keys = ("storage", "study", "number")
        missing = [k for k in keys if not isinstance(trial, DictConfig) or trial.get(k) is None]
        if missing:
            problems.append(f"optuna_trial lacks {', '.join(missing)} (the sweeper sets all three)")
    if problem := resume_problem(cfg.get("resume", "auto")):
        problems.append(problem)
    if problem := _cpu_precision_problem(cfg):
        problems.append(problem)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
