"""Scoring numeric series with a trained network, and the MLflow model numeric runs log.

The bundle is the text model's (``seqbench.serving.inference.save_bundle``: ``weights.pt``,
``net.yaml``, ``preprocessing.json``), with numeric preprocessing: channel count, the fitted
normalisation (``seqbench.data.series_prep.Normalizer``) and label names. A series is trimmed,
normalised and imputed exactly as training did, and batches are padded after each series, so
a score never depends on the other series in its batch. The pyfunc model
(``seqbench.serving.mlflow_model.SeqbenchSeriesClassifier``) accepts JSON arrays:
a list of series (each ``[channels][length]``, or ``[length]`` for one channel), an array
``[n, channels, length]``, ``{"series": [...]}`` or a DataFrame with a ``series`` column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqbench.data.series_prep import Normalizer, fill_missing, trim
from seqbench.serving.inference import NET_CONFIG, PREPROCESSING, WEIGHTS
from seqbench.serving.schema import LABEL_COLUMN, PROB_PREFIX, InputError

SERIES_COLUMN, STEPS_COLUMN = "series", "steps"


@dataclass(frozen=True)
class NumericPreprocessing:
    """How training prepared numeric series; saved beside the weights."""

    channels: int
    labels: list[str]
    normalizer: dict = field(default_factory=lambda: {"kind": "none"})
    input_kind: str = "numeric"
    format: int = 1

    @classmethod
    def from_datamodule(cls, datamodule: Any) -> NumericPreprocessing:
        return cls(
            channels=int(datamodule.channels),
            labels=list(datamodule.label_names),
            normalizer=dict(datamodule.normalizer_state),
        )


def _one_series(value: Any, where: str) -> np.ndarray:
    try:
        x = np.asarray(
            [[np.nan if v is None else v for v in c] for c in value]
            if len(value) and isinstance(value[0], (list, tuple))
            else [np.nan if v is None else v for v in value],
            dtype=np.float64,
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: not numbers in equal-length channels ({exc})") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InputError(f"{where}: expected [channels][length], got shape {x.shape}")
    return x


def series_from_input(model_input: Any) -> list[np.ndarray]:
    """``[channels, length]`` float arrays from what MLflow or a caller hands ``predict``."""
    if isinstance(model_input, pd.DataFrame):
        column = SERIES_COLUMN if SERIES_COLUMN in model_input.columns else None
        if column is None and model_input.shape[1] != 1:
            raise InputError(
                f"expected a column {SERIES_COLUMN!r}, got {list(model_input.columns)}"
            )
        values = model_input[column] if column else model_input.iloc[:, 0]
        return [_one_series(_listify(v), f"row {i}") for i, v in enumerate(values)]
    if isinstance(model_input, dict):
        if set(model_input) != {SERIES_COLUMN}:
            raise InputError(f"expected {{{SERIES_COLUMN!r}: [...]}}, got keys {list(model_input)}")
        return series_from_input(model_input[SERIES_COLUMN])
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim == 2:  # [n, length]: univariate
            model_input = model_input[:, None, :]
        if model_input.ndim != 3:
            raise InputError(f"expected [n, channels, length], got shape {model_input.shape}")
        return [np.asarray(x, dtype=np.float64) for x in model_input]
    if isinstance(model_input, (list, tuple, np.ndarray, pd.Series)):
        return [_one_series(_listify(v), f"series {i}") for i, v in enumerate(model_input)]
    raise InputError(f"expected numeric series, got {type(model_input).__name__}")


def _listify(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_listify(v) for v in value] if value.dtype == object else value.tolist()
    return value


class NumericPredictor:
    """A network and its numeric preprocessing: series -> label names and probabilities."""

    def __init__(self, net: nn.Module, prep: NumericPreprocessing, device: str = "cpu") -> None:
        self.prep = prep
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        state = prep.normalizer
        self.normalizer = Normalizer(state.get("kind", "none"), state.get("mean"), state.get("std"))

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> NumericPredictor:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        folder = Path(folder)
        prep = NumericPreprocessing(**json.loads((folder / PREPROCESSING).read_text()))
        net = instantiate(OmegaConf.load(folder / NET_CONFIG))
        net.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
        return cls(net, prep, device)

    @property
    def labels(self) -> list[str]:
        return list(self.prep.labels)

    def prepare(self, x: np.ndarray, where: str) -> np.ndarray:
        if x.shape[0] != self.prep.channels:
            raise InputError(
                f"{where}: {x.shape[0]} channel(s), the model was trained on {self.prep.channels}"
            )
        x = trim(x)
        if x.shape[1] == 0:
            raise InputError(f"{where}: empty, or missing at every step")
        return fill_missing(self.normalizer(x)).T.astype(np.float32)

    @torch.inference_mode()
    def predict(self, series: Sequence[np.ndarray], batch_size: int = 256) -> pd.DataFrame:
        """One row per series: ``label``, ``prob_<label>`` per class, ``steps`` (its length)."""
        prepared = [
            self.prepare(np.asarray(x, np.float64), f"series {i}") for i, x in enumerate(series)
        ]
        n_classes = len(self.prep.labels)
        probs = np.zeros((len(prepared), n_classes))
        lengths = np.array([len(p) for p in prepared], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            width = int(lengths[index].max())
            values = torch.zeros((len(index), width, self.prep.channels))
            for row, i in enumerate(index):
                values[row, : lengths[i]] = torch.from_numpy(prepared[i])
            logits = self.net(values.to(self.device), torch.from_numpy(lengths[index])).double()
            if n_classes == 2:
                positive = torch.sigmoid(logits).cpu().numpy()
                probs[index, 1], probs[index, 0] = positive, 1.0 - positive
            else:
                probs[index] = torch.softmax(logits, dim=-1).cpu().numpy()
        frame = pd.DataFrame(probs, columns=[f"{PROB_PREFIX}{label}" for label in self.labels])
        names = np.asarray(self.labels, dtype=object)
        frame.insert(0, LABEL_COLUMN, names[probs.argmax(axis=1)] if len(prepared) else [])
        frame[STEPS_COLUMN] = lengths
        return frame


def read_series_input(path: str, stdin_text: str | None = None) -> list[np.ndarray]:
    """Series to score from ``.npy`` (``[n, channels, length]`` or ``[n, length]``), ``.npz``
    (its ``X``), ``.ts``/``.arff`` (aeon), or JSON arrays (a ``.json`` file, or ``-``: stdin)."""
    if path == "-" or path.endswith(".json"):
        text = stdin_text if path == "-" else Path(path).read_text()
        try:
            return series_from_input(json.loads(text or ""))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg})") from None
    if path.endswith((".ts", ".arff")):
        from seqbench.data.series_files import SeriesDataError, read_series

        try:
            return read_series(Path(path)).series
        except SeriesDataError as exc:
            raise InputError(str(exc)) from None
    try:
        loaded = np.load(path, allow_pickle=path.endswith(".npz"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "X" not in loaded.files:
                raise InputError(f"{path}: no X array (it holds {loaded.files})")
            loaded = loaded["X"]
    return series_from_input(loaded)
