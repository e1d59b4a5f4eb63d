"""The slow re-scans that say *where* a file is bad, run only after a fast pyarrow read failed:
Python's ``csv`` and ``json`` modules, line by line, find the undecodable line, the ragged row
or the line that is not a JSON object."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from seqbench.data.file_format import DELIMITERS, DataFileError, raw_bytes


def encoding_problem(path: Path, gz: bool, encoding: str) -> str | None:
    """Line and byte of the first undecodable line, or None when the whole file decodes."""
    for number, line in enumerate(raw_bytes(path, gz).split(b"\n"), start=1):
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


def csv_problem(path: Path, gz: bool, encoding: str, delimiter: str, header: bool) -> str | None:
    """The first record whose number of fields differs from the first record's, with its line."""
    text = raw_bytes(path, gz).decode(encoding)
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


def jsonl_problem(path: Path, gz: bool, encoding: str) -> str | None:
    for number, line in enumerate(raw_bytes(path, gz).decode(encoding).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"{path}: line {number} is not valid JSON: {exc.msg} at column {exc.colno}"
        if not isinstance(value, dict):
            return f"{path}: line {number} is not a JSON object: {line[:80]!r}"
    return None


def row_lines(path: Path, gz: bool, encoding: str, fmt: str, header: bool) -> list[int] | None:
    """1-based starting line of every data record (CSV/TSV/JSONL), for error messages."""
    if fmt == "parquet":
        return None
    text = raw_bytes(path, gz).decode(encoding, errors="replace")
    if fmt == "jsonl":
        return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[fmt])
    lines, start = [], 1
    for _ in reader:
        lines.append(start)
        start = reader.line_num + 1
    return lines[1:] if header else lines


def explain(
    file: Path, fmt: str, gz: bool, header: bool, encoding: str, exc: BaseException
) -> DataFileError:
    """Turn a failed fast read into a message with the line, found by a slower scan."""
    if isinstance(exc, (OSError, EOFError)) and gz:
        return DataFileError(f"{file}: not a readable gzip file ({exc})")
    if fmt != "parquet":
        problem = encoding_problem(file, gz, encoding)
        if problem is None and fmt in DELIMITERS:
            problem = csv_problem(file, gz, encoding, DELIMITERS[fmt], header)
        if problem is None and fmt == "jsonl":
            problem = jsonl_problem(file, gz, encoding)
        if problem is not None:
            return DataFileError(problem)
        if not raw_bytes(file, gz).strip():
            return DataFileError(f"{file} is empty")
    return DataFileError(f"{file}: could not read it as {fmt}{' (gzip)' if gz else ''}: {exc}")
