"""Reading the text and label columns of a labelled file with pyarrow (CSV/TSV with quoted
delimiters and newlines, JSON Lines, Parquet; optionally gzip-compressed), never with a
hand-written parser. Everything that can be wrong is reported as a ``DataFileError`` naming the
file, the row or line where known, and the column, before anything is cached or tracked."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from seqbench.data.file_diagnosis import explain, row_lines
from seqbench.data.file_format import (
    DELIMITERS,
    SHOWN,
    DataFileError,
    check_exists,
    detect_format,
    raw_bytes,
)

_MAX_COLUMNS = 1000  # CSV columns read as text; any further ones are type-inferred


@dataclass
class LabelledTable:
    """The two columns seqbench needs from one file: texts and label names (strings)."""

    path: Path
    texts: list[str]
    labels: np.ndarray  # object array of label names (str)
    label_column: str = "label"

    def __len__(self) -> int:
        return len(self.texts)


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


def _read_arrow(path: Path, fmt: str, gz: bool, header: bool, encoding: str) -> pa.Table:
    if fmt == "parquet":
        source = io.BytesIO(raw_bytes(path, gz)) if gz else path
        return pq.read_table(source)
    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    if fmt == "jsonl":
        if encoding.replace("-", "").lower() not in ("utf8", "ascii"):
            stream = io.BytesIO(raw_bytes(path, gz).decode(encoding).encode())
        return pa_json.read_json(stream)
    # Columns are named by position and read as text ("01" stays "01", a text "12" stays a
    # text); with a header, its first row then becomes the column names.
    table = pa_csv.read_csv(
        stream,
        read_options=pa_csv.ReadOptions(encoding=encoding, autogenerate_column_names=True),
        parse_options=pa_csv.ParseOptions(delimiter=DELIMITERS[fmt], newlines_in_values=True),
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
        raise explain(file, fmt, gz, header, encoding, exc) from exc
    if table.num_rows == 0:
        what = "has a header but no data rows" if header and table.num_columns else "is empty"
        raise DataFileError(f"data.{role}: {file} {what}")
    columns = list(table.column_names)
    text_name = _pick(columns, _column_key(text_column, header), role, file, "text")
    label_name = _pick(columns, _column_key(label_column, header), role, file, "label")
    labels = label_names(table.column(label_name))
    empty = np.flatnonzero(labels == "")
    if len(empty):
        lines = row_lines(file, gz, encoding, fmt, header)
        where = ", ".join(
            f"row {i + 1}" + (f" (line {lines[i]})" if lines and i < len(lines) else "")
            for i in empty[:SHOWN]
        )
        more = f" and {len(empty) - SHOWN} more" if len(empty) > SHOWN else ""
        raise DataFileError(
            f"{file}: label column {label_name!r} has {len(empty)} empty value(s): {where}{more}"
        )
    text = table.column(text_name)
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        text = text.cast(pa.string())
    texts = text.fill_null("").to_pylist()
    return LabelledTable(file, texts, labels, label_name)
