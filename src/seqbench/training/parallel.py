"""Data parallelism inside one CPU process: each training batch is cut into slices whose forward
and backward passes run at the same time in worker threads, each on its share of the cores.

Why: a batch-64 LSTM step is a chain of small matrix products that oneDNN spreads poorly over
intra-op threads (in bf16 a second thread gains almost nothing), while two independent slices,
one per core, keep both cores busy (docs/benchmarks.md has the figures). The gradient is that of
the whole batch: the slices' parameter gradients are summed in a fixed order, so a run stays
deterministic, and each slice's dropout masks come from its own generator seeded from torch's
global one (seqbench.models.randomness). Lightning, the optimiser and the loss see one batch and
one output, as without splitting. Torch ops release the GIL, so Python threads suffice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from seqbench.models.randomness import use_generator

_SEED_HIGH = 2**62


class BatchSplitter:
    """Runs ``module(*inputs)`` on ``splits`` slices of the batch in parallel threads (CPU only).

    Torch's intra-op thread count is one setting for the whole process (OpenMP), so the caller
    sets it to cores // splits (``seqbench.training.cpu.configure_cpu``). Training (gradients on)
    splits forward and backward; evaluation splits the forward. Gradients flow to the module's
    parameters only: the inputs are data (token ids, lengths). It is a plain ``module(*inputs)``
    for one split, a batch smaller than ``splits``, inputs that need gradients, or tensors off
    the CPU.
    """

    def __init__(self, splits: int, flush_denormal: bool = True) -> None:
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        self.splits = splits
        self.flush_denormal = flush_denormal
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict:  # thread pools do not pickle; a copy starts its own
        return {**self.__dict__, "_pool": None}

    def map(self, fn: Callable, *iterables: Sequence) -> list:
        """``[fn(*args) for args in zip(*iterables)]``, one call per worker thread, in order."""
        if self._pool is None:
            # Denormal flushing is per-thread CPU state (MXCSR): set it in every worker.
            self._pool = ThreadPoolExecutor(
                self.splits,
                thread_name_prefix="seqbench-split",
                initializer=torch.set_flush_denormal,
                initargs=(self.flush_denormal,),
            )
        futures = [self._pool.submit(fn, *args) for args in zip(*iterables, strict=True)]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __call__(self, module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        if (
            self.splits == 1
            or inputs[0].size(0) < self.splits
            or any(t.device.type != "cpu" or t.requires_grad for t in inputs)
        ):
            return module(*inputs)
        params = tuple(p for p in module.parameters() if p.requires_grad)
        if torch.is_grad_enabled() and params:
            return _SplitBatch.apply(self, module, inputs, *params)
        return self._forward_only(module, inputs)

    def _forward_only(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inference = torch.is_inference_mode_enabled()
        autocast = _callers_autocast()

        def run(slice_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
            with torch.inference_mode(inference), torch.no_grad(), autocast():
                return module(*slice_inputs)

        return torch.cat(self.map(run, _slices(inputs, self.splits)))


def _slices(inputs: tuple[torch.Tensor, ...], n: int) -> list[tuple[torch.Tensor, ...]]:
    return list(zip(*(t.tensor_split(n) for t in inputs), strict=True))


def _callers_autocast() -> Callable[[], torch.autocast]:
    """The calling thread's CPU autocast state, to re-enter in a worker (it is per-thread)."""
    enabled, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    return lambda: torch.autocast("cpu", dtype=dtype, enabled=enabled)


class _SplitBatch(torch.autograd.Function):
    """Forward: each slice through ``module`` in its own thread, graphs kept. Backward: each
    slice's graph back-propagated in its own thread; parameter gradients summed in slice order."""

    @staticmethod
    def forward(ctx, splitter: BatchSplitter, module: nn.Module, inputs, *params):
        slices = _slices(inputs, splitter.splits)
        seeds = torch.randint(_SEED_HIGH, (len(slices),)).tolist()  # from the global generator
        autocast = _callers_autocast()

        def run(slice_inputs: tuple[torch.Tensor, ...], seed: int) -> torch.Tensor:
            generator = torch.Generator().manual_seed(seed)
            with torch.enable_grad(), autocast(), use_generator(generator):
                return module(*slice_inputs)

        outputs = splitter.map(run, slices, seeds)
        ctx.splitter, ctx.outputs, ctx.params = splitter, outputs, params
        return torch.cat([o.detach() for o in outputs])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        outputs, params = ctx.outputs, ctx.params
        grads = grad_output.split([o.size(0) for o in outputs])

        def run(output: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            return torch.autograd.grad(output, params, grad.to(output.dtype), allow_unused=True)

        per_slice = ctx.splitter.map(run, outputs, grads)
        ctx.outputs = None  # free the slices' graphs
        totals = []
        for slice_grads in zip(*per_slice, strict=True):  # summed in slice order: deterministic
            present = [g for g in slice_grads if g is not None]
            totals.append(functools.reduce(torch.add, present) if present else None)
        return (None, None, None, *totals)
