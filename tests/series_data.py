"""Small numeric series data sets written in every format ``data=series`` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def toy_series(n: int = 12, channels: int = 2, seed: int = 0, ragged: bool = False):
    """``n`` series ``[channels, length]`` and labels ``a``/``b``/``c``: class = which channel
    carries a bump and where. ``ragged``: lengths 6..15 instead of 10."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        length = int(rng.integers(6, 16)) if ragged else 10
        x = rng.normal(0, 0.1, size=(channels, length)).round(3)
        k = i % 3
        x[k % channels, : length // 2] += 1.0 + k
        series.append(x)
        labels.append("abc"[k])
    return series, np.asarray(labels)


def write_ts(path: Path, series, labels) -> Path:
    equal = len({s.shape[1] for s in series}) == 1
    lines = [
        "@problemName toy",
        "@timeStamps false",
        "@missing true",
        f"@univariate {'true' if series[0].shape[0] == 1 else 'false'}",
        f"@dimensions {series[0].shape[0]}",
        f"@equalLength {'true' if equal else 'false'}",
        f"@classLabel true {' '.join(sorted(set(labels)))}",
        "@data",
    ]
    for x, y in zip(series, labels, strict=True):
        channels = [",".join("?" if np.isnan(v) else repr(float(v)) for v in c) for c in x]
        lines.append(":".join(channels) + f":{y}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_arff(path: Path, series, labels) -> Path:
    """Univariate ARFF (one attribute per step), as the UCR archive ships it."""
    length = series[0].shape[1]
    lines = ["@relation toy"]
    lines += [f"@attribute t{i} numeric" for i in range(length)]
    lines += [f"@attribute target {{{','.join(sorted(set(labels)))}}}", "@data"]
    for x, y in zip(series, labels, strict=True):
        lines.append(",".join(repr(float(v)) for v in x[0]) + f",{y}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_npz(path: Path, series, labels, ragged: bool = False) -> Path:
    if ragged:
        X = np.empty(len(series), dtype=object)
        for i, s in enumerate(series):
            X[i] = s
    else:
        X = np.stack(series)
    np.savez(path, X=X, y=labels)
    return path


def write_table(path: Path, series, labels) -> Path:
    """Parquet or JSON Lines (by suffix): one list column per channel plus ``label``."""
    import pandas as pd

    frame = pd.DataFrame(
        {f"c{c}": [s[c].tolist() for s in series] for c in range(series[0].shape[0])}
    )
    frame["label"] = labels
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path
