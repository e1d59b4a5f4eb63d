"""The LightningModule: loss, metrics and optimiser around any ``SequenceClassifier``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import AUROC, Accuracy, F1Score, MetricCollection

from seqbench.models.classifier import count_trainable
from seqbench.parallel import BatchSplitter

SPLITS = ("train", "val", "test")


def _metrics(num_classes: int) -> MetricCollection:
    if num_classes == 2:
        kw: dict = {"task": "binary"}
    else:
        kw = {"task": "multiclass", "num_classes": num_classes}
    return MetricCollection({"acc": Accuracy(**kw), "f1": F1Score(**kw), "auroc": AUROC(**kw)})


class ClassificationTask(L.LightningModule):
    """Binary (one logit, BCE-with-logits) or multi-class (cross-entropy) sequence classification.

    Metrics per split are accumulated on the device and computed once per epoch (no host sync
    per step); they are logged as ``{split}/loss``, ``{split}/acc``, ``{split}/f1``, ``{split}/auroc``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
        scheduler_monitor: str = "val/loss",
        batch_splitter: BatchSplitter | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_classes = getattr(net, "num_classes", 2)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.batch_splitter = batch_splitter
        self.metrics = nn.ModuleDict(
            {f"{s}_metrics": _metrics(self.num_classes).clone(prefix=f"{s}/") for s in SPLITS}
        )

    @property
    def trainable_parameters(self) -> int:
        return count_trainable(self.net)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.batch_splitter is not None:  # CPU: batch slices in parallel threads
            return self.batch_splitter(self.net, tokens, lengths)
        return self.net(tokens, lengths)

    def loss_and_probs(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes == 2:
            return F.binary_cross_entropy_with_logits(logits, labels.float()), torch.sigmoid(logits)
        return F.cross_entropy(logits, labels), torch.softmax(logits, dim=-1)

    def _step(self, batch: tuple[torch.Tensor, ...], split: str) -> torch.Tensor:
        tokens, lengths, labels = batch
        loss, probs = self.loss_and_probs(self(tokens, lengths), labels)
        self.metrics[f"{split}_metrics"].update(probs.detach().float(), labels)
        self.log(
            f"{split}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=labels.size(0),
            prog_bar=split != "test",
            sync_dist=split != "train",
        )
        return loss

    def _log_epoch(self, split: str) -> None:
        self.log_dict(
            self.metrics[f"{split}_metrics"].compute(), prog_bar=split == "val", sync_dist=True
        )
        self.metrics[f"{split}_metrics"].reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.scheduler_monitor,
                "interval": "epoch",
            },
        }
