"""``data=text_files``: any labelled text file(s) as a DataModule.

The steps live in their own modules: ``file_format`` (format, existence, ``DataFileError``),
``file_reading`` (pyarrow), ``file_diagnosis`` (the slow re-scans that say where a file is bad),
``labels`` (label order) and ``encoding`` (the vectorised encoder IMDB uses too). This module
keeps the class that ``conf/data/text_files.yaml`` names (its ``_target_`` is part of the job
key, so it stays at this import path).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from seqbench.data.archive import file_sha256
from seqbench.data.corpus import (
    EncodedCorpus,
    EncodedSplit,
    cache_path,
    cached_corpus,
    stratified_sample,
    stratified_split,
)
from seqbench.data.datamodule import RawTextDataModule, _check_choice
from seqbench.data.encoding import NulInText, encode_texts
from seqbench.data.file_format import FORMATS, DataFileError, check_exists, detect_format
from seqbench.data.file_reading import read_labelled
from seqbench.data.labels import class_ids, class_order


class TextFilesDataModule(RawTextDataModule):
    """Any labelled text file(s): ``train`` (required), ``test`` and ``val`` (optional).

    Without a test file a stratified ``test_fraction`` of the training file is held out; without
    a validation file ``val_fraction`` of the (remaining) training rows, as for IMDB. Labels are
    mapped to ids in ``class_order`` (class id = position in ``corpus.classes``). Files are
    checked completely before anything is cached: a cache hit skips reading them at all (the
    cache key holds their SHA-256 and every reading and encoding setting).
    """

    def __init__(
        self,
        train: str,
        cache_dir: str,
        test: str | None = None,
        val: str | None = None,
        text_column: str | int = "text",
        label_column: str | int = "label",
        header: bool = True,
        format: str | None = None,  # the config key users write (data.format)
        encoding: str = "utf-8",
        test_fraction: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(cache_dir, **kwargs)
        if format is not None:
            _check_choice("format", format, FORMATS)
        if not train:
            raise DataFileError("data.train is required: data.train=/path/to/train.csv")
        if test is None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction={test_fraction} must be between 0 and 1")
        self.files = {"train": train, "test": test, "val": val}
        self.read_args = dict(
            text_column=text_column,
            label_column=label_column,
            header=bool(header),
            fmt=format,
            encoding=encoding,
        )
        self.test_fraction = test_fraction

    def _settings(self, shas: dict[str, str]) -> dict:
        return {
            "source": "text_files",
            "files": shas,
            **self.read_args,
            "test_fraction": None if self.files["test"] else self.test_fraction,
            **self.encoding_settings(),
            "split_seed": self.split_seed,
        }

    def load_corpus(self) -> EncodedCorpus:
        paths = {role: check_exists(p, role) for role, p in self.files.items() if p}
        for path in paths.values():
            detect_format(path, self.read_args["fmt"])
        shas = {role: file_sha256(path) for role, path in paths.items()}
        settings = self._settings(shas)
        fingerprint = hashlib.sha256(json.dumps(shas, sort_keys=True).encode()).hexdigest()
        encoded_dir = self.cache_dir / "encoded"
        if cache_path(encoded_dir, settings).is_file():  # hit: no reading
            corpus = cached_corpus(encoded_dir, settings, lambda: self._encode(self._read(paths)))
        else:
            # read and check every file *before* the cache (or its folder) is touched
            raw = self._read(paths)
            corpus = cached_corpus(encoded_dir, settings, lambda: self._encode(raw))
        corpus.meta["fingerprint"] = fingerprint
        return corpus

    def _read(self, paths: dict[str, Path]) -> dict:
        tables = {role: read_labelled(path, role, **self.read_args) for role, path in paths.items()}
        train = tables["train"]
        classes = class_order(train.labels)
        if len(classes) < 2:
            raise DataFileError(
                f"{train.path}: label column {train.label_column!r} has a single class {classes}; "
                "classification needs "
                "at least 2"
            )
        ids = {role: class_ids(t, classes) for role, t in tables.items()}
        rng = np.random.default_rng(self.split_seed)
        rows = {"train": np.arange(len(train))}
        if "test" not in tables:
            held, rest = stratified_split(ids["train"], self.test_fraction, rng)
            rows = {"train": rest, "test": held}
        else:
            rows["test"] = np.arange(len(tables["test"]))
        if "val" in tables:
            rows["val"] = np.arange(len(tables["val"]))
        source = {"train": "train", "test": "test" if "test" in tables else "train", "val": "val"}
        if self.subset:
            for role in ("train", "test"):
                keep = stratified_sample(ids[source[role]][rows[role]], self.subset, rng)
                rows[role] = rows[role][keep]
        return {
            role: (
                [tables[source[role]].texts[i] for i in idx],
                ids[source[role]][idx],
            )
            for role, idx in rows.items()
        } | {"classes": classes}

    def _encode(self, raw: dict) -> EncodedCorpus:
        others = {role: raw[role] for role in ("test", "val") if role in raw}
        try:
            vocab, train, encoded = encode_texts(
                *raw["train"],
                others,
                self.vocab_size,
                self.max_len,
                self.truncating,
                self.tokenizer,
            )
        except NulInText as exc:
            raise DataFileError(str(exc)) from None
        meta = {}
        if "val" in encoded:  # stored after the training rows (the cache holds train and test)
            meta["val_rows"] = len(encoded["val"])
            train = _concat(train, encoded["val"])
        return EncodedCorpus(train, encoded["test"], raw["classes"], vocab, meta)


def _concat(a: EncodedSplit, b: EncodedSplit) -> EncodedSplit:
    return EncodedSplit(
        np.concatenate([a.tokens, b.tokens]),
        np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
        np.concatenate([a.labels, b.labels]),
    )
