import numpy as np
import pytest

from seqbench.data.text import OOV, PAD, START, Vocabulary, pad, tokenize, truncate


def test_tokenize_lowercases_keeps_apostrophes_and_drops_breaks():
    assert tokenize("It's GREAT!<br /><br />10/10, wouldn't") == [
        "it's",
        "great",
        "10",
        "10",
        "wouldn't",
    ]


def test_tokenize_char_level():
    assert tokenize("Ab<br/>c", "char") == ["a", "b", " ", "c"]


def test_tokenize_unknown_kind_names_choices():
    with pytest.raises(ValueError, match="word, char"):
        tokenize("x", "bpe")


def test_vocabulary_keras_index_semantics():
    corpus = [["b", "a", "b", "c"], ["b", "a", "d"]]  # counts: b=3, a=2, c=1, d=1
    vocab = Vocabulary.build(corpus, vocab_size=5)  # num_words=5 -> indices 0..4 -> 2 words
    assert vocab.words == ("b", "a")
    assert vocab.size == 5
    # start token first, most frequent word = 3, next = 4, rest are OOV (2)
    assert vocab.encode(["b", "a", "c", "zzz"]) == [START, 3, 4, OOV, OOV]
    assert PAD == 0 and START == 1 and OOV == 2


def test_vocabulary_ties_broken_by_first_appearance():
    vocab = Vocabulary.build([["x", "y"], ["y", "x"]], vocab_size=10)
    assert vocab.words == ("x", "y")


def test_vocabulary_rejects_too_small():
    with pytest.raises(ValueError):
        Vocabulary.build([["a"]], vocab_size=3)


@pytest.mark.parametrize(("side", "expected"), [("pre", [3, 4, 5]), ("post", [1, 2, 3])])
def test_truncate_sides(side, expected):
    assert list(truncate([1, 2, 3, 4, 5], 3, side)) == expected
    assert list(truncate([1, 2], 3, side)) == [1, 2]


@pytest.mark.parametrize(("side", "row"), [("pre", [0, 0, 7, 8]), ("post", [7, 8, 0, 0])])
def test_pad_sides(side, row):
    out = pad([np.array([7, 8]), np.array([1, 2, 3, 4])], 4, side)
    assert out.tolist() == [row, [1, 2, 3, 4]]


def test_pad_rejects_unknown_side_and_overlong():
    with pytest.raises(ValueError, match="pre, post"):
        pad([np.array([1])], 2, "middle")
    with pytest.raises(ValueError, match="truncate first"):
        pad([np.array([1, 2, 3])], 2, "pre")
