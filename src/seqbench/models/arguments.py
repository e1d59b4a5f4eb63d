"""Checks a model class runs on its own arguments, so that a refused value says which argument,
what it was and what is allowed. ``seqbench.training.task.build_task`` adds the config key in
front (``model.net.encoder.pooling``) and turns it into a ``ConfigError`` before any run exists.
"""

from __future__ import annotations

from collections.abc import Iterable


class ModelArgumentError(ValueError):
    """A model argument its class refuses: ``argument``, ``value`` and what is ``allowed``."""

    def __init__(self, argument: str, value: object, allowed: str) -> None:
        super().__init__(f"{argument}={value!r} is not valid: expected {allowed}")
        self.argument, self.value, self.allowed = argument, value, allowed

    def __reduce__(self) -> tuple:  # parallel launchers pickle a job's exception
        return type(self), (self.argument, self.value, self.allowed)


def check_choice(argument: str, value: object, choices: Iterable[str]) -> None:
    """Refuse ``value`` unless it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ModelArgumentError(argument, value, "one of: " + ", ".join(choices))


def check_probability(argument: str, value: float) -> None:
    """Refuse a dropout probability outside [0, 1) (1 would drop everything and divide by 0)."""
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ModelArgumentError(argument, value, "a dropout probability in [0, 1)")


def check_at_least(argument: str, value: object, low: int) -> None:
    """Refuse anything but an integer >= ``low``."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ModelArgumentError(argument, value, f"an integer >= {low}")
