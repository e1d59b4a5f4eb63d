"""From raw texts to encoded splits, for every data source (IMDB, labelled files): tokenise,
build the vocabulary from the training texts only, index and truncate, with the Keras IMDB index
semantics of ``seqbench.data.text``.

One vectorised encoder: one regex pass over all texts and pandas' hash factorisation instead of
a Python loop per token. Its ids are those of the per-document ``tokenize`` ->
``Vocabulary.build`` -> ``Vocabulary.encode`` -> ``truncate`` path that serving still uses for
single texts (tests/test_encoding.py compares the two).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.data.corpus import EncodedCorpus, EncodedSplit, RawCorpus
from seqbench.data.text import _BREAK, FIRST_WORD_INDEX, OOV, SIDES, START, TOKENIZERS, Vocabulary


class NulInText(ValueError):
    """A text holds the separator the encoder joins documents with (``\\x00``)."""


_SEP = "\x00"  # separates documents in the joined text; not a word character, not \s
_WORD_OR_SEP = re.compile(r"(?:[^\W_]|')+|\x00")


def _normalise(texts: Sequence[str]) -> str:
    """All texts as one string, as ``tokenize`` prepares each: ``<br />`` removed, lowercased.

    str.lower is per character except for the Greek final sigma, whose context ends at the
    separator as it would at the end of each text, so joining first changes nothing."""
    return _BREAK.sub(" ", _SEP.join(texts) + _SEP).lower()


def _token_codes(
    texts: Sequence[str], tokenizer: str, chunk: int = 50_000
) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes, uniques, separator code): the token stream (documents each ending in the
    separator) as int32 codes into ``uniques``, numbered in order of first appearance.

    Works through ``chunk`` documents at a time (one regex pass and one pandas factorisation
    each), so only one chunk's tokens exist as Python strings at once: this bounds the peak
    memory of a million-row file (docs/benchmarks.md)."""
    index: dict[str, int] = {}  # token -> code, in order of first appearance
    parts = []
    for first in range(0, len(texts), chunk):
        joined = _normalise(texts[first : first + chunk])
        if tokenizer == "word":
            stream: np.ndarray = np.asarray(_WORD_OR_SEP.findall(joined), dtype=object)
        else:
            stream = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        del joined
        local, found = pd.factorize(stream)
        del stream
        tokens = (chr(c) for c in found) if tokenizer == "char" else iter(found)
        # (never ``found == _SEP``: numpy turns "\x00" into "" when it makes an array scalar)
        to_global = np.fromiter(
            (index.setdefault(t, len(index)) for t in tokens), dtype=np.int32, count=len(found)
        )
        parts.append(to_global[local])
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    uniques = np.empty(len(index), dtype=object)
    uniques[:] = list(index)
    return codes, uniques, index.get(_SEP, -1)


def _split_from_stream(
    ids: np.ndarray, is_sep: np.ndarray, labels: np.ndarray, max_len: int, truncating: str
) -> EncodedSplit:
    """Documents ``[START, ids...]`` cut to ``max_len`` (``pre`` keeps the end), stored flat.

    Works in place on int32 and one byte per token (a mask of the cut ranges), never on int64
    index arrays the size of the corpus: character-level encoding of a million rows is over a
    hundred million tokens."""
    # "a b SEP c SEP" -> "SEP a b SEP c" with SEP as START: every document starts with START.
    stream = np.empty(len(ids), dtype=np.int32)
    if len(ids):
        stream[0] = START
        stream[1:] = ids[:-1]
        stream[1:][is_sep[:-1]] = START
    first = np.concatenate([[True], is_sep[:-1]]) if len(ids) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, len(stream)))
    keep = np.minimum(lengths, max_len)
    offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=offsets[1:])
    cut = np.flatnonzero(keep < lengths)
    if len(cut):  # drop the beginning (pre) or the end (post) of each long document
        begin = starts[cut] if truncating == "pre" else starts[cut] + keep[cut]
        end = begin + (lengths[cut] - keep[cut])
        delta = np.zeros(len(stream) + 1, dtype=np.int8)
        delta[begin] = 1
        delta[end] -= 1
        stream = stream[np.cumsum(delta[:-1], dtype=np.int8) == 0]
    return EncodedSplit(stream, offsets, np.asarray(labels, dtype=np.int64))


def encode_texts(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    others: dict[str, tuple[Sequence[str], np.ndarray]],
    vocab_size: int,
    max_len: int,
    truncating: str = "pre",
    tokenizer: str = "word",
    chunk: int = 50_000,
) -> tuple[Vocabulary, EncodedSplit, dict[str, EncodedSplit]]:
    """Vocabulary from ``train_texts`` only, then every split indexed and truncated; identical to
    ``encode_corpus`` (Keras IMDB index semantics), an order of magnitude faster on big files."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; valid choices: {', '.join(TOKENIZERS)}")
    if truncating not in SIDES:
        raise ValueError(
            f"unknown truncating side {truncating!r}; valid choices: {', '.join(SIDES)}"
        )
    if vocab_size <= FIRST_WORD_INDEX:
        raise ValueError(f"vocab_size must be > {FIRST_WORD_INDEX} (it counts pad/start/oov)")
    for texts in (train_texts, *(t for t, _ in others.values())):
        if any(_SEP in t for t in texts):  # the separator must not occur inside a text
            raise NulInText("texts contain NUL characters (\\x00); remove them")
    codes, uniques, sep_code = _token_codes(train_texts, tokenizer, chunk)
    counts = np.bincount(codes, minlength=len(uniques))
    if sep_code >= 0:
        counts[sep_code] = 0
    # most frequent first, ties by first appearance (what Counter.most_common gives)
    ranked = np.argsort(-counts, kind="stable")[: vocab_size - FIRST_WORD_INDEX]
    ranked = ranked[counts[ranked] > 0]
    vocab = Vocabulary(tuple(uniques[ranked]))
    code_to_id = np.full(len(uniques), OOV, dtype=np.int32)
    code_to_id[ranked] = np.arange(FIRST_WORD_INDEX, FIRST_WORD_INDEX + len(ranked))
    train = _split_from_stream(
        code_to_id[codes], codes == sep_code, train_labels, max_len, truncating
    )
    del codes
    lookup = vocab.index()
    encoded = {}
    for name, (texts, labels) in others.items():
        codes, uniques, sep_code = _token_codes(texts, tokenizer, chunk)
        unique_ids = np.fromiter(
            (lookup.get(u, OOV) for u in uniques), dtype=np.int32, count=len(uniques)
        )
        encoded[name] = _split_from_stream(
            unique_ids[codes], codes == sep_code, labels, max_len, truncating
        )
    return vocab, train, encoded


def encode_corpus(
    raw: RawCorpus, vocab_size: int, max_len: int, truncating: str = "pre", tokenizer: str = "word"
) -> EncodedCorpus:
    """Tokenise, build the vocabulary from the *train split only*, index and truncate both splits."""
    vocab, train, others = encode_texts(
        raw.train_texts,
        raw.train_labels,
        {"test": (raw.test_texts, raw.test_labels)},
        vocab_size,
        max_len,
        truncating,
        tokenizer,
    )
    groups = None
    if raw.train_groups is not None:
        groups = np.unique(np.asarray(raw.train_groups), return_inverse=True)[1].astype(np.int64)
    return EncodedCorpus(train, others["test"], list(raw.classes), vocab, train_groups=groups)
