"""Statistics of the training split that a model needs before its first step.

Some models keep numbers counted from the training data beside their weights (the naive-Bayes
log-count ratios of ``model=ngram_bag weighting=nb``, ``seqbench.models.bag``). A module opts in
with ``needs_statistics`` (True until counted), ``observe(tokens, lengths, labels)`` and
``finish_observing(reduce)``. The task counts once, at the start of fit, over the training split
in a fixed order (so the count never depends on the shuffling seed); under DDP each process
counts its shard and ``reduce`` sums them. The results are buffers: they are saved in every
checkpoint, so a resumed run continues with the same numbers and never counts again.
"""

from __future__ import annotations

import lightning as L
import torch
from tqdm.auto import tqdm


def count_training_statistics(task: L.LightningModule) -> None:
    """Run the one counting pass for every submodule of ``task.net`` that still needs it."""
    modules = [m for m in task.net.modules() if getattr(m, "needs_statistics", False)]
    if not modules:
        return
    trainer = task.trainer
    datamodule = trainer.datamodule
    if not hasattr(datamodule, "statistics_dataloader"):
        raise RuntimeError(
            f"{type(modules[0]).__name__} counts statistics of the training split, which "
            f"{type(datamodule).__name__} cannot give (it has no statistics_dataloader())"
        )
    loader = datamodule.statistics_dataloader()
    with torch.no_grad():
        for tokens, lengths, labels in tqdm(
            loader, desc="counting training statistics", disable=trainer.global_rank != 0
        ):
            tokens, labels = tokens.to(task.device), labels.to(task.device)
            for module in modules:
                module.observe(tokens, lengths, labels)
    for module in modules:
        module.finish_observing(lambda t: trainer.strategy.reduce(t, reduce_op="sum"))
