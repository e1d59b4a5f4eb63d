"""data=text_files: reading every format, labels, the cache, and each
kind of bad input failing with a message that says where, before anything is cached or tracked."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from helpers import make_config
from seqbench.config.paths import file_stem
from seqbench.data.file_format import DataFileError
from seqbench.data.file_reading import read_labelled
from seqbench.data.labels import class_order
from seqbench.data.text_files import TextFilesDataModule
from seqbench.train import train
from text_data import make_frame, write


def _module(tmp_path: Path, train_file: Path, **kw) -> TextFilesDataModule:
    kw.setdefault("vocab_size", 50)
    kw.setdefault("max_len", 30)
    return TextFilesDataModule(train=str(train_file), cache_dir=str(tmp_path / "cache"), **kw)


# ---------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize(
    "name", ["t.csv", "t.tsv", "t.jsonl", "t.ndjson", "t.parquet", "t.csv.gz", "t.jsonl.gz"]
)
def test_every_format_reads_the_same_rows(tmp_path, name):
    frame = make_frame(40, 3)
    table = read_labelled(write(frame, tmp_path / name), "train")
    assert table.texts == frame["text"].tolist()
    assert table.labels.tolist() == frame["label"].tolist()


def test_quoted_delimiters_and_newlines_survive(tmp_path):
    frame = pd.DataFrame({"text": ['one, two\nthree "quoted"', "plain"], "label": ["a,b", "c\td"]})
    for name in ("q.csv", "q.tsv"):
        table = read_labelled(write(frame, tmp_path / name), "train")
        assert table.texts == frame["text"].tolist() and table.labels.tolist() == ["a,b", "c\td"]


def test_headerless_file_takes_column_indices(tmp_path):
    frame = make_frame(20, 2)[["label", "text"]]
    path = write(frame, tmp_path / "noheader.csv", header=False)
    table = read_labelled(path, "train", text_column=1, label_column="0", header=False)
    assert table.texts == frame["text"].tolist() and len(table) == 20


def test_explicit_format_and_encoding(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("text;label\n".replace(";", "\t").encode() + "café\tfr\n".encode("latin-1"))
    table = read_labelled(path, "train", fmt="tsv", encoding="latin-1")
    assert table.texts == ["café"] and table.labels.tolist() == ["fr"]


def test_integer_labels_sort_numerically_and_strings_alphabetically():
    assert class_order(["10", "9", "2"]) == ["2", "9", "10"]
    assert class_order(["spam", "ham", "Eggs"]) == ["Eggs", "ham", "spam"]


def test_integer_labels_in_jsonl_and_parquet_become_names(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [10, 2, 10]})
    for name in ("i.jsonl", "i.parquet", "i.csv"):
        table = read_labelled(write(frame, tmp_path / name), "train")
        assert table.labels.tolist() == ["10", "2", "10"], name


def test_file_stem_names_the_dataset():
    assert file_stem("/data/tickets.csv.gz") == "tickets" and file_stem("x.v2.tsv") == "x.v2"


# ---------------------------------------------------------------------------------------------
# The DataModule and its cache


def test_labels_splits_and_cache(tmp_path):
    path = write(make_frame(200, 5), tmp_path / "tickets.csv")
    dm = _module(tmp_path, path, test_fraction=0.25, val_fraction=0.2)
    dm.setup()
    assert dm.label_names == ["billing", "bug", "feature", "login", "spam"]
    assert dm.num_classes == 5 and dm.corpus.meta["cache_hit"] is False
    assert len(dm.splits["test"]) == 50 and len(dm.splits["val"]) == 30
    assert np.bincount(dm.splits["test"].labels).tolist() == [10] * 5  # stratified
    again = _module(tmp_path, path, test_fraction=0.25, val_fraction=0.2)
    again.setup()
    assert again.corpus.meta["cache_hit"] is True
    assert np.array_equal(again.splits["train"].tokens, dm.splits["train"].tokens)
    for change in ({"tokenizer": "char"}, {"max_len": 10}, {"subset": 50}, {"test_fraction": 0.5}):
        changed = _module(tmp_path, path, **change)
        changed.setup()
        assert changed.corpus.meta["cache_hit"] is False, change
    write(make_frame(200, 5, seed=1), path)  # same name, new content: new checksum, new key
    edited = _module(tmp_path, path, test_fraction=0.25, val_fraction=0.2)
    edited.setup()
    assert edited.corpus.meta["cache_hit"] is False
    assert edited.fingerprint != dm.fingerprint


def test_test_and_val_files_and_train_only_vocabulary(tmp_path):
    train_frame = make_frame(60, 2)
    test_frame = make_frame(20, 2, seed=3)
    test_frame.loc[0, "text"] = "zyzzyva " * 30  # frequent, but only in the test file
    paths = {
        "train": write(train_frame, tmp_path / "train.jsonl"),
        "test": write(test_frame, tmp_path / "test.parquet"),
        "val": write(make_frame(10, 2, seed=4), tmp_path / "val.tsv"),
    }
    dm = _module(
        tmp_path, paths["train"], test=str(paths["test"]), val=str(paths["val"]), vocab_size=1000
    )
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 60, "val": 10, "test": 20}
    assert "zyzzyva" not in dm.corpus.vocab.words and "invoice" in dm.corpus.vocab.words


def test_subset_is_stratified(tmp_path):
    dm = _module(tmp_path, write(make_frame(200, 2), tmp_path / "s.csv"), subset=40)
    dm.setup()
    assert len(dm.corpus.train) == 40 and np.bincount(dm.corpus.train.labels).tolist() == [20, 20]
    assert len(dm.corpus.test) == 40


def test_balanced_class_weights_come_from_the_training_split(tmp_path):
    frame = pd.concat([make_frame(90, 2).query("label == 'billing'"), make_frame(30, 2)])
    dm = _module(tmp_path, write(frame, tmp_path / "imbalanced.csv"), class_weights="balanced")
    dm.setup()
    counts = np.bincount(dm.splits["train"].labels)
    expected = len(dm.splits["train"]) / (2 * counts)
    assert dm.loss_weights().numpy() == pytest.approx(expected)
    assert counts[0] > counts[1] and expected[1] > expected[0]


# ---------------------------------------------------------------------------------------------
# Bad input: one test per kind, through `train()`, asserting the message, no cache, no run


def _fails_cleanly(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = make_config(tmp_path, ["data=text_files", "trainer.max_epochs=1", *overrides])
    with pytest.raises(DataFileError, match=message):
        train(cfg)
    cache = Path(cfg.data.cache_dir)
    assert not cache.exists() or not any(cache.rglob("*")), list(cache.rglob("*"))
    db = tmp_path / "outputs" / "mlflow" / "mlflow.db"
    if db.exists():
        client = MlflowClient(cfg.logger.tracking_uri)
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_bad_input_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    _fails_cleanly(tmp_path, [f"data.train={missing}"], f"data.train: {missing} does not exist")


def test_bad_input_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    _fails_cleanly(tmp_path, [f"data.train={path}"], f"data.train: {path} is empty")
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    _fails_cleanly(tmp_path, [f"data.train={header_only}"], "has a header but no data rows")


def test_bad_input_missing_column_lists_the_columns_found(tmp_path):
    path = write(make_frame(20, 2), tmp_path / "cols.csv")
    _fails_cleanly(
        tmp_path,
        [f"data.train={path}", "data.label_column=category"],
        re.escape(
            f"{path}: no column 'category' for data.label_column; columns found: 'text', 'label'"
        ),
    )


def test_bad_input_empty_label_values_name_row_and_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('text,label\nfine,a\n"two\nlines",b\nno label,\nok,a\n   ,  \n')
    _fails_cleanly(
        tmp_path,
        [f"data.train={path}"],
        re.escape(
            f"{path}: label column 'label' has 2 empty value(s): row 3 (line 5), row 5 (line 7)"
        ),
    )


def test_bad_input_single_class(tmp_path):
    path = write(make_frame(20, 5).assign(label="spam"), tmp_path / "one.jsonl")
    _fails_cleanly(
        tmp_path,
        [f"data.train={path}"],
        re.escape(f"{path}: label column 'label' has a single class ['spam']"),
    )


def test_bad_input_class_in_test_not_in_train(tmp_path):
    train_path = write(make_frame(30, 2), tmp_path / "train.csv")
    test_frame = make_frame(10, 2)
    test_frame.loc[3, "label"] = "refunds"
    test_path = write(test_frame, tmp_path / "test.csv")
    _fails_cleanly(
        tmp_path,
        [f"data.train={train_path}", f"data.test={test_path}"],
        re.escape(
            f"{test_path}: label column 'label' has class(es) ['refunds'] that the training data does "
            "not have (row 4); classes in training: ['billing', 'bug']"
        ),
    )


def test_bad_input_ragged_rows_name_the_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text('text,label\n"quoted, ok\nspanning",a\nfine,b\ntoo,many,fields\n')
    _fails_cleanly(
        tmp_path,
        [f"data.train={path}"],
        re.escape(f"{path}: line 5: ragged row with 3 field(s) where the header has 2"),
    )
    short = tmp_path / "short.tsv"
    short.write_text("text\tlabel\nfine\ta\nmissing\n")
    _fails_cleanly(
        tmp_path,
        [f"data.train={short}"],
        re.escape(f"{short}: line 3: ragged row with 1 field(s) where the header has 2"),
    )


def test_bad_input_invalid_encoding_names_the_line(tmp_path):
    path = tmp_path / "latin.csv.gz"
    path.write_bytes(gzip.compress("text,label\nok,a\ncafé,b\n".encode("latin-1")))
    _fails_cleanly(
        tmp_path,
        [f"data.train={path}"],
        re.escape(f"{path}: line 3 is not valid utf-8 (byte 4 of the line"),
    )


def test_bad_input_unknown_format_names_the_choices(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    _fails_cleanly(
        tmp_path, [f"data.train={path}"], "data.format to one of csv, tsv, jsonl, parquet"
    )
