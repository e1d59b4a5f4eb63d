"""The LightningModule: loss, metrics and optimiser around any ``SequenceClassifier``."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torchmetrics import AUROC, Accuracy, F1Score, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score

from seqbench.config.settings import refusal_message, refused_key
from seqbench.config.validation import ConfigError
from seqbench.models.arguments import ModelArgumentError
from seqbench.models.classifier import count_trainable
from seqbench.models.inputs import data_input_kind
from seqbench.training.optimizers import build_optimizer, sparse_parameters
from seqbench.training.parallel import BatchSplitter
from seqbench.training.statistics import count_training_statistics

SPLITS = ("train", "val", "test")


def _metrics(num_classes: int) -> MetricCollection:
    if num_classes == 2:
        kw: dict = {"task": "binary"}
        f1 = F1Score(**kw)
    else:
        kw = {"task": "multiclass", "num_classes": num_classes}
        f1 = F1Score(**kw, average="macro")  # many classes: {split}/f1 is macro-F1
    return MetricCollection({"acc": Accuracy(**kw), "f1": f1, "auroc": AUROC(**kw)})


def metric_suffix(label: str) -> str:
    """A class name as a metric-name suffix (``test/f1_<label>``): word characters, '.', '-'."""
    return re.sub(r"[^\w.\-]+", "_", str(label)).strip("_") or "class"


class ClassificationTask(L.LightningModule):
    """Binary (one logit, BCE-with-logits) or multi-class (cross-entropy) sequence classification.

    Metrics per split are accumulated on the device and computed once per epoch (no host sync
    per step); they are logged as ``{split}/loss``, ``{split}/acc``, ``{split}/f1``, ``{split}/auroc``.
    The test split also gets ``test/f1_macro``, ``test/f1_<label>`` per class (names from the
    datamodule's ``label_names``) and a confusion matrix (``confusion_matrix``, rows = true class).
    Class weights for the loss come from the datamodule's ``loss_weights()`` (training split).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
        scheduler_monitor: str = "val/loss",
        batch_splitter: BatchSplitter | None = None,
        lr_scales: dict[str, float] | None = None,
        sparse_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_classes = getattr(net, "num_classes", 2)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.batch_splitter = batch_splitter
        self.lr_scales = dict(lr_scales or {})
        self.sparse_optimizer_factory = sparse_optimizer  # for sparse-gradient tables
        self.metrics = nn.ModuleDict(
            {f"{s}_metrics": _metrics(self.num_classes).clone(prefix=f"{s}/") for s in SPLITS}
        )
        self.test_per_class = MetricCollection(
            {
                "f1": MulticlassF1Score(self.num_classes, average=None),
                "confusion": MulticlassConfusionMatrix(self.num_classes),
            }
        )
        self.confusion_matrix: torch.Tensor | None = None  # set at the end of testing
        self.register_buffer("class_weights", None, persistent=False)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        weights = datamodule.loss_weights() if hasattr(datamodule, "loss_weights") else None
        self.class_weights = weights.to(self.device) if weights is not None else None

    def on_fit_start(self) -> None:
        count_training_statistics(self)  # e.g. ngram_bag's naive-Bayes ratios; once per run

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
        weights = self.class_weights
        if self.num_classes == 2:
            per_example = weights[labels] if weights is not None else None
            loss = F.binary_cross_entropy_with_logits(logits, labels.float(), weight=per_example)
            return loss, torch.sigmoid(logits)
        return F.cross_entropy(logits, labels, weight=weights), torch.softmax(logits, dim=-1)

    def _step(self, batch: tuple[torch.Tensor, ...], split: str) -> torch.Tensor:
        tokens, lengths, labels = batch
        loss, probs = self.loss_and_probs(self(tokens, lengths), labels)
        self.metrics[f"{split}_metrics"].update(probs.detach().float(), labels)
        if split == "test":
            preds = (probs > 0.5).long() if self.num_classes == 2 else probs.argmax(dim=-1)
            self.test_per_class.update(preds.detach(), labels)
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
        result = self.test_per_class.compute()
        self.test_per_class.reset()
        self.confusion_matrix = result["confusion"].detach().cpu()
        datamodule = getattr(self.trainer, "datamodule", None)
        names = list(getattr(datamodule, "label_names", None) or range(self.num_classes))
        per_class, seen = {"test/f1_macro": result["f1"].mean()}, set()
        for name, value in zip(names, result["f1"], strict=True):
            key = f"test/f1_{metric_suffix(name)}"
            key = key if key not in seen else f"{key}_{len(seen)}"
            seen.add(key)
            per_class[key] = value
        self.log_dict(per_class, sync_dist=True)

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups: one at the optimiser's own rate, and one per ``lr_scales`` entry
        (a submodule name, e.g. ``ngrams``, and a factor on the rate) whose parameters learn
        faster or slower. A wide, sparse part such as an n-gram bag sees each of its rows in
        few steps and would otherwise still be learning when the recurrent part has overfitted.
        """
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if self.lr_scales and base_lr is None:
            raise ValueError("model.lr_scales needs the optimiser's lr set in model.optimizer.lr")
        groups: dict[str, list[nn.Parameter]] = {name: [] for name in ("", *self.lr_scales)}
        for name, param in self.net.named_parameters():
            owners = [part for part in name.split(".")[:-1] if part in self.lr_scales]
            groups[owners[-1] if owners else ""].append(param)
        unused = [name for name in self.lr_scales if not groups[name]]
        if unused:
            raise ValueError(
                f"model.lr_scales names {unused}, which this model does not have; its "
                f"submodules: {sorted({n.split('.')[-1] for n, _ in self.net.named_modules() if n})}"
            )
        scaled = [
            {"params": groups[name], "lr": base_lr * scale}
            for name, scale in self.lr_scales.items()
        ]
        return ([{"params": groups[""]}] if groups[""] else []) + scaled

    def configure_optimizers(self):
        # Sparse-gradient tables (an n-gram bag with sparse=True) get their own optimiser, by
        # default SparseAdam at the same rates (seqbench.training.optimizers says why).
        optimizer = build_optimizer(
            self.parameter_groups(),
            self.optimizer_factory,
            sparse_parameters(self.net),
            self.sparse_optimizer_factory,
        )
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


def refused_setting(exc: InstantiationException) -> str:
    """What a model class refused, named by its config key: ``model.net.encoder.pooling='x' is
    not valid: expected one of: ...`` (``ModelArgumentError``), an argument the class does not
    take with the ones it does, or the class's own message under the node's key."""
    cause = exc.__cause__
    if isinstance(cause, ModelArgumentError):
        key = refused_key(exc, "model.net")
        return f"{key}.{cause.argument}={cause.value!r} is not valid: expected {cause.allowed}"
    return refusal_message(exc, "model.net")


def build_task(cfg: DictConfig, batch_split: int = 1) -> ClassificationTask:
    """The LightningModule for ``cfg.model``: the net, its optimiser and optional scheduler.

    A value the model refuses (a choice, a probability, an argument the class does not take, a
    ``model.lr_scales`` name the net does not have) raises ``ConfigError`` naming its key, so
    ``seqbench-train`` builds the task before any MLflow run exists (``seqbench.train``)."""
    try:
        net = instantiate(cfg.model.net)
    except InstantiationException as exc:
        if not isinstance(exc.__cause__, (ValueError, TypeError)):
            raise
        raise ConfigError(f"invalid model configuration: {refused_setting(exc)}") from None
    scheduler = instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None
    splitter = None
    if batch_split > 1:
        splitter = BatchSplitter(batch_split, flush_denormal=bool(cfg.get("flush_denormal", True)))
    task = ClassificationTask(
        net=net,
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=scheduler,
        batch_splitter=splitter,
        lr_scales=dict(cfg.model.get("lr_scales") or {}),
        sparse_optimizer=(
            instantiate(cfg.model.sparse_optimizer) if cfg.model.get("sparse_optimizer") else None
        ),
    )
    try:
        task.parameter_groups()  # the lr_scales names, checked now rather than at fit time
    except ValueError as exc:
        raise ConfigError(f"invalid model configuration: {exc}") from None
    return task


def check_model(cfg: DictConfig) -> None:
    """Build the task once from a copy of ``cfg``, before any data, cache or run exists, so a
    value the model refuses costs one ``ConfigError`` and nothing else. The random state is
    left untouched (the real build, later, draws the same initial weights); a ``data.num_classes``
    the data has not filled in yet is taken as 2 for the check, and numeric data's channel
    count (``seqbench.models.inputs.adapt_to_data``) as 1."""
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        if probe.get("data") is not None and probe.data.get("num_classes") is None:
            probe.data.num_classes = 2
        encoder = OmegaConf.select(probe, "model.net.encoder")
        if data_input_kind(probe) == "numeric" and encoder is not None:
            encoder.input_channels = encoder.get("input_channels") or 1
    with torch.random.fork_rng(devices=[]):
        build_task(probe)
