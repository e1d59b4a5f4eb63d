"""LightningDataModules: one base that owns splits and batching, one subclass per data source."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seqbench.data.corpus import (
    EncodedCorpus,
    EncodedSplit,
    cached_corpus,
    grouped_split,
    stratified_split,
)
from seqbench.data.encoding import encode_corpus
from seqbench.data.imdb import IMDB_MD5, IMDB_URL, locate, read_imdb
from seqbench.data.sampling import Batching, PadCollate, SortedBatchSampler
from seqbench.data.synthetic import SyntheticTask
from seqbench.data.text import SIDES, TOKENIZERS

log = logging.getLogger(__name__)
CLASS_WEIGHTS = ("balanced",)
VAL_SPLITS = ("stratified", "grouped")


class SplitDataset(Dataset):
    """Indexable view of an ``EncodedSplit`` yielding ``(sequence, label)``."""

    def __init__(self, split: EncodedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.split.sequence(i), int(self.split.labels[i])


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"data.{name}={value!r} is not valid; valid choices: {', '.join(choices)}")


class SequenceDataModule(L.LightningDataModule):
    """Splits, batching and padding shared by every source; subclasses implement ``load_corpus``.

    Training batches come from a length-bucketing sampler (``bucketing=True``) padded to the
    batch's longest sequence, or from plain shuffled batches padded to ``max_len`` as the Keras
    seeds do. Evaluation is sorted by length in batches of ``eval_batch_size``. The validation
    split is held out of the training split (stratified, seeded by ``split_seed``; or by whole
    groups, IMDB's movies, with ``val_split=grouped``); the test split is only ever used for the
    final test metrics. The batching settings (``batch_size``, ``bucketing``, ...) are taken as
    keywords and kept in ``self.batching`` (``seqbench.data.sampling.Batching``).
    """

    passes_settings_to = (Batching,)  # seqbench.config.settings: the **batching keywords

    def __init__(
        self,
        name: str = "data",
        num_classes: int | None = None,
        max_len: int = 500,
        padding: str = "pre",
        val_fraction: float = 0.1,
        split_seed: int = 1234,
        val_split: str = "stratified",
        class_weights: str | None = None,
        **batching,
    ) -> None:
        super().__init__()
        _check_choice("padding", padding, SIDES)
        _check_choice("val_split", val_split, VAL_SPLITS)
        if class_weights is not None:
            _check_choice("class_weights", class_weights, CLASS_WEIGHTS)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} must be between 0 and 1")
        self.name = name
        self.expected_classes = num_classes
        self.max_len = max_len
        self.padding = padding
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.val_split = val_split
        self.class_weights = class_weights
        self.batching = Batching(**batching)
        self.corpus: EncodedCorpus | None = None
        self.sampler_seed = 0  # set from the run's seed by the training entry point
        self.splits: dict[str, EncodedSplit] = {}
        self.split_indices: dict[str, np.ndarray] = {}
        self._resume_train_at: tuple[int, int] | None = None

    def load_corpus(self) -> EncodedCorpus:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """Identity of the source data (archive checksum or generator settings), for tracking."""
        return str(self.corpus.meta.get("fingerprint", "")) if self.corpus else ""

    @property
    def num_classes(self) -> int:
        return len(self.corpus.classes) if self.corpus else 0

    @property
    def label_names(self) -> list[str]:
        """Class names in class-id order (id = position), for tables, plots and predictions."""
        return [str(c) for c in self.corpus.classes] if self.corpus else []

    def loss_weights(self) -> torch.Tensor | None:
        """Per-class loss weights from the *training* split (``class_weights=balanced``:
        n / (classes * n_c), as scikit-learn's), or None for an unweighted loss."""
        if self.class_weights is None or not self.splits:
            return None
        counts = np.bincount(self.splits["train"].labels, minlength=self.num_classes)
        weights = len(self.splits["train"]) / (self.num_classes * np.maximum(counts, 1))
        return torch.as_tensor(weights, dtype=torch.float32)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.corpus = self.load_corpus()
        if self.expected_classes is not None and self.num_classes != self.expected_classes:
            raise ValueError(
                f"data.num_classes={self.expected_classes} but the {self.name} data has "
                f"{self.num_classes} classes {self.corpus.classes}; set data.num_classes={self.num_classes}"
            )
        rng = np.random.default_rng(self.split_seed)
        n, n_val = len(self.corpus.train), int(self.corpus.meta.get("val_rows") or 0)
        if n_val:  # a validation file's rows, stored after the training rows
            val_idx, train_idx = np.arange(n - n_val, n), np.arange(n - n_val)
        elif self.val_split == "grouped":
            if self.corpus.train_groups is None:
                raise ValueError(
                    f"data.val_split=grouped needs to know what each training example belongs "
                    f"to (IMDB: its movie, from train/urls_*.txt), and the {self.name} data does "
                    "not say; use data.val_split=stratified"
                )
            val_idx, train_idx = grouped_split(self.corpus.train_groups, self.val_fraction, rng)
        else:
            val_idx, train_idx = stratified_split(self.corpus.train.labels, self.val_fraction, rng)
        self.split_indices = {"train": train_idx, "val": val_idx}  # rows of corpus.train
        self.splits = {
            "train": self.corpus.train.take(train_idx),
            "val": self.corpus.train.take(val_idx),
            "test": self.corpus.test,
        }
        sizes = {k: len(v) for k, v in self.splits.items()}
        log.info("splits: %s (classes: %s)", sizes, self.corpus.classes)

    def _distributed(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _collate(self) -> PadCollate:
        return PadCollate(self.padding, None if self.batching.bucketing else self.max_len)

    def train_dataloader(self) -> DataLoader:
        split = self.splits["train"]
        replicas, rank = self._distributed()
        # trainer.overfit_batches (debug=overfit) must see the same few batches every epoch;
        # Lightning turns shuffling off only for samplers it knows, not for this batch sampler.
        shuffle = not (self.trainer is not None and self.trainer.overfit_batches > 0)
        sampler = self.batching.train_sampler(
            split.lengths, self.sampler_seed, shuffle, replicas, rank
        )
        if self._resume_train_at is not None:
            sampler.resume_at(*self._resume_train_at)
            self._resume_train_at = None
        return self._loader(split, sampler)

    # A checkpoint records where the training epoch stood, so that a mid-epoch checkpoint (saved
    # on a signal) resumes with the batches the epoch had not trained yet (BucketBatchSampler is
    # deterministic per seed and epoch). Lightning warns that plain loaders cannot do this.
    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": int(trainer.current_epoch), "batches_done": int(progress.processed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "epoch" in state:
            self._resume_train_at = (int(state["epoch"]), int(state["batches_done"]))

    def _eval_loader(self, name: str) -> DataLoader:
        split = self.splits[name]
        replicas, rank = self._distributed()
        return self._loader(
            split, SortedBatchSampler(split.lengths, self.batching.eval_batch_size, replicas, rank)
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def statistics_dataloader(self) -> DataLoader:
        """The training split in a fixed order, for counting statistics a model keeps
        (``seqbench.training.statistics``): no shuffling, so no seed changes the count."""
        return self._eval_loader("train")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _loader(self, split: EncodedSplit, batch_sampler: torch.utils.data.Sampler) -> DataLoader:
        # Its own generator: creating an iterator draws a worker base seed, and from torch's
        # global generator that draw would shift the dropout stream of a resumed run (a resume
        # creates the iterator at another point of the stream than an uninterrupted run).
        return DataLoader(
            SplitDataset(split),
            batch_sampler=batch_sampler,
            collate_fn=self._collate(),
            num_workers=self.batching.num_workers,
            pin_memory=self.batching.pin_memory,
            persistent_workers=self.batching.num_workers > 0,
            generator=torch.Generator().manual_seed(self.sampler_seed),
        )


class RawTextDataModule(SequenceDataModule):
    """A source of raw texts that are encoded here and cached (IMDB, labelled files): the
    encoding settings, their checks, and their part of the cache key."""

    def __init__(
        self,
        cache_dir: str,
        vocab_size: int = 5000,
        truncating: str = "pre",
        tokenizer: str = "word",
        subset: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_choice("truncating", truncating, SIDES)
        _check_choice("tokenizer", tokenizer, TOKENIZERS)
        self.cache_dir = Path(cache_dir)
        self.vocab_size = vocab_size
        self.truncating = truncating
        self.tokenizer = tokenizer
        self.subset = subset

    def encoding_settings(self) -> dict:
        """Every encoding setting that changes the encoded corpus (so belongs in its cache key)."""
        return {
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "truncating": self.truncating,
            "tokenizer": self.tokenizer,
            "subset": self.subset,
        }


class IMDBDataModule(RawTextDataModule):
    """IMDB reviews: download or local archive -> safe extraction -> cached encoded corpus."""

    def __init__(
        self,
        cache_dir: str,
        archive: str | None = None,
        url: str = IMDB_URL,
        known_hash: str = IMDB_MD5,
        **kwargs,
    ) -> None:
        super().__init__(cache_dir, **kwargs)
        self.archive = archive
        self.url = url
        self.known_hash = known_hash

    def prepare_data(self) -> None:
        """Download/extract once (rank 0 only under DDP); encoding happens in ``setup``."""
        locate(self.archive, self.cache_dir, self.url, self.known_hash)

    def load_corpus(self) -> EncodedCorpus:
        root, fingerprint = locate(self.archive, self.cache_dir, self.url, self.known_hash)
        settings = {
            "source": "imdb",
            "fingerprint": fingerprint,
            **self.encoding_settings(),
            "subset_seed": self.split_seed if self.subset else None,
        }

        def build() -> EncodedCorpus:
            raw = read_imdb(root, self.subset, seed=self.split_seed)
            return encode_corpus(
                raw, self.vocab_size, self.max_len, self.truncating, self.tokenizer
            )

        corpus = cached_corpus(self.cache_dir / "encoded", settings, build)
        corpus.meta["fingerprint"] = fingerprint
        return corpus


class SyntheticDataModule(SequenceDataModule):
    """The generated marker-order task (``seqbench.data.synthetic``); no download. Its config
    keys ``n_train``, ``n_test``, ``vocab_size``, ``min_len``, ``generator_seed`` (and the shared
    ``max_len``) are the ``SyntheticTask``'s settings, whose defaults live there."""

    def __init__(
        self,
        n_train: int = SyntheticTask.n_train,
        n_test: int = SyntheticTask.n_test,
        vocab_size: int = SyntheticTask.vocab_size,
        min_len: int = SyntheticTask.min_len,
        generator_seed: int = SyntheticTask.seed,
        **kwargs,
    ) -> None:
        kwargs.setdefault("max_len", SyntheticTask.max_len)
        super().__init__(**kwargs)
        self.task = SyntheticTask(
            n_train=n_train,
            n_test=n_test,
            vocab_size=vocab_size,
            min_len=min_len,
            max_len=self.max_len,
            seed=generator_seed,
        )

    def load_corpus(self) -> EncodedCorpus:
        return self.task.generate()
