"""The length-bucketing batch sampler and padding collation."""

import numpy as np
import pytest
import torch

from seqbench.data.sampling import BucketBatchSampler, PadCollate, SortedBatchSampler

LENGTHS = np.random.default_rng(0).integers(5, 500, size=1003)


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_covers_every_example_exactly_once():
    sampler = BucketBatchSampler(LENGTHS, batch_size=64, seed=3)
    batches = _epoch(sampler, 0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert len(batches) == len(sampler)
    assert all(len(b) <= 64 for b in batches)


def test_batches_group_similar_lengths():
    batches = _epoch(BucketBatchSampler(LENGTHS, batch_size=32, seed=0, pool_batches=100), 0)
    spread = np.mean([np.ptp(LENGTHS[b]) for b in batches])
    random_spread = np.mean(
        [
            np.ptp(LENGTHS[b])
            for b in np.array_split(
                np.random.default_rng(1).permutation(len(LENGTHS)), len(batches)
            )
        ]
    )
    assert spread < random_spread / 5


def test_deterministic_under_seed_and_different_across_epochs_and_seeds():
    a, b = BucketBatchSampler(LENGTHS, 64, seed=7), BucketBatchSampler(LENGTHS, 64, seed=7)
    assert _epoch(a, 0) == _epoch(b, 0)
    assert _epoch(a, 1) == _epoch(b, 1)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(BucketBatchSampler(LENGTHS, 64, seed=8), 0) != _epoch(a, 0)


@pytest.mark.parametrize("replicas", [2, 3])
def test_ddp_ranks_are_disjoint_cover_all_and_equal_length(replicas):
    per_rank = [
        _epoch(BucketBatchSampler(LENGTHS, 64, seed=1, num_replicas=replicas, rank=r), 2)
        for r in range(replicas)
    ]
    assert len({len(p) for p in per_rank}) == 1  # same number of steps on every rank
    assert all(
        len(p) == len(BucketBatchSampler(LENGTHS, 64, num_replicas=replicas)) for p in per_rank
    )
    seen = [i for p in per_rank for b in p for i in b]
    assert set(seen) == set(range(len(LENGTHS)))
    # disjoint up to the few batches repeated to equalise step counts
    n_batches = sum(len(p) for p in per_rank)
    real_batches = len(_epoch(BucketBatchSampler(LENGTHS, 64, seed=1), 2))
    assert n_batches - real_batches < replicas
    all_batches = [tuple(b) for p in per_rank for b in p]
    assert (
        len(set(all_batches)) == real_batches
    )  # each real batch on exactly one rank, plus repeats


def test_drop_last_len_matches_iteration():
    sampler = BucketBatchSampler(LENGTHS, 64, drop_last=True, pool_batches=3)
    batches = _epoch(sampler, 0)
    assert len(batches) == len(sampler) and all(len(b) == 64 for b in batches)


def test_sorted_eval_batches_cover_all_in_length_order():
    batches = list(SortedBatchSampler(LENGTHS, 100))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert np.all(np.diff(LENGTHS[flat]) >= 0)


@pytest.mark.parametrize(
    ("side", "fixed"), [("post", None), ("pre", None), ("post", 6), ("pre", 6)]
)
def test_pad_collate(side, fixed):
    items = [(np.array([1, 5, 6], dtype=np.int32), 0), (np.array([1, 7], dtype=np.int32), 1)]
    tokens, lengths, labels = PadCollate(side, fixed)(items)
    width = fixed or 3
    assert tokens.shape == (2, width) and tokens.dtype == torch.long
    assert lengths.tolist() == [3, 2] and labels.tolist() == [0, 1]
    row = tokens[1].tolist()
    assert row == ([1, 7] + [0] * (width - 2) if side == "post" else [0] * (width - 2) + [1, 7])


def test_lightning_reaches_the_epoch_of_a_loaders_batch_sampler():
    """Lightning calls ``set_epoch`` through ``loader.sampler`` / ``batch_sampler.sampler``, not on
    the batch sampler: without the forwarder every epoch trained on the same batch order."""
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = BucketBatchSampler(LENGTHS, batch_size=64, seed=3)
    loader = DataLoader(list(range(len(LENGTHS))), batch_sampler=sampler)
    orders = []
    for epoch in range(2):
        _set_sampler_epoch(loader, epoch)
        orders.append([b.tolist() for b in loader])
    assert orders[0] != orders[1]


def test_resume_at_skips_the_batches_already_trained_in_that_epoch_only():
    sampler = BucketBatchSampler(LENGTHS, batch_size=64, seed=3)
    full = _epoch(sampler, 2)
    sampler.resume_at(2, 5)
    assert _epoch(sampler, 2) == full[5:]
    assert _epoch(sampler, 2) == full  # once only
    sampler.resume_at(1, 5)
    assert _epoch(sampler, 2) == full  # another epoch: nothing skipped
