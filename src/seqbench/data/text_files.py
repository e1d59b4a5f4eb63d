"""Labelled text files (CSV, TSV, JSON Lines, Parquet; optionally gzip-compressed): reading,
validation, label mapping and a vectorised encoder with the same results as ``encode_corpus``.

Files are parsed by pyarrow (CSV/TSV with quoted delimiters and newlines, JSON Lines, Parquet),
never by a hand-written parser. Everything that can be wrong with a user's file is checked here,
before anything is cached or tracked, and reported as a ``DataFileError`` naming the file, the
row or line where known, and the column. The slow, line-by-line scans (Python's ``csv`` and
``json`` modules) only run after a fast read failed, to say *where* it failed.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from seqbench.data.archive import file_sha256
from seqbench.data.corpus import (
    EncodedCorpus,
    EncodedSplit,
    cache_key,
    cached_corpus,
    stratified_sample,
    stratified_split,
)
from seqbench.data.datamodule import SequenceDataModule, _check_choice
from seqbench.data.text import _BREAK, FIRST_WORD_INDEX, OOV, SIDES, START, TOKENIZERS, Vocabulary

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_EXTENSIONS |= {".parquet": "parquet", ".pq": "parquet"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}
_SHOWN = 5  # how many offending rows an error lists
_MAX_COLUMNS = 1000  # CSV columns read as text; any further ones are type-inferred


class DataFileError(ValueError):
    """A problem with a user's data file that the user can fix; the message says where."""


@dataclass
class LabelledTable:
    """The two columns seqbench needs from one file: texts and label names (strings)."""

    path: Path
    texts: list[str]
    labels: np.ndarray  # object array of label names (str)
    label_column: str = "label"

    def __len__(self) -> int:
        return len(self.texts)


def detect_format(path: str | Path, fmt: str | None = None) -> tuple[str, bool]:
    """(format, gzip-compressed) from ``fmt`` or the file's extension (``.csv.gz`` etc.)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if fmt:
        if fmt not in FORMATS:
            raise DataFileError(
                f"data.format={fmt!r} is not valid; valid choices: {', '.join(FORMATS)}"
            )
        return fmt, gz
    ext = suffixes[-2] if gz and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if ext not in _EXTENSIONS:
        raise DataFileError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; name the file "
            f"{', '.join(_EXTENSIONS)} (optionally + .gz) or set data.format to one of "
            f"{', '.join(FORMATS)}"
        )
    return _EXTENSIONS[ext], gz


def check_exists(path: str | Path, role: str) -> Path:
    """The file behind ``data.<role>``, or an error when it is missing or empty."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise DataFileError(f"data.{role}: {file} {what}")
    if file.stat().st_size == 0:
        raise DataFileError(f"data.{role}: {file} is empty (0 bytes)")
    return file


def _raw_bytes(path: Path, gz: bool) -> bytes:
    return gzip.decompress(path.read_bytes()) if gz else path.read_bytes()


def _column_key(column: str | int, header: bool) -> str | int:
    """Header-less files address columns by 0-based position; digits in a string count too."""
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit() and not header):
        return int(column)
    return str(column)


def _pick(table_columns: list[str], column: str | int, role: str, path: Path, which: str) -> str:
    """Resolve a configured column (name or index) to a column name of the table."""
    if isinstance(column, int):
        if 0 <= column < len(table_columns):
            return table_columns[column]
        raise DataFileError(
            f"{path}: data.{which}_column={column} is out of range: the file has "
            f"{len(table_columns)} column(s) (indices 0..{len(table_columns) - 1})"
        )
    if column in table_columns:
        return column
    hint = (
        " (header-less files take column indices: data.header=false data.text_column=0)"
        if all(re.fullmatch(r"f\d+", c) for c in table_columns)
        else ""
    )
    raise DataFileError(
        f"{path}: no column {column!r} for data.{which}_column; columns found: "
        f"{', '.join(map(repr, table_columns))}{hint}"
    )


def _encoding_problem(path: Path, gz: bool, encoding: str) -> str | None:
    """Line and byte of the first undecodable line, or None when the whole file decodes."""
    for number, line in enumerate(_raw_bytes(path, gz).split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as exc:
            return (
                f"{path}: line {number} is not valid {encoding} (byte {exc.start + 1} of the line: "
                f"{line[exc.start : exc.start + 4]!r}); set data.encoding to the file's encoding, "
                "e.g. data.encoding=latin-1"
            )
        except LookupError:
            return f"data.encoding={encoding!r} is not an encoding Python knows"
    return None


def _csv_problem(path: Path, gz: bool, encoding: str, delimiter: str, header: bool) -> str | None:
    """The first record whose number of fields differs from the first record's, with its line."""
    text = _raw_bytes(path, gz).decode(encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    expected = None
    start_line = 1
    for record in reader:
        if expected is None:
            expected = len(record)
        elif len(record) != expected and record:
            first = "the header" if header else "the first row"
            return (
                f"{path}: line {start_line}: ragged row with {len(record)} field(s) where "
                f"{first} has {expected}: {delimiter.join(record)[:80]!r} (quote fields that "
                "contain the delimiter)"
            )
        start_line = reader.line_num + 1
    return None


def _jsonl_problem(path: Path, gz: bool, encoding: str) -> str | None:
    for number, line in enumerate(_raw_bytes(path, gz).decode(encoding).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"{path}: line {number} is not valid JSON: {exc.msg} at column {exc.colno}"
        if not isinstance(value, dict):
            return f"{path}: line {number} is not a JSON object: {line[:80]!r}"
    return None


def _read_arrow(path: Path, fmt: str, gz: bool, header: bool, encoding: str) -> pa.Table:
    if fmt == "parquet":
        source = io.BytesIO(_raw_bytes(path, gz)) if gz else path
        return pq.read_table(source)
    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    if fmt == "jsonl":
        if encoding.replace("-", "").lower() not in ("utf8", "ascii"):
            stream = io.BytesIO(_raw_bytes(path, gz).decode(encoding).encode())
        return pa_json.read_json(stream)
    # Columns are named by position and read as text ("01" stays "01", a text "12" stays a
    # text); with a header, its first row then becomes the column names.
    table = pa_csv.read_csv(
        stream,
        read_options=pa_csv.ReadOptions(encoding=encoding, autogenerate_column_names=True),
        parse_options=pa_csv.ParseOptions(delimiter=_DELIMITERS[fmt], newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={f"f{i}": pa.string() for i in range(_MAX_COLUMNS)},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if header and table.num_rows:
        names = [str(table.column(i)[0]) for i in range(table.num_columns)]
        table = table.slice(1).rename_columns(names)
    return table


def label_names(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Label values as name strings: integers (also integral floats) as ``str(int)``; strings
    stripped of surrounding spaces; missing values as ``""`` (reported by the caller)."""
    column = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    kind = column.type
    series = column.to_pandas()
    if pa.types.is_floating(kind):
        finite = series.dropna()
        if len(finite) and (finite % 1 == 0).all():
            series = series.astype("Int64")
    names = series.astype(object).where(series.notna(), "")
    return np.asarray([str(v).strip() for v in names], dtype=object)


def _row_lines(path: Path, gz: bool, encoding: str, fmt: str, header: bool) -> list[int] | None:
    """1-based starting line of every data record (CSV/TSV/JSONL), for error messages."""
    if fmt == "parquet":
        return None
    text = _raw_bytes(path, gz).decode(encoding, errors="replace")
    if fmt == "jsonl":
        return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_DELIMITERS[fmt])
    lines, start = [], 1
    for _ in reader:
        lines.append(start)
        start = reader.line_num + 1
    return lines[1:] if header else lines


def read_labelled(
    path: str | Path,
    role: str,
    text_column: str | int = "text",
    label_column: str | int = "label",
    header: bool = True,
    fmt: str | None = None,
    encoding: str = "utf-8",
) -> LabelledTable:
    """Read the text and label columns of one file, or raise a ``DataFileError`` saying what is
    wrong and where (``role`` is the config key: ``train``, ``val`` or ``test``)."""
    file = check_exists(path, role)
    fmt, gz = detect_format(file, fmt)
    try:
        table = _read_arrow(file, fmt, gz, header, encoding)
    except (pa.ArrowInvalid, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        raise _explain(file, fmt, gz, header, encoding, exc) from exc
    if table.num_rows == 0:
        what = "has a header but no data rows" if header and table.num_columns else "is empty"
        raise DataFileError(f"data.{role}: {file} {what}")
    columns = list(table.column_names)
    text_name = _pick(columns, _column_key(text_column, header), role, file, "text")
    label_name = _pick(columns, _column_key(label_column, header), role, file, "label")
    labels = label_names(table.column(label_name))
    empty = np.flatnonzero(labels == "")
    if len(empty):
        lines = _row_lines(file, gz, encoding, fmt, header)
        where = ", ".join(
            f"row {i + 1}" + (f" (line {lines[i]})" if lines and i < len(lines) else "")
            for i in empty[:_SHOWN]
        )
        more = f" and {len(empty) - _SHOWN} more" if len(empty) > _SHOWN else ""
        raise DataFileError(
            f"{file}: label column {label_name!r} has {len(empty)} empty value(s): {where}{more}"
        )
    text = table.column(text_name)
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        text = text.cast(pa.string())
    texts = text.fill_null("").to_pylist()
    return LabelledTable(file, texts, labels, label_name)


def _explain(
    file: Path, fmt: str, gz: bool, header: bool, encoding: str, exc: BaseException
) -> DataFileError:
    """Turn a failed fast read into a message with the line, found by a slower scan."""
    if isinstance(exc, (OSError, EOFError)) and gz:
        return DataFileError(f"{file}: not a readable gzip file ({exc})")
    if fmt != "parquet":
        problem = _encoding_problem(file, gz, encoding)
        if problem is None and fmt in _DELIMITERS:
            problem = _csv_problem(file, gz, encoding, _DELIMITERS[fmt], header)
        if problem is None and fmt == "jsonl":
            problem = _jsonl_problem(file, gz, encoding)
        if problem is not None:
            return DataFileError(problem)
        if not _raw_bytes(file, gz).strip():
            return DataFileError(f"{file} is empty")
    return DataFileError(f"{file}: could not read it as {fmt}{' (gzip)' if gz else ''}: {exc}")


def class_order(names: Sequence[str] | np.ndarray) -> list[str]:
    """Stable class order: numeric when every label is an integer, else sorted as text."""
    unique = sorted(set(names))
    if all(re.fullmatch(r"[+-]?\d+", n) for n in unique):
        return sorted(unique, key=int)
    return unique


def class_ids(table: LabelledTable, classes: list[str]) -> np.ndarray:
    """Labels of ``table`` as ids into ``classes``; a label the training data lacks is an error."""
    index = {name: i for i, name in enumerate(classes)}
    ids = np.fromiter((index.get(n, -1) for n in table.labels), dtype=np.int64, count=len(table))
    unknown = np.flatnonzero(ids < 0)
    if len(unknown):
        missing = sorted(set(table.labels[unknown]))
        rows = ", ".join(f"row {i + 1}" for i in unknown[:_SHOWN])
        raise DataFileError(
            f"{table.path}: label column {table.label_column!r} has class(es) {missing} that the "
            f"training data does not have ({rows}); classes in training: {classes}"
        )
    return ids


# ---------------------------------------------------------------------------------------------
# Vectorised encoding: the same ids as ``encode_corpus`` (tested), built with one regex pass
# over all texts and pandas' hash factorisation instead of a Python loop per token.

_SEP = "\x00"  # separates documents in the joined text; not a word character, not \s
_WORD_OR_SEP = re.compile(r"(?:[^\W_]|')+|\x00")


def _normalise(texts: Sequence[str]) -> str:
    """All texts as one string, as ``tokenize`` prepares each: ``<br />`` removed, lowercased.

    str.lower is per character except for the Greek final sigma, whose context ends at the
    separator as it would at the end of each text, so joining first changes nothing."""
    return _BREAK.sub(" ", _SEP.join(texts) + _SEP).lower()


def _token_codes(
    texts: Sequence[str], tokenizer: str, chunk: int = 50_000
) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes, uniques, separator code): the token stream (documents each ending in the
    separator) as int32 codes into ``uniques``, numbered in order of first appearance.

    Works through ``chunk`` documents at a time (one regex pass and one pandas factorisation
    each), so only one chunk's tokens exist as Python strings at once: this bounds the peak
    memory of a million-row file (docs/benchmarks.md)."""
    index: dict[str, int] = {}  # token -> code, in order of first appearance
    parts = []
    for first in range(0, len(texts), chunk):
        joined = _normalise(texts[first : first + chunk])
        if tokenizer == "word":
            stream: np.ndarray = np.asarray(_WORD_OR_SEP.findall(joined), dtype=object)
        else:
            stream = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        del joined
        local, found = pd.factorize(stream)
        del stream
        tokens = (chr(c) for c in found) if tokenizer == "char" else iter(found)
        # (never ``found == _SEP``: numpy turns "\x00" into "" when it makes an array scalar)
        to_global = np.fromiter(
            (index.setdefault(t, len(index)) for t in tokens), dtype=np.int32, count=len(found)
        )
        parts.append(to_global[local])
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    uniques = np.empty(len(index), dtype=object)
    uniques[:] = list(index)
    return codes, uniques, index.get(_SEP, -1)


def _split_from_stream(
    ids: np.ndarray, is_sep: np.ndarray, labels: np.ndarray, max_len: int, truncating: str
) -> EncodedSplit:
    """Documents ``[START, ids...]`` cut to ``max_len`` (``pre`` keeps the end), stored flat.

    Works in place on int32 and one byte per token (a mask of the cut ranges), never on int64
    index arrays the size of the corpus: character-level encoding of a million rows is over a
    hundred million tokens."""
    # "a b SEP c SEP" -> "SEP a b SEP c" with SEP as START: every document starts with START.
    stream = np.empty(len(ids), dtype=np.int32)
    if len(ids):
        stream[0] = START
        stream[1:] = ids[:-1]
        stream[1:][is_sep[:-1]] = START
    first = np.concatenate([[True], is_sep[:-1]]) if len(ids) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, len(stream)))
    keep = np.minimum(lengths, max_len)
    offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=offsets[1:])
    cut = np.flatnonzero(keep < lengths)
    if len(cut):  # drop the beginning (pre) or the end (post) of each long document
        begin = starts[cut] if truncating == "pre" else starts[cut] + keep[cut]
        end = begin + (lengths[cut] - keep[cut])
        delta = np.zeros(len(stream) + 1, dtype=np.int8)
        delta[begin] = 1
        delta[end] -= 1
        stream = stream[np.cumsum(delta[:-1], dtype=np.int8) == 0]
    return EncodedSplit(stream, offsets, np.asarray(labels, dtype=np.int64))


def encode_texts(
    train_texts: Sequence[str],
    train_labels: np.ndarray,
    others: dict[str, tuple[Sequence[str], np.ndarray]],
    vocab_size: int,
    max_len: int,
    truncating: str = "pre",
    tokenizer: str = "word",
    chunk: int = 50_000,
) -> tuple[Vocabulary, EncodedSplit, dict[str, EncodedSplit]]:
    """Vocabulary from ``train_texts`` only, then every split indexed and truncated; identical to
    ``encode_corpus`` (Keras IMDB index semantics), an order of magnitude faster on big files."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; valid choices: {', '.join(TOKENIZERS)}")
    if truncating not in SIDES:
        raise ValueError(f"unknown truncating side {truncating!r}; valid choices: {SIDES}")
    if vocab_size <= FIRST_WORD_INDEX:
        raise ValueError(f"vocab_size must be > {FIRST_WORD_INDEX} (it counts pad/start/oov)")
    for texts in (train_texts, *(t for t, _ in others.values())):
        if any(_SEP in t for t in texts):  # the separator must not occur inside a text
            raise DataFileError("texts contain NUL characters (\\x00); remove them")
    codes, uniques, sep_code = _token_codes(train_texts, tokenizer, chunk)
    counts = np.bincount(codes, minlength=len(uniques))
    if sep_code >= 0:
        counts[sep_code] = 0
    # most frequent first, ties by first appearance (what Counter.most_common gives)
    ranked = np.argsort(-counts, kind="stable")[: vocab_size - FIRST_WORD_INDEX]
    ranked = ranked[counts[ranked] > 0]
    vocab = Vocabulary(tuple(uniques[ranked]))
    code_to_id = np.full(len(uniques), OOV, dtype=np.int32)
    code_to_id[ranked] = np.arange(FIRST_WORD_INDEX, FIRST_WORD_INDEX + len(ranked))
    train = _split_from_stream(
        code_to_id[codes], codes == sep_code, train_labels, max_len, truncating
    )
    del codes
    lookup = vocab.index()
    encoded = {}
    for name, (texts, labels) in others.items():
        codes, uniques, sep_code = _token_codes(texts, tokenizer, chunk)
        unique_ids = np.fromiter(
            (lookup.get(u, OOV) for u in uniques), dtype=np.int32, count=len(uniques)
        )
        encoded[name] = _split_from_stream(
            unique_ids[codes], codes == sep_code, labels, max_len, truncating
        )
    return vocab, train, encoded


# ---------------------------------------------------------------------------------------------
# The DataModule


class TextFilesDataModule(SequenceDataModule):
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
        vocab_size: int = 5000,
        truncating: str = "pre",
        tokenizer: str = "word",
        subset: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_choice("truncating", truncating, SIDES)
        _check_choice("tokenizer", tokenizer, TOKENIZERS)
        if format is not None:
            _check_choice("format", format, FORMATS)
        if not train:
            raise DataFileError("data.train is required: data.train=/path/to/train.csv")
        if test is None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction={test_fraction} must be between 0 and 1")
        self.files = {"train": train, "test": test, "val": val}
        self.cache_dir = Path(cache_dir)
        self.read_args = dict(
            text_column=text_column,
            label_column=label_column,
            header=bool(header),
            fmt=format,
            encoding=encoding,
        )
        self.test_fraction = test_fraction
        self.vocab_size = vocab_size
        self.truncating = truncating
        self.tokenizer = tokenizer
        self.subset = subset

    def _settings(self, shas: dict[str, str]) -> dict:
        return {
            "source": "text_files",
            "files": shas,
            **self.read_args,
            "test_fraction": None if self.files["test"] else self.test_fraction,
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "truncating": self.truncating,
            "tokenizer": self.tokenizer,
            "subset": self.subset,
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
        if (encoded_dir / f"corpus-{cache_key(settings)}.npz").is_file():  # hit: no reading
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
        vocab, train, encoded = encode_texts(
            *raw["train"], others, self.vocab_size, self.max_len, self.truncating, self.tokenizer
        )
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
