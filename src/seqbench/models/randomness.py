"""Dropout that can draw from a per-thread generator, so batch slices trained in parallel
threads (seqbench.parallel) get reproducible masks.

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
