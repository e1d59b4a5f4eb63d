"""DataModules for numeric series: ``data=ucr`` (UCR/UEA archive by name) and ``data=series``
(a user's own files). Univariate or multivariate, equal or unequal length, missing values
imputed (``seqbench.data.series_prep`` says how). Batches are ``(values[B, T, C], lengths[B],
labels[B])``, padded after each series: the models read only each series' real steps, so a
series scores the same alone and beside a much longer one.

The data module tells the model what it gets (``input_kind = "numeric"``, ``channels``): the
training entry point then gives the network an input projection in place of its embedding
(``seqbench.models.inputs``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seqbench.data.corpus import (
    EncodedCorpus,
    cache_path,
    cached_corpus,
    stratified_split,
)
from seqbench.data.datamodule import SequenceDataModule
from seqbench.data.file_format import DataFileError, check_exists
from seqbench.data.labels import class_ids, class_order
from seqbench.data.series_files import SeriesDataError, SeriesTable, read_series
from seqbench.data.series_prep import Normalizer, check_series, to_split

log = logging.getLogger(__name__)
SERIES_CACHE_FORMAT = 1


class SeriesCollate:
    """``(values[L_i, C], label)`` pairs -> ``(values[B, T, C], lengths[B], labels[B])``,
    zero-padded after each series (``T`` the batch's longest)."""

    def __call__(
        self, items: Sequence[tuple[np.ndarray, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(seq) for seq, _ in items], dtype=torch.long)
        channels = items[0][0].shape[1]
        values = torch.zeros((len(items), int(lengths.max()), channels), dtype=torch.float32)
        for row, (seq, _) in enumerate(items):
            values[row, : len(seq)] = torch.from_numpy(np.ascontiguousarray(seq))
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        return values, lengths, labels


class SeriesDataModule(SequenceDataModule):
    """Numeric series from labelled train (and test) tables; subclasses say where they come from.

    ``normalize``: ``series`` | ``channel`` | ``none``. ``vocab_size`` exists only so that the
    models' ``${data.vocab_size}`` resolves; numeric data has no vocabulary (keep it null).
    """

    input_kind = "numeric"

    def __init__(
        self,
        cache_dir: str,
        normalize: str = "channel",
        vocab_size: int | None = None,
        input_kind: str = "numeric",
        **kwargs,
    ) -> None:
        kwargs.setdefault("padding", "post")
        super().__init__(**kwargs)
        if self.padding != "post":
            raise ValueError(
                "data.padding=pre is not available for numeric series: they are padded after "
                "each series and masked (data.padding=post)"
            )
        if input_kind != "numeric" or vocab_size is not None:
            raise ValueError("numeric series: keep data.input_kind=numeric, data.vocab_size=null")
        Normalizer(normalize)  # checks the choice now, before any data is read
        self.cache_dir = Path(cache_dir)
        self.normalize = normalize
        self.files: dict[str, str] = {}

    # -- what subclasses provide --------------------------------------------------------

    def sources(self) -> tuple[dict[str, Path], str]:
        """(role -> file, fingerprint of the data); cheap: no parsing."""
        raise NotImplementedError

    def read(self, paths: dict[str, Path]) -> dict[str, SeriesTable]:
        """role -> table, read and checked (the costly part, skipped on a cache hit)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Everything besides the data itself that changes the prepared corpus."""
        return {}

    # -- shared -----------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return int(self.corpus.meta.get("channels", 0)) if self.corpus else 0

    @property
    def normalizer_state(self) -> dict:
        return dict(self.corpus.meta.get("normalizer", {})) if self.corpus else {}

    def _collate(self) -> SeriesCollate:
        return SeriesCollate()

    def load_corpus(self) -> EncodedCorpus:
        paths, fingerprint = self.sources()
        self.files = {role: str(path) for role, path in paths.items()}
        settings = {
            "source": type(self).__name__,
            "format": SERIES_CACHE_FORMAT,
            "fingerprint": fingerprint,
            "normalize": self.normalize,
            "split_seed": self.split_seed,
            **self.settings(),
        }
        encoded_dir = self.cache_dir / "prepared"
        if cache_path(encoded_dir, settings).is_file():  # a hit reads no source file
            corpus = cached_corpus(encoded_dir, settings, lambda: self._build(self.read(paths)))
        else:  # read, check and prepare everything before the cache (or its folder) is touched
            built = self._build(self.read(paths))
            corpus = cached_corpus(encoded_dir, settings, lambda: built)
        corpus.meta["fingerprint"] = fingerprint
        return corpus

    def _holdout_test(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise SeriesDataError(f"data {self.name}: no test split")

    def _build(self, tables: dict[str, SeriesTable]) -> EncodedCorpus:
        train = tables["train"]
        classes = class_order(train.labels)
        if len(classes) < 2:
            raise SeriesDataError(
                f"{train.path}: one class only ({classes}); classification needs at least 2"
            )
        for role, table in tables.items():
            if table.channels != train.channels:
                raise SeriesDataError(
                    f"data.{role} {table.path} has {table.channels} channel(s) but data.train "
                    f"{train.path} has {train.channels}; every split needs the same channels"
                )
        try:
            ids = {role: class_ids(table, classes) for role, table in tables.items()}
        except DataFileError as exc:
            raise SeriesDataError(str(exc)) from None
        series = {role: check_series(table, role) for role, table in tables.items()}
        if "test" in tables:
            rows = {"train": np.arange(len(train)), "test": np.arange(len(tables["test"]))}
            source = {"train": "train", "test": "test"}
        else:
            held, rest = self._holdout_test(ids["train"])
            rows, source = {"train": rest, "test": held}, {"train": "train", "test": "train"}
        picked = {
            role: ([series[source[role]][i] for i in idx], ids[source[role]][idx])
            for role, idx in rows.items()
        }
        normalizer = Normalizer(self.normalize).fit(picked["train"][0])
        splits = {role: to_split(s, y, normalizer) for role, (s, y) in picked.items()}
        meta = {"channels": train.channels, "normalizer": normalizer.state()}
        lengths = splits["train"].lengths
        log.info(
            "%s: %d channel(s), training lengths %d..%d, classes %s",
            self.name,
            train.channels,
            lengths.min(),
            lengths.max(),
            classes,
        )
        return EncodedCorpus(splits["train"], splits["test"], classes, None, meta)


class UCRDataModule(SeriesDataModule):
    """``data=ucr data.name=<UCR/UEA name>``: the archive's own train/test split; validation is
    a stratified ``val_fraction`` of training (``seqbench.data.ucr`` finds or fetches the files)."""

    def __init__(
        self,
        cache_dir: str,
        archive: str | None = None,
        url: str | None = None,
        *,
        name: str,  # required here (the base's default "data" names no data set)
        **kwargs,
    ) -> None:
        super().__init__(cache_dir, name=name, **kwargs)
        self.archive = archive
        self.url = url

    def sources(self) -> tuple[dict[str, Path], str]:
        from seqbench.data.ucr import UCR_URL, locate

        train, test, fingerprint = locate(
            self.name, self.cache_dir / "archives", self.archive, self.url or UCR_URL
        )
        return {"train": train, "test": test}, fingerprint

    def prepare_data(self) -> None:
        """Download/extract once (rank 0 only under DDP)."""
        self.sources()

    def read(self, paths: dict[str, Path]) -> dict[str, SeriesTable]:
        return {role: read_series(path) for role, path in paths.items()}


class SeriesFilesDataModule(SeriesDataModule):
    """``data=series data.train=<file> [data.test=<file>]``: ``.ts``, ``.arff``, ``.npz``,
    Parquet or JSON Lines (``seqbench.data.series_files``). Without a test file a stratified
    ``test_fraction`` of the training file is held out."""

    def __init__(
        self,
        train: str,
        cache_dir: str,
        test: str | None = None,
        format: str | None = None,  # the config key users write (data.format)
        label_column: str = "label",
        series_columns: list[str] | None = None,
        test_fraction: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(cache_dir, **kwargs)
        if not train:
            raise SeriesDataError("data.train is required: data.train=/path/to/train.ts")
        if test is None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction={test_fraction} must be between 0 and 1")
        self.paths_given = {"train": train, "test": test}
        self.read_args = dict(
            fmt=format,
            label_column=label_column,
            series_columns=list(series_columns) if series_columns else None,
        )
        self.test_fraction = test_fraction

    def sources(self) -> tuple[dict[str, Path], str]:
        from seqbench.data.archive import file_sha256

        paths = {role: check_exists(p, role) for role, p in self.paths_given.items() if p}
        shas = {role: file_sha256(path) for role, path in paths.items()}
        blob = json.dumps(shas, sort_keys=True).encode()
        return paths, hashlib.sha256(blob).hexdigest()

    def settings(self) -> dict:
        test_fraction = None if self.paths_given["test"] else self.test_fraction
        return {**self.read_args, "test_fraction": test_fraction}

    def read(self, paths: dict[str, Path]) -> dict[str, SeriesTable]:
        return {role: read_series(path, **self.read_args) for role, path in paths.items()}

    def _holdout_test(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return stratified_split(labels, self.test_fraction, np.random.default_rng(self.split_seed))
