"""A generated sequence task that needs memory: which of two marker tokens comes first.

Every sequence holds random filler tokens plus exactly one marker A and one marker B, one
in the first third and the other in the last third. The label is 1 when A comes before B.
Both classes have identical token counts, so a bag-of-words model is at chance (50%); a
recurrent model has to carry the first marker across the sequence to solve it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqbench.data.corpus import EncodedCorpus, EncodedSplit
from seqbench.data.text import FIRST_WORD_INDEX, START

MARKER_A = FIRST_WORD_INDEX
MARKER_B = FIRST_WORD_INDEX + 1


def _make_split(
    n: int, vocab_size: int, min_len: int, max_len: int, rng: np.random.Generator
) -> EncodedSplit:
    filler_low = FIRST_WORD_INDEX + 2
    sequences, labels = [], np.zeros(n, dtype=np.int64)
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        seq = rng.integers(filler_low, vocab_size, size=length)
        seq[0] = START
        third = max(1, length // 3)
        early = int(rng.integers(1, 1 + third))
        late = int(rng.integers(length - third, length))
        label = int(rng.integers(0, 2))
        seq[early], seq[late] = (MARKER_A, MARKER_B) if label else (MARKER_B, MARKER_A)
        sequences.append(seq)
        labels[i] = label
    return EncodedSplit.from_sequences(sequences, labels)


@dataclass(frozen=True)
class SyntheticTask:
    """The generator's settings, each default defined here only (``data=synthetic`` sets them;
    ``SyntheticDataModule`` takes them from its config keys). The same settings give the same
    data, whatever the training seed."""

    n_train: int = 2000
    n_test: int = 1000
    vocab_size: int = 32
    min_len: int = 20
    max_len: int = 60
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.vocab_size < FIRST_WORD_INDEX + 3:
            raise ValueError(f"synthetic vocab_size must be at least {FIRST_WORD_INDEX + 3}")
        if self.min_len < 6 or self.max_len < self.min_len:
            raise ValueError("synthetic lengths need 6 <= min_len <= max_len")

    def generate(self) -> EncodedCorpus:
        rng = np.random.default_rng(self.seed)
        train = _make_split(self.n_train, self.vocab_size, self.min_len, self.max_len, rng)
        test = _make_split(self.n_test, self.vocab_size, self.min_len, self.max_len, rng)
        sizes = f"{self.n_train}-{self.n_test}-{self.vocab_size}-{self.min_len}-{self.max_len}"
        return EncodedCorpus(
            train,
            test,
            classes=["B first", "A first"],
            vocab=None,
            meta={"fingerprint": f"synthetic-{self.seed}-{sizes}"},
        )
