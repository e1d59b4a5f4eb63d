"""Numeric series as the network sees them: lengths, missing values, normalisation, storage.

* **Lengths.** Trailing steps that are missing in *every* channel end a shorter series (the
  UCR archive stores unequal-length data padded with NaN); each series keeps its own length
  and batches pad after it with a length mask, so padding never changes a score.
* **Missing values** inside a series are *imputed*, not masked: linear interpolation along
  time within each channel, the nearest observed value before the first / after the last
  observation, and 0 (the mean after normalisation) for a channel with no observation.
  A series with no observed value at all is an error.
* **Normalisation** (``data.normalize``): ``series`` z-normalises each channel of each series
  by its own mean and standard deviation (the UCR convention); ``channel`` uses each channel's
  mean and standard deviation over the *training* split (saved with the model for scoring);
  ``none`` leaves the values as they are. Statistics ignore missing values.

Series are stored as ``EncodedSplit`` with float32 ``tokens`` of shape ``[steps, channels]``
(all series one after another), so splitting, caching and batching are the text path's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from seqbench.data.corpus import EncodedSplit
from seqbench.data.file_format import SHOWN
from seqbench.data.series_files import SeriesDataError, SeriesTable

NORMALIZATIONS = ("series", "channel", "none")
_EPS = 1e-8


def trim(x: np.ndarray) -> np.ndarray:
    """``[channels, length]`` without the trailing steps missing in every channel."""
    observed = ~np.isnan(x).all(axis=0)
    last = np.flatnonzero(observed)
    return x[:, : last[-1] + 1] if len(last) else x[:, :0]


def check_series(table: SeriesTable, role: str) -> list[np.ndarray]:
    """The table's series trimmed; an error naming the empty or all-missing ones."""
    trimmed = [trim(np.asarray(s, dtype=np.float64)) for s in table.series]
    empty = [i for i, s in enumerate(trimmed) if s.shape[1] == 0]
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:SHOWN])
        more = f" and {len(empty) - SHOWN} more" if len(empty) > SHOWN else ""
        raise SeriesDataError(
            f"data.{role} {table.path}: series {rows}{more} (counting from 1) are empty or "
            "missing (NaN) at every step; remove them or fill in values"
        )
    infinite = [i for i, s in enumerate(trimmed) if np.isinf(s).any()]
    if infinite:
        rows = ", ".join(str(i + 1) for i in infinite[:SHOWN])
        raise SeriesDataError(f"data.{role} {table.path}: series {rows} hold infinite values")
    return trimmed


def fill_missing(x: np.ndarray) -> np.ndarray:
    """Impute NaNs channel by channel: linear in time, nearest value at the ends, 0 if none."""
    missing = np.isnan(x)
    if not missing.any():
        return x
    x = x.copy()
    steps = np.arange(x.shape[1])
    for c in np.flatnonzero(missing.any(axis=1)):
        seen = ~missing[c]
        x[c] = np.interp(steps, steps[seen], x[c, seen]) if seen.any() else 0.0
    return x


class Normalizer:
    """``data.normalize``: fitted on the training series, applied to every split and at scoring."""

    def __init__(
        self, kind: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        if kind not in NORMALIZATIONS:
            raise ValueError(
                f"data.normalize={kind!r} is not valid; valid choices: {', '.join(NORMALIZATIONS)}"
            )
        self.kind = kind
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, series: Sequence[np.ndarray]) -> Normalizer:
        if self.kind == "channel":
            steps = np.concatenate([s for s in series], axis=1)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a channel with no value
                mean, std = np.nanmean(steps, axis=1), np.nanstd(steps, axis=1)
            self.mean = np.nan_to_num(mean)
            self.std = np.where(np.isfinite(std) & (std > _EPS), std, 1.0)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return x
        if self.kind == "channel":
            if self.mean is None or self.std is None:
                raise ValueError("Normalizer('channel') used before fit")
            return (x - self.mean[:, None]) / self.std[:, None]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a channel with no value
            mean = np.nanmean(x, axis=1, keepdims=True)
            std = np.nanstd(x, axis=1, keepdims=True)
        mean = np.nan_to_num(mean)
        std = np.where(np.isfinite(std) & (std > _EPS), std, 1.0)
        return (x - mean) / std

    def state(self) -> dict:
        """What scoring needs to normalise exactly as training did (JSON-ready)."""
        return {
            "kind": self.kind,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }


def prepare(x: np.ndarray, normalizer: Normalizer) -> np.ndarray:
    """One trimmed ``[channels, length]`` series -> ``[length, channels]`` float32, ready to batch."""
    return fill_missing(normalizer(x)).T.astype(np.float32)


def to_split(
    series: Sequence[np.ndarray], labels: np.ndarray, normalizer: Normalizer
) -> EncodedSplit:
    """Prepared series stored flat: rows ``offsets[i]:offsets[i+1]`` of ``tokens`` are series i."""
    prepared = [prepare(s, normalizer) for s in series]
    lengths = np.fromiter((len(p) for p in prepared), dtype=np.int64, count=len(prepared))
    offsets = np.zeros(len(prepared) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    channels = prepared[0].shape[1] if prepared else 0
    tokens = np.concatenate(prepared) if prepared else np.zeros((0, channels), np.float32)
    return EncodedSplit(tokens, offsets, np.asarray(labels, dtype=np.int64))
