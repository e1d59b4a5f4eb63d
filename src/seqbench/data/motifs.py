"""A generated DNA-like task where only k-mers of length >= 4 carry the label.

Each sequence is uniform random ``ACGT`` with one motif planted at a random place: class 1 gets
``positive``, class 0 gets ``negative``. The two motifs are different walks through the same
de Bruijn graph: they hold exactly the same 1-, 2- and 3-mers (with the same counts) and start
and end with the same two letters, so every k-mer of length <= 3 has the same distribution in
both classes, also across the motif's edges; only 4-mers and longer tell them apart. A model
that counts short k-mers stays at chance; one that sees 4-mers (``model=ngram_bag
data.tokenizer=char model.net.encoder.max_n=4`` or more) can learn it (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path

import numpy as np

ALPHABET = "ACGT"


def kmers(text: str, k: int) -> Counter:
    return Counter(text[i : i + k] for i in range(len(text) - k + 1))


def motif_pair(length: int = 10, seed: int = 0) -> tuple[str, str]:
    """Two motifs with the same 1-3-mer counts and ends but different 4-mers (found by search)."""
    rng = np.random.default_rng(seed)
    seen: dict[tuple, str] = {}
    for _ in range(1_000_000):
        text = "".join(rng.choice(list(ALPHABET), size=length))
        signature = (text[:2], text[-2:], tuple(sorted(kmers(text, 3).items())))
        other = seen.setdefault(signature, text)
        if other != text and kmers(other, 4) != kmers(text, 4):
            return other, text
    raise RuntimeError(f"no motif pair of length {length} found")  # pragma: no cover


def write_motif_task(
    path: Path, n: int = 2000, length: int = 120, seed: int = 0, motif_length: int = 10
) -> tuple[str, str]:
    """Write ``n`` labelled sequences (balanced) as CSV ``text,label`` for ``data=text_files``;
    returns the (negative, positive) motifs."""
    negative, positive = motif_pair(motif_length, seed)
    for k in (1, 2, 3):  # the claim the task rests on
        assert kmers(negative, k) == kmers(positive, k)
    rng = np.random.default_rng(seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for label in itertools.islice(itertools.cycle((0, 1)), n):
            background = "".join(rng.choice(list(ALPHABET), size=length - motif_length))
            at = int(rng.integers(0, len(background) + 1))
            motif = positive if label else negative
            writer.writerow([background[:at] + motif + background[at:], label])
    return negative, positive
