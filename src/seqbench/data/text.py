"""Tokenisation, vocabulary and fixed-length sequences with the Keras IMDB index semantics.

Index layout (as `keras.datasets.imdb`): 0 padding, 1 start-of-sequence, 2 out-of-vocabulary,
words ranked by training-set frequency from 3. ``vocab_size`` is Keras's ``num_words``: it
counts *all* indices, so ``vocab_size - 3`` words keep their own index and the rest map to 2.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PAD, START, OOV = 0, 1, 2
FIRST_WORD_INDEX = 3
SIDES = ("pre", "post")
TOKENIZERS = ("word", "char")

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Letters, digits and apostrophes (Unicode-aware); everything else separates tokens.
_WORD = re.compile(r"(?:[^\W_]|')+")


def tokenize(text: str, kind: str = "word") -> list[str]:
    """Split raw text into tokens: lowercase words (``<br />`` removed) or characters."""
    text = _BREAK.sub(" ", text).lower()
    if kind == "word":
        return _WORD.findall(text)
    if kind == "char":
        return list(text)
    raise ValueError(f"unknown tokenizer {kind!r}; valid choices: {', '.join(TOKENIZERS)}")


@dataclass(frozen=True)
class Vocabulary:
    """Words ranked by frequency; index of word at rank r (0-based) is ``r + 3``."""

    words: tuple[str, ...]

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], vocab_size: int) -> Vocabulary:
        """Keep the ``vocab_size - 3`` most frequent tokens; ties broken by first appearance."""
        if vocab_size <= FIRST_WORD_INDEX:
            raise ValueError(f"vocab_size must be > {FIRST_WORD_INDEX} (it counts pad/start/oov)")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        # Counter.most_common is stable for equal counts (insertion order), so the
        # vocabulary is deterministic for a given corpus order.
        kept = [w for w, _ in counts.most_common(vocab_size - FIRST_WORD_INDEX)]
        return cls(tuple(kept))

    @property
    def size(self) -> int:
        """Number of indices the embedding needs (pad, start, oov and the words)."""
        return FIRST_WORD_INDEX + len(self.words)

    def index(self) -> dict[str, int]:
        return {w: i + FIRST_WORD_INDEX for i, w in enumerate(self.words)}

    def encode(self, tokens: Sequence[str], lookup: dict[str, int] | None = None) -> list[int]:
        """Map tokens to indices with a leading start token; unknown tokens become OOV."""
        lookup = lookup if lookup is not None else self.index()
        return [START, *(lookup.get(t, OOV) for t in tokens)]


def truncate(ids: Sequence[int], max_len: int, side: str = "pre") -> Sequence[int]:
    """Cut a sequence to ``max_len``: ``pre`` drops the beginning (Keras default)."""
    if side not in SIDES:
        raise ValueError(f"unknown truncating side {side!r}; valid choices: {', '.join(SIDES)}")
    if len(ids) <= max_len:
        return ids
    return ids[-max_len:] if side == "pre" else ids[:max_len]


def pad(sequences: Sequence[np.ndarray], length: int, side: str = "pre") -> np.ndarray:
    """Stack sequences (each at most ``length`` long) into a ``(n, length)`` array padded with 0."""
    if side not in SIDES:
        raise ValueError(f"unknown padding side {side!r}; valid choices: {', '.join(SIDES)}")
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        n = len(seq)
        if n > length:
            raise ValueError(
                f"sequence of length {n} longer than pad length {length}; truncate first"
            )
        if n:
            if side == "pre":
                out[row, length - n :] = seq
            else:
                out[row, :n] = seq
    return out
