"""One optimiser for a model with both dense and sparse-gradient parameters.

A hashed n-gram table (``seqbench.models.ngrams``, ``sparse=True``) has a million rows of which a
batch reads a few thousand. Adam cannot take sparse gradients and would update (and decay the
moments of) every row at every step; ``torch.optim.SparseAdam`` updates only the rows a batch
touched but refuses dense gradients. ``SparseDenseOptimizer`` runs one of each, as a single
``torch.optim.Optimizer``, so that Lightning's automatic optimisation, precision plugins, LR
schedulers (they see every parameter group) and checkpoints (one state dict, so resume stays
exact) all work unchanged. PyTorch has no such combinator; it is written here.

The sparse half defaults to ``RowSparseAdam``, not ``torch.optim.SparseAdam``: SparseAdam
coalesces each gradient with torch's CPU sort, which is slow (measured on the 2-core Xeon of
docs/benchmarks.md: 0.5-1.3 s per step for a batch's 192k n-gram rows, where numpy sorts the
same indices in 0.03 s), so on CPU it was slower than the dense update it replaces. The update
is SparseAdam's, row for row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn


def sparse_parameters(module: nn.Module) -> set[nn.Parameter]:
    """Parameters whose gradients are sparse: the weights of ``sparse=True`` embeddings."""
    found: set[nn.Parameter] = set()
    for sub in module.modules():
        if isinstance(sub, (nn.Embedding, nn.EmbeddingBag)) and sub.sparse:
            found.add(sub.weight)
    return found


def _rows_and_grad(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of a sparse (COO, maybe uncoalesced) row gradient and their summed
    values. On CPU through numpy's sort (see the module docstring), elsewhere torch.unique."""
    indices, values = grad._indices()[0], grad._values()
    if indices.device.type == "cpu":
        rows_np, inverse_np = np.unique(indices.numpy(), return_inverse=True)
        rows, inverse = torch.from_numpy(rows_np), torch.from_numpy(inverse_np.reshape(-1))
    else:
        rows, inverse = torch.unique(indices, return_inverse=True)
    summed = torch.zeros((len(rows), *values.shape[1:]), dtype=values.dtype, device=values.device)
    return rows, summed.index_add_(0, inverse, values)


def _evaluate(closure: Callable[[], Any] | None) -> Any:
    """The loss from ``closure`` (forward and backward, with gradients on), as ``step`` must."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class RowSparseAdam(torch.optim.Optimizer):
    """Adam for sparse row gradients (embedding tables): only the rows a step touched change,
    and their moments, exactly as ``torch.optim.SparseAdam`` does (the step count is the
    parameter's, the moments of untouched rows are not decayed)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not (lr >= 0 and eps >= 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid RowSparseAdam settings lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError(
                        "RowSparseAdam takes sparse gradients only (an nn.Embedding with "
                        "sparse=True); give dense parameters to the main optimiser"
                    )
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                step = float(state["step"])
                rows, grad = _rows_and_grad(param.grad)
                # index_select/index_copy_: rows are distinct, and these are several times
                # faster on CPU than advanced indexing or index_add_ into a large table
                exp_avg = state["exp_avg"].index_select(0, rows)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                update = exp_avg.div_(exp_avg_sq.sqrt_().add_(group["eps"]))
                updated = param.index_select(0, rows).add_(update, alpha=-step_size)
                param.index_copy_(0, rows, updated)
        return loss


class SparseDenseOptimizer(torch.optim.Optimizer):
    """Steps ``dense`` and ``sparse`` (two optimisers over disjoint parameters) together.

    Its ``param_groups`` are the two optimisers' own group dicts, so a learning-rate change by a
    scheduler reaches both; one ``state`` dict is shared by all three (parameters are disjoint),
    so ``state_dict``/``load_state_dict`` save and restore both optimisers' moments."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer) -> None:
        self.dense, self.sparse = dense, sparse
        groups = [*dense.param_groups, *sparse.param_groups]
        super().__init__(groups, defaults={})
        self._relink()

    def _relink(self) -> None:
        """Point the two optimisers at this optimiser's groups and state (after a load, too)."""
        split = len(self.dense.param_groups)
        self.dense.param_groups = self.param_groups[:split]
        self.sparse.param_groups = self.param_groups[split:]
        self.dense.state = self.sparse.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        self.dense.step()
        self.sparse.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._relink()


def build_optimizer(
    groups: Iterable[dict],
    dense_factory: Callable[..., torch.optim.Optimizer],
    sparse_params: set[nn.Parameter],
    sparse_factory: Callable[..., torch.optim.Optimizer] | None = None,
) -> torch.optim.Optimizer:
    """The configured optimiser over ``groups``; when some parameters have sparse gradients, those
    go to ``sparse_factory`` (default ``RowSparseAdam`` with the optimiser's lr, betas and eps),
    each group keeping its learning rate, and the two are stepped as one."""
    dense_groups, sparse_groups = [], []
    for group in groups:
        params = list(group["params"])
        rest = {k: v for k, v in group.items() if k != "params"}
        if dense := [p for p in params if p not in sparse_params]:
            dense_groups.append({"params": dense, **rest})
        if sparse := [p for p in params if p in sparse_params]:
            sparse_groups.append({"params": sparse, **rest})
    if not sparse_groups:
        return dense_factory(dense_groups)
    if sparse_factory is None:
        keywords = getattr(dense_factory, "keywords", {})
        options = {k: keywords[k] for k in ("lr", "betas", "eps") if k in keywords}
        sparse_opt = RowSparseAdam(sparse_groups, **options)
    else:
        sparse_opt = sparse_factory(sparse_groups)
    if not dense_groups:
        return sparse_opt
    return SparseDenseOptimizer(dense_factory(dense_groups), sparse_opt)
