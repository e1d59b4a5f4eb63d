"""What scoring reads and writes, importable without torch: the output columns, the check of
text inputs and the error a user can fix.

Apart from ``inference`` so that ``seqbench-predict`` refuses a wrong model address or a
tracking server that will not let it in before it spends seconds importing torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LABEL_COLUMN, TOKENS_COLUMN, TRUNCATED_COLUMN = "label", "tokens", "truncated"
PROB_PREFIX = "prob_"


class InputError(ValueError):
    """Input a user can fix (a non-string value, ...); callers print it as one line."""


def check_texts(values: Iterable[Any], where: Callable[[int], str] | None = None) -> list[str]:
    """The values as strings, or ``InputError`` naming the first non-string one.

    Numbers or nulls are refused rather than stringified: ``nan`` or ``3`` scored as a review
    would be a silent wrong answer."""
    texts = list(values)
    for i, value in enumerate(texts):
        if not isinstance(value, str):
            place = where(i) if where else f"input {i}"
            raise InputError(
                f"{place}: expected a string, got {type(value).__name__} {value!r:.40}"
            )
    return texts
