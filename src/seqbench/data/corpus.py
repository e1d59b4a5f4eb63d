"""Raw and encoded corpora, stratified sampling, and the on-disk cache of encoded corpora
(``seqbench.data.encoding`` turns the one into the other).

Encoding (tokenise, build the vocabulary, index, truncate) runs once per distinct setting and
is cached, so the training loop never touches text: a second run starts within seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from seqbench.data.text import Vocabulary

log = logging.getLogger(__name__)

# Bump when the encoding changes in a way the key does not capture, so old caches are ignored.
CACHE_FORMAT = 2  # 2: IMDB's training reviews carry their movie (train_groups)


@dataclass
class RawCorpus:
    """Texts and integer labels for a train and a test split."""

    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    classes: list[str]
    # What each training text belongs to (IMDB: its movie); held out together by
    # ``data.val_split=grouped`` so validation never sees a movie that training saw.
    train_groups: list[str] | None = None


@dataclass
class EncodedSplit:
    """Variable-length index sequences stored flat: sequence i is ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: np.ndarray  # int32
    offsets: np.ndarray  # int64, len n+1
    labels: np.ndarray  # int64

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], labels: np.ndarray) -> EncodedSplit:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter(
            (t for s in sequences for t in s), dtype=np.int32, count=int(offsets[-1])
        )
        return cls(tokens, offsets, np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def take(self, indices: np.ndarray) -> EncodedSplit:
        """A new split holding ``indices`` in that order (vectorised: runs at every setup)."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # token k of the result comes from source position start[seq(k)] + (k - offsets[seq(k)])
        starts = np.repeat(self.offsets[indices] - offsets[:-1], lengths)
        tokens = self.tokens[starts + np.arange(offsets[-1], dtype=np.int64)]
        return EncodedSplit(tokens, offsets, self.labels[indices])


@dataclass
class EncodedCorpus:
    train: EncodedSplit
    test: EncodedSplit
    classes: list[str]
    vocab: Vocabulary | None = None
    meta: dict = field(default_factory=dict)
    train_groups: np.ndarray | None = None  # int64 group id per training row, or None

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a killed run never leaves a broken cache."""
        arrays = {}
        for name in ("train", "test"):
            split = getattr(self, name)
            arrays |= {
                f"{name}_tokens": split.tokens,
                f"{name}_offsets": split.offsets,
                f"{name}_labels": split.labels,
            }
        if self.train_groups is not None:
            arrays["train_groups"] = self.train_groups
        header = {
            "classes": self.classes,
            "vocab": list(self.vocab.words) if self.vocab else None,
            "meta": self.meta,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> EncodedCorpus:
        with np.load(path) as npz:
            header = json.loads(npz["header"].tobytes().decode())
            splits = {
                name: EncodedSplit(
                    npz[f"{name}_tokens"], npz[f"{name}_offsets"], npz[f"{name}_labels"]
                )
                for name in ("train", "test")
            }
            groups = npz["train_groups"] if "train_groups" in npz.files else None
        vocab = Vocabulary(tuple(header["vocab"])) if header["vocab"] is not None else None
        return cls(
            splits["train"], splits["test"], header["classes"], vocab, header["meta"], groups
        )


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` examples with the class proportions of ``labels``, in ascending order."""
    if n >= len(labels):
        return np.arange(len(labels))
    val, _ = stratified_split(labels, n / len(labels), rng)
    return val


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (held-out, rest), taking ``fraction`` of every class."""
    held, rest = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(held)), np.sort(np.concatenate(rest))


def grouped_split(
    groups: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (held-out, rest) with no group on both sides: whole groups, in a
    seeded random order, are held out until they hold ``fraction`` of the rows.

    Why: IMDB has up to 30 reviews per movie, and its test set has other movies than its
    training set. A random validation split shares movies with training, so names and titles
    memorised in training inflate validation accuracy; measured on a bidirectional GRU, val
    90.2% against test 87.5%. Held out by movie, validation is a fair stand-in for test."""
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(unique))
    target = int(round(fraction * len(groups)))
    taken = np.cumsum(counts[order]) <= target
    taken[0] = True  # at least one group, however small the fraction
    held_group = np.zeros(len(unique), dtype=bool)
    held_group[order[taken]] = True
    held = held_group[inverse]
    return np.flatnonzero(held), np.flatnonzero(~held)


def cache_key(settings: dict) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(cache_dir: Path, settings: dict) -> Path:
    """Where the corpus encoded under ``settings`` is cached (whether or not it exists yet)."""
    return cache_dir / f"corpus-{cache_key(settings)}.npz"


def cached_corpus(
    cache_dir: Path, settings: dict, build: Callable[[], EncodedCorpus]
) -> EncodedCorpus:
    """Load the corpus cached under ``settings``, building (once, under a file lock) on a miss.

    Every setting that changes the encoded result must be in ``settings``; a change in any of
    them gives a new key and so a rebuild. The lock lets parallel sweep jobs share one build.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(settings)
    path = cache_path(cache_dir, settings)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            log.info("encoded corpus cache hit: %s", path)
            corpus = EncodedCorpus.load(path)
            corpus.meta["cache_hit"] = True
            return corpus
        log.info("encoded corpus cache miss: building %s", path)
        corpus = build()
        corpus.meta = {**corpus.meta, "settings": settings, "key": key}
        corpus.save(path)
        (cache_dir / f"corpus-{key}.json").write_text(json.dumps(settings, indent=2, default=str))
    corpus.meta["cache_hit"] = False
    return corpus
