"""Batch samplers and padding collation.

Length bucketing is the training fast path: reviews of similar length share a batch, so a
batch is padded only to its own longest review instead of to ``max_len`` (IMDB's mean review
is ~230 tokens against a 500 cap, so fixed padding wastes more than half the work).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seqbench.data.text import SIDES


class _EpochForwarder:
    """Stands in as ``BucketBatchSampler.sampler`` and passes ``set_epoch`` on."""

    def __init__(self, owner: BucketBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Random batches of similar-length examples, reshuffled every epoch, split across DDP ranks.

    Each epoch: permute all indices (seeded by ``seed + epoch``), cut them into pools of
    ``batch_size * pool_batches``, sort each pool by length, cut pools into batches and shuffle
    the batch order. Rank ``r`` of ``num_replicas`` takes every ``num_replicas``-th batch; the
    batch list is padded by repeating batches so every rank runs the same number of steps
    (DDP would hang otherwise). Call ``set_epoch`` each epoch (Lightning does).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        pool_batches: int = 100,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pool = batch_size * max(1, pool_batches)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained)

    @property
    def sampler(self) -> _EpochForwarder:
        """Lightning calls ``set_epoch`` on ``loader.sampler`` and ``batch_sampler.sampler``,
        never on the batch sampler itself; without this every epoch had the same order."""
        return _EpochForwarder(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Skip this rank's first ``batches_done`` batches the next time ``epoch`` is iterated:
        a mid-epoch checkpoint then continues with exactly the batches it had not seen."""
        self._resume = (epoch, batches_done)

    def _all_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches = []
        for start in range(0, n, self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
        batches += batches[: total - len(batches)]  # equal step counts on every rank
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        for batch in batches[self.rank :: self.num_replicas][skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        n = len(self.lengths)
        if self.drop_last:
            full = (n // self.pool) * (self.pool // self.batch_size)
            full += (n % self.pool) // self.batch_size
            count = full
        else:
            count = sum(
                math.ceil(min(self.pool, n - s) / self.batch_size) for s in range(0, n, self.pool)
            )
        return math.ceil(count / self.num_replicas)


class SortedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Evaluation batches in length order (least padding); each rank takes a disjoint share."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        order = np.argsort(np.asarray(lengths), kind="stable")
        mine = order[rank::num_replicas]
        self.batches = [mine[i : i + batch_size].tolist() for i in range(0, len(mine), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class PadCollate:
    """Stack ``(sequence, label)`` pairs into ``(tokens[B, T], lengths[B], labels[B])``.

    ``T`` is the batch's longest sequence, or ``fixed_length`` when set (the seeds' padding of
    every review to ``max_len``). ``side`` puts the padding before (``pre``, Keras) or after
    (``post``) the tokens. Lengths are always the true lengths.
    """

    def __init__(self, side: str = "post", fixed_length: int | None = None) -> None:
        if side not in SIDES:
            raise ValueError(f"unknown padding side {side!r}; valid choices: {', '.join(SIDES)}")
        self.side = side
        self.fixed_length = fixed_length

    def __call__(
        self, items: Sequence[tuple[np.ndarray, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(seq) for seq, _ in items], dtype=torch.long)
        width = self.fixed_length or int(lengths.max())
        tokens = torch.zeros((len(items), width), dtype=torch.long)
        for row, (seq, _) in enumerate(items):
            n = len(seq)
            if n:
                if self.side == "post":
                    tokens[row, :n] = torch.from_numpy(seq)
                else:
                    tokens[row, width - n :] = torch.from_numpy(seq)
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        return tokens, lengths, labels


@dataclass(frozen=True)
class Batching:
    """How a data module cuts its splits into batches: the ``data.*`` keys of the same names
    (``SequenceDataModule`` takes them as keywords), each default defined here only."""

    batch_size: int = 64
    eval_batch_size: int = 256
    bucketing: bool = True
    bucket_pool_batches: int = 100
    num_workers: int = 0
    pin_memory: bool = False

    def train_sampler(
        self, lengths: np.ndarray, seed: int, shuffle: bool, num_replicas: int, rank: int
    ) -> BucketBatchSampler:
        """Length buckets, or (``bucketing=False``) the seeds' uniform shuffled batches: equal
        lengths and a pool of one batch leave nothing to sort."""
        pool = self.bucket_pool_batches
        if not self.bucketing:
            lengths, pool = np.zeros(len(lengths)), 1
        return BucketBatchSampler(
            lengths,
            self.batch_size,
            seed=seed,
            shuffle=shuffle,
            pool_batches=pool,
            num_replicas=num_replicas,
            rank=rank,
        )
