"""Labelled data files: which format a file is, whether it exists, its raw bytes, and the one
error type for everything a user can fix in a file (``DataFileError``)."""

from __future__ import annotations

import gzip
from pathlib import Path

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_EXTENSIONS |= {".parquet": "parquet", ".pq": "parquet"}
DELIMITERS = {"csv": ",", "tsv": "\t"}
SHOWN = 5  # how many offending rows an error lists


class DataFileError(ValueError):
    """A problem with a user's data file that the user can fix; the message says where."""


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


def raw_bytes(path: Path, gz: bool) -> bytes:
    return gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
