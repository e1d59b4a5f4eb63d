"""The one vectorised encoder (``seqbench.data.encoding``) gives, bit for bit, the ids of the
previous per-document encoder (``tokenize`` -> ``Vocabulary.build`` -> ``encode`` ->
``truncate``, which IMDB used until issue 16 and serving still uses for single texts), so cached
IMDB corpora and every result built on them stay the same."""

from __future__ import annotations

import numpy as np
import pytest

from seqbench.data.corpus import EncodedCorpus, EncodedSplit, RawCorpus
from seqbench.data.encoding import NulInText, encode_corpus, encode_texts
from seqbench.data.text import Vocabulary, tokenize, truncate


def previous_encode_corpus(
    raw: RawCorpus, vocab_size: int, max_len: int, truncating: str, tokenizer: str
) -> EncodedCorpus:
    """``seqbench.data.corpus.encode_corpus`` as of commit aa63d7e (a Python loop per token)."""
    train_tokens = [tokenize(t, tokenizer) for t in raw.train_texts]
    vocab = Vocabulary.build(train_tokens, vocab_size)
    lookup = vocab.index()

    def encode(token_lists):
        return [truncate(vocab.encode(toks, lookup), max_len, truncating) for toks in token_lists]

    train = EncodedSplit.from_sequences(encode(train_tokens), raw.train_labels)
    test_tokens = [tokenize(t, tokenizer) for t in raw.test_texts]
    test = EncodedSplit.from_sequences(encode(test_tokens), raw.test_labels)
    groups = None
    if raw.train_groups is not None:
        groups = np.unique(np.asarray(raw.train_groups), return_inverse=True)[1].astype(np.int64)
    return EncodedCorpus(train, test, list(raw.classes), vocab, train_groups=groups)


def _fake_corpus() -> RawCorpus:
    """Reviews-like texts with the awkward cases: apostrophes, accents, a combining mark,
    Greek final sigma, underscores, digits, CJK, ``<br />`` in any case, empty texts."""
    rng = np.random.default_rng(0)
    words = [
        "The",
        "film's",
        "naïve",
        "ΣΟΦΟΣ",
        "a_b",
        "İstanbul",
        "<br />",
        "12",
        "日本",
        "e\u0301",
    ]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 25)))) for _ in range(200)]
    train_texts, test_texts = [*texts[:150], "", "<BR/>x"], texts[150:]
    y_train, y_test = rng.integers(0, 3, len(train_texts)), rng.integers(0, 3, len(test_texts))
    movies = [f"tt{int(m)}" for m in rng.integers(0, 40, len(train_texts))]
    return RawCorpus(train_texts, y_train, test_texts, y_test, ["a", "b", "c"], movies)


def _assert_same_split(mine: EncodedSplit, theirs: EncodedSplit) -> None:
    assert mine.tokens.dtype == theirs.tokens.dtype == np.int32
    assert np.array_equal(mine.tokens, theirs.tokens)
    assert np.array_equal(mine.offsets, theirs.offsets)
    assert np.array_equal(mine.labels, theirs.labels)


@pytest.mark.parametrize("tokenizer", ["word", "char"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("vocab_size", [6, 1000])
def test_encode_corpus_matches_the_previous_encoder(tokenizer, truncating, vocab_size):
    raw = _fake_corpus()
    ref = previous_encode_corpus(raw, vocab_size, 12, truncating, tokenizer)
    new = encode_corpus(raw, vocab_size, 12, truncating, tokenizer)
    assert new.vocab.words == ref.vocab.words
    _assert_same_split(new.train, ref.train)
    _assert_same_split(new.test, ref.test)
    assert np.array_equal(new.train_groups, ref.train_groups)
    assert new.classes == ref.classes


@pytest.mark.parametrize("tokenizer", ["word", "char"])
def test_chunks_merge_in_order_of_first_appearance(tokenizer):
    """Many small chunks (7 documents each) give the ids of one pass over everything."""
    raw = _fake_corpus()
    ref = previous_encode_corpus(raw, 1000, 12, "pre", tokenizer)
    vocab, train, others = encode_texts(
        raw.train_texts,
        raw.train_labels,
        {"test": (raw.test_texts, raw.test_labels)},
        1000,
        12,
        "pre",
        tokenizer,
        chunk=7,
    )
    assert vocab.words == ref.vocab.words
    _assert_same_split(train, ref.train)
    _assert_same_split(others["test"], ref.test)


def test_nul_in_a_text_is_refused():
    with pytest.raises(NulInText, match="NUL"):
        encode_texts(["a\x00b", "c"], np.array([0, 1]), {}, 10, 5)
