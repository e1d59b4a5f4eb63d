"""The IMDB DataModule on a small local corpus: cache hits, invalidation, splits, batches."""

import numpy as np
import pytest

from helpers import write_fake_imdb
from seqbench.data.datamodule import IMDBDataModule, SyntheticDataModule
from seqbench.data.text import START


def _module(cache, archive, **kw):
    kw.setdefault("vocab_size", 30)
    kw.setdefault("max_len", 50)
    return IMDBDataModule(cache_dir=str(cache), archive=str(archive), **kw)


def test_cache_hit_and_invalidation(tmp_path, fake_imdb_dir):
    cache = tmp_path / "cache"
    first = _module(cache, fake_imdb_dir)
    first.setup()
    assert first.corpus.meta["cache_hit"] is False
    again = _module(cache, fake_imdb_dir)
    again.setup()
    assert again.corpus.meta["cache_hit"] is True
    assert np.array_equal(again.corpus.train.tokens, first.corpus.train.tokens)
    for change in (
        {"vocab_size": 20},
        {"max_len": 10},
        {"truncating": "post"},
        {"tokenizer": "char"},
        {"subset": 10},
    ):
        changed = _module(cache, fake_imdb_dir, **change)
        changed.setup()
        assert changed.corpus.meta["cache_hit"] is False, change
    assert len(list((cache / "encoded").glob("corpus-*.npz"))) == 6


def test_vocabulary_comes_from_train_split_only(tmp_path):
    root = write_fake_imdb(tmp_path / "data")
    test_review = sorted((root / "test" / "pos").iterdir())[0]
    test_review.write_text(test_review.read_text() + " zyzzyva" * 50)  # frequent, but only in test
    train_review = sorted((root / "train" / "pos").iterdir())[0]
    train_review.write_text(train_review.read_text() + " trainonly")
    dm = _module(tmp_path / "cache", root, vocab_size=1000)
    dm.setup()
    assert "zyzzyva" not in dm.corpus.vocab.words
    assert "trainonly" in dm.corpus.vocab.words


def test_splits_are_stratified_and_disjoint(tmp_path, fake_imdb_dir):
    dm = _module(tmp_path / "cache", fake_imdb_dir, val_fraction=0.25)
    dm.setup()
    train, val = dm.splits["train"], dm.splits["val"]
    assert len(train) + len(val) == 40 and len(val) == 10
    assert val.labels.sum() == 5  # 25% of each class
    assert len(dm.splits["test"]) == 40
    assert all(dm.splits["train"].sequence(i)[0] == START for i in range(len(train)))


def test_subset_is_stratified(tmp_path, fake_imdb_dir):
    dm = _module(tmp_path / "cache", fake_imdb_dir, subset=10)
    dm.setup()
    assert len(dm.corpus.train) == 10 and dm.corpus.train.labels.sum() == 5
    assert len(dm.corpus.test) == 10 and dm.corpus.test.labels.sum() == 5


@pytest.mark.parametrize(("bucketing", "padding"), [(True, "post"), (False, "pre")])
def test_batches(tmp_path, fake_imdb_dir, bucketing, padding):
    dm = _module(
        tmp_path / "cache", fake_imdb_dir, bucketing=bucketing, padding=padding, batch_size=8
    )
    dm.setup()
    tokens, lengths, labels = next(iter(dm.train_dataloader()))
    assert tokens.shape[0] == lengths.shape[0] == labels.shape[0] == 8
    if bucketing:
        assert tokens.shape[1] == int(lengths.max())
        assert (tokens[:, 0] == START).all()  # post padding: text first
    else:
        assert tokens.shape[1] == 50
        assert all(tokens[i, 50 - int(n)] == START for i, n in enumerate(lengths))


def test_invalid_choice_names_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="valid choices: pre, post"):
        IMDBDataModule(cache_dir=str(tmp_path), padding="left")
    with pytest.raises(ValueError, match="valid choices: word, char"):
        IMDBDataModule(cache_dir=str(tmp_path), tokenizer="bpe")


def test_synthetic_is_deterministic_and_order_dependent():
    a, b = SyntheticDataModule(n_train=50, n_test=20), SyntheticDataModule(n_train=50, n_test=20)
    a.setup()
    b.setup()
    assert np.array_equal(a.corpus.train.tokens, b.corpus.train.tokens)
    # both classes hold exactly one of each marker: token counts cannot reveal the label
    split = a.corpus.train
    for i in range(len(split)):
        seq = split.sequence(i)
        assert (seq == 3).sum() == 1 and (seq == 4).sum() == 1
        assert int(np.flatnonzero(seq == 3)[0] < np.flatnonzero(seq == 4)[0]) == split.labels[i]


def test_num_classes_mismatch_is_explained(tmp_path):
    dm = SyntheticDataModule(num_classes=3, n_train=20, n_test=10)
    with pytest.raises(ValueError, match="set data.num_classes=2"):
        dm.setup()


def test_take_selects_whole_sequences_in_the_given_order():
    from seqbench.data.corpus import EncodedSplit

    seqs = [
        np.array([1, 5, 6]),
        np.array([1]),
        np.array([1, 7, 8, 9]),
        np.array([], dtype=np.int64),
    ]
    split = EncodedSplit.from_sequences(seqs, np.array([0, 1, 1, 0]))
    picked = split.take(np.array([2, 0, 3, 2]))
    assert [picked.sequence(i).tolist() for i in range(4)] == [
        [1, 7, 8, 9],
        [1, 5, 6],
        [],
        [1, 7, 8, 9],
    ]
    assert picked.labels.tolist() == [1, 0, 0, 1] and picked.tokens.dtype == np.int32


def _movies(dm, split: str) -> set[int]:
    """Group ids of a split's rows (the rows are taken from the corpus in index order)."""
    return set(dm.corpus.train_groups[dm.split_indices[split]].tolist())


def test_grouped_validation_holds_out_whole_movies(tmp_path, fake_imdb_dir):
    dm = _module(tmp_path / "cache", fake_imdb_dir, val_fraction=0.25, val_split="grouped")
    dm.setup()
    train, val = dm.splits["train"], dm.splits["val"]
    assert len(train) + len(val) == 40 and 4 <= len(val) <= 10  # whole movies of 8 reviews
    held, kept = _movies(dm, "val"), _movies(dm, "train")
    assert held and kept and not held & kept  # no movie on both sides
    # Seeded: the same movies again; another split_seed holds out others.
    again = _module(tmp_path / "cache", fake_imdb_dir, val_fraction=0.25, val_split="grouped")
    again.setup()
    assert np.array_equal(again.split_indices["val"], dm.split_indices["val"])
    other = _module(
        tmp_path / "cache", fake_imdb_dir, val_fraction=0.25, val_split="grouped", split_seed=7
    )
    other.setup()
    assert not np.array_equal(other.split_indices["val"], dm.split_indices["val"])
    # The stratified default mixes movies across the two sides: what grouped avoids.
    mixed = _module(tmp_path / "cache", fake_imdb_dir, val_fraction=0.25)
    mixed.setup()
    assert _movies(mixed, "val") & _movies(mixed, "train")


def test_grouped_validation_without_movie_urls_is_a_clear_error(tmp_path):
    root = write_fake_imdb(tmp_path / "data", movie_urls=False)
    dm = _module(tmp_path / "cache", root, val_split="grouped")
    with pytest.raises(
        ValueError, match="val_split=grouped needs .* use data.val_split=stratified"
    ):
        dm.setup()
    with pytest.raises(ValueError, match="valid choices: stratified, grouped"):
        _module(tmp_path / "cache", root, val_split="movie")


@pytest.mark.scenario
@pytest.mark.realdata
def test_grouped_validation_on_the_real_archive_shares_no_movie(shared_archive, real_imdb_cache):
    dm = _module(real_imdb_cache, shared_archive, val_split="grouped")
    dm.setup()
    assert 2400 <= len(dm.splits["val"]) <= 2500 and len(dm.splits["train"]) >= 22500
    assert not _movies(dm, "val") & _movies(dm, "train")
    assert 0.4 < dm.splits["val"].labels.mean() < 0.6


@pytest.mark.parametrize("bucketing", [True, False])
def test_overfit_batches_sees_the_same_batches_every_epoch(bucketing):
    """``debug=overfit`` (``trainer.overfit_batches``): the training sampler stops reshuffling,
    while an ordinary trainer still gets new batches each epoch."""
    import lightning as L

    def first_batches(trainer: L.Trainer, epoch: int) -> list[list[int]]:
        dm = SyntheticDataModule(n_train=200, n_test=20, batch_size=16, bucketing=bucketing)
        dm.setup()
        dm.trainer = trainer
        sampler = dm.train_dataloader().batch_sampler
        sampler.set_epoch(epoch)
        return [list(b) for b in list(sampler)[:3]]

    overfit = L.Trainer(overfit_batches=3, logger=False, enable_progress_bar=False)
    assert first_batches(overfit, 0) == first_batches(overfit, 1)
    plain = L.Trainer(logger=False, enable_progress_bar=False)
    assert first_batches(plain, 0) != first_batches(plain, 1)
