"""Label order: class names to ids, in a stable order that the training file alone decides."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from seqbench.data.file_format import SHOWN, DataFileError
from seqbench.data.file_reading import LabelledTable


def class_order(names: Sequence[str] | np.ndarray) -> list[str]:
    """Stable class order: numeric when every label is an integer, else sorted as text."""
    unique = sorted(set(names))
    if all(re.fullmatch(r"[+-]?\d+", n) for n in unique):
        return sorted(unique, key=int)
    return unique


def class_ids(table: LabelledTable, classes: list[str]) -> np.ndarray:
    """Labels of ``table`` as ids into ``classes``; a label the training data lacks is an error."""
    index = {name: i for i, name in enumerate(classes)}
    ids = np.fromiter((index.get(n, -1) for n in table.labels), dtype=np.int64, count=len(table))
    unknown = np.flatnonzero(ids < 0)
    if len(unknown):
        missing = sorted(set(table.labels[unknown]))
        rows = ", ".join(f"row {i + 1}" for i in unknown[:SHOWN])
        raise DataFileError(
            f"{table.path}: label column {table.label_column!r} has class(es) {missing} that the "
            f"training data does not have ({rows}); classes in training: {classes}"
        )
    return ids
