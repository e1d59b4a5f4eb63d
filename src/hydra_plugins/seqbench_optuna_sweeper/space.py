"""The search space: Hydra's sweep overrides as Optuna distributions, and trial values back as
overrides. ``choice``/``range``/``interval``/``tag(log|int, ...)`` map to Optuna's categorical,
int and float distributions (the table is in :mod:`.optuna_sweeper`)."""

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString, Transformer
from hydra.errors import HydraException

_SEARCH_TAGS = {"log", "int"}


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


def fits(dist: Any, value: Any) -> bool:
    """Whether ``value`` is one of a choice's values or inside an interval."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):  # a categorical raises for a value it does not hold
        return False
