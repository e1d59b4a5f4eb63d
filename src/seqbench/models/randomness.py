"""Dropout that can draw from a per-thread generator, so batch slices trained in parallel
threads (seqbench.training.parallel) get reproducible masks.

Why our own: ``nn.Dropout`` always draws from torch's one global CPU generator; two threads
drawing from it at once get masks in whichever order the scheduler runs them, so a seeded run
would no longer be reproducible. Outside a ``use_generator`` block everything here falls back
to the global generator and to ``nn.Dropout`` itself, numerically unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_local = threading.local()


def current_generator() -> torch.Generator | None:
    """The generator set for this thread by ``use_generator``, or None (torch's global one)."""
    return getattr(_local, "generator", None)


@contextmanager
def use_generator(generator: torch.Generator | None) -> Iterator[None]:
    """Draw this thread's dropout masks from ``generator`` inside the block."""
    previous = current_generator()
    _local.generator = generator
    try:
        yield
    finally:
        _local.generator = previous


def keep_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability ``p``, else ``1 / (1 - p)``."""
    mask = torch.empty(shape, dtype=like.dtype, device=like.device)
    return mask.bernoulli_(1 - p, generator=current_generator()) / (1 - p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` that honours ``use_generator`` (and is ``nn.Dropout`` outside it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if current_generator() is None or not self.training or self.p == 0:
            return super().forward(x)
        return x * keep_mask(tuple(x.shape), self.p, x)


class BranchDropout(nn.Module):
    """Drop a whole branch's vector for a random ``p`` of the examples (inverted scaling).

    For models that concatenate the outputs of branches that learn at different speeds (a
    recurrent encoder and an n-gram bag): without it the branch that memorises the training set
    first leaves the other nothing to learn from; with it each branch must classify alone on
    the examples where the other is dropped, so the two end up as complementary evidence."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"branch dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * keep_mask((x.size(0), *([1] * (x.dim() - 1))), self.p, x)
