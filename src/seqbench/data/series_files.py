"""Labelled numeric series from files: ``.ts`` and ``.arff`` (aeon's loaders), ``.npz``/``.npy``
(NumPy), Parquet and JSON Lines with list columns (pyarrow). Everything comes back as one list of
``[channels, length_i]`` float64 arrays plus string labels, checked before anything is cached.

aeon is imported lazily, here only: ``import seqbench`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqbench.data.file_format import SHOWN, DataFileError

SERIES_FORMATS = ("ts", "arff", "npz", "npy", "parquet", "jsonl")
_EXTENSIONS = {".ts": "ts", ".arff": "arff", ".npz": "npz", ".npy": "npy"}
_EXTENSIONS |= {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class SeriesDataError(DataFileError):
    """A numeric data set a user can fix (file, dataset name, shapes, labels); says where."""


@dataclass
class SeriesTable:
    """Series of one file: ``series[i]`` is ``[channels, length_i]`` float64 (NaN = missing)."""

    series: list[np.ndarray]
    labels: np.ndarray  # str, one per series
    path: Path
    label_column: str = "label"

    def __len__(self) -> int:
        return len(self.series)

    @property
    def channels(self) -> int:
        return int(self.series[0].shape[0]) if self.series else 0


def series_format(path: Path, fmt: str | None = None) -> str:
    """The format named by ``fmt`` or by the file's extension."""
    if fmt:
        if fmt not in SERIES_FORMATS:
            raise SeriesDataError(
                f"data.format={fmt!r} is not valid; valid choices: {', '.join(SERIES_FORMATS)}"
            )
        return fmt
    ext = path.suffix.lower()
    if ext not in _EXTENSIONS:
        raise SeriesDataError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; name the "
            f"file {', '.join(_EXTENSIONS)} or set data.format to one of {', '.join(SERIES_FORMATS)}"
        )
    return _EXTENSIONS[ext]


def as_numeric(values: object, where: str) -> np.ndarray:
    """``values`` as a float64 array, or an error naming ``where`` (text, objects, ragged)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SeriesDataError(
            f"{where}: not a numeric array of equal-length channels ({exc})"
        ) from None
    return array


def _split_samples(X: object, path: Path) -> list[np.ndarray]:
    """``[n, channels, length]``, ``[n, length]`` or a sequence of ``[channels, length_i]``."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.dtype.kind not in "fiub":
            raise SeriesDataError(f"{path}: X holds {X.dtype} values, not numbers")
        if X.ndim == 2:
            X = X[:, None, :]
        if X.ndim != 3:
            raise SeriesDataError(
                f"{path}: X has shape {X.shape}; expected [n, channels, length] or [n, length]"
            )
        return [np.asarray(x, dtype=np.float64) for x in X]
    out = []
    for i, x in enumerate(X):  # an object array or a list of per-series arrays
        arr = as_numeric(x, f"{path}: series {i + 1}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise SeriesDataError(
                f"{path}: series {i + 1} has shape {arr.shape}; expected [channels, length]"
            )
        out.append(arr)
    return out


def _read_numpy(path: Path, fmt: str) -> tuple[list[np.ndarray], np.ndarray]:
    if fmt == "npy":
        raise SeriesDataError(
            f"{path}: a .npy file holds one array and no labels; for training save X and y in a "
            "single .npz (numpy.savez(path, X=X, y=y)); .npy is for seqbench-predict"
        )
    try:
        with np.load(path, allow_pickle=True) as npz:
            missing = [k for k in ("X", "y") if k not in npz.files]
            if missing:
                raise SeriesDataError(
                    f"{path}: the .npz has no {' or '.join(missing)} array (it holds "
                    f"{npz.files}); save it as numpy.savez(path, X=X, y=y)"
                )
            X, y = npz["X"], npz["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, SeriesDataError):
            raise
        raise SeriesDataError(f"{path}: not a readable .npz file ({exc})") from None
    return _split_samples(X, path), np.asarray(y)


def _read_aeon(path: Path, fmt: str) -> tuple[list[np.ndarray], np.ndarray]:
    from aeon.datasets import load_from_arff_file, load_from_ts_file

    loader = load_from_ts_file if fmt == "ts" else load_from_arff_file
    try:
        X, y = loader(str(path))
    except Exception as exc:  # aeon raises IOError/ValueError/TsFileParseException on bad files
        raise SeriesDataError(
            f"{path}: aeon could not read it as a .{fmt} file ({type(exc).__name__}: {exc})"
        ) from None
    if y is None or len(y) == 0:
        raise SeriesDataError(f"{path}: the file has no class labels (@classLabel false?)")
    return _split_samples(X, path), np.asarray(y)


def _read_table(
    path: Path, fmt: str, label_column: str, series_columns: list[str] | None
) -> tuple[list[np.ndarray], np.ndarray]:
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.json as pj

            table = pj.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SeriesDataError(f"{path}: not a readable {fmt} file ({exc})") from None
    if label_column not in table.column_names:
        raise SeriesDataError(
            f"{path}: no label column {label_column!r}; columns: {table.column_names} "
            "(set data.label_column)"
        )
    columns = series_columns or [
        c for c in table.column_names if c != label_column and pa.types.is_list(table[c].type)
    ]
    absent = [c for c in columns if c not in table.column_names]
    if absent or not columns:
        raise SeriesDataError(
            f"{path}: series column(s) {absent or '(none found)'}; expected one list column per "
            f"channel (or one column of lists of lists); columns: {table.column_names}"
        )
    data = {c: table[c].to_pylist() for c in columns}
    series = []
    for i in range(table.num_rows):
        rows = [data[c][i] for c in columns]
        if len(columns) == 1 and rows[0] and isinstance(rows[0][0], list):
            rows = rows[0]  # one column holding [channels][length]
        lengths = {len(r) if isinstance(r, list) else -1 for r in rows}
        if len(lengths) != 1 or -1 in lengths:
            raise SeriesDataError(
                f"{path}: row {i + 1} has channels of different lengths or a non-list "
                f"({sorted(lengths)}); every channel of a series needs one value per step"
            )
        series.append(
            as_numeric(
                [[np.nan if v is None else v for v in r] for r in rows], f"{path}: row {i + 1}"
            )
        )
    return series, np.asarray(table[label_column].to_pylist(), dtype=object)


def _label_strings(y: np.ndarray, path: Path, label_column: str) -> np.ndarray:
    """Labels as strings; integers written without a decimal part (``3.0`` -> ``"3"``)."""
    missing = [
        i for i, v in enumerate(y.tolist()) if v is None or (isinstance(v, float) and np.isnan(v))
    ]
    if missing:
        rows = ", ".join(str(i + 1) for i in missing[:SHOWN])
        raise SeriesDataError(f"{path}: {label_column} is missing for series {rows}")
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    return np.asarray([str(v) for v in y.tolist()], dtype=object)


def read_series(
    path: Path,
    fmt: str | None = None,
    label_column: str = "label",
    series_columns: list[str] | None = None,
) -> SeriesTable:
    """Read one labelled series file; every series ``[channels, length]`` with the same channels."""
    kind = series_format(path, fmt)
    if kind in ("ts", "arff"):
        series, y = _read_aeon(path, kind)
    elif kind in ("npz", "npy"):
        series, y = _read_numpy(path, kind)
    else:
        series, y = _read_table(path, kind, label_column, series_columns)
    if len(series) != len(y):
        raise SeriesDataError(f"{path}: {len(series)} series but {len(y)} labels")
    if not series:
        raise SeriesDataError(f"{path}: holds no series")
    channels = {s.shape[0] for s in series}
    if len(channels) > 1:
        first = next(i for i, s in enumerate(series) if s.shape[0] != series[0].shape[0])
        raise SeriesDataError(
            f"{path}: series have different channel counts {sorted(channels)} (series 1: "
            f"{series[0].shape[0]}, series {first + 1}: {series[first].shape[0]})"
        )
    return SeriesTable(
        series, _label_strings(np.asarray(y), path, label_column), path, label_column
    )
