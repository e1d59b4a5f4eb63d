"""docs/time-series.md's bad-input table, one test per row: ``seqbench-train`` (the real Hydra
entry point, in this process) exits with status 2 and one clear message, and no MLflow run and
no data cache file exist afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import run_main
from series_data import toy_series, write_npz

QUIET = [
    "trainer.max_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.enable_model_summary=false",
]


def _run(root: Path, args: list[str], monkeypatch, capfd) -> tuple[int, str]:
    return run_main(root, [*args, *QUIET], monkeypatch, capfd)


def _nothing_written(root: Path) -> None:
    db = root / "outputs" / "mlflow" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        experiments = client.search_experiments()
        assert client.search_runs([e.experiment_id for e in experiments]) == [], "an MLflow run"
    data = root / "outputs" / "data"
    cached = [p for p in data.rglob("*") if p.is_file()] if data.exists() else []
    assert cached == [], f"cache files written: {cached}"


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _object_array(series: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(series), dtype=object)
    for i, s in enumerate(series):
        out[i] = s
    return out


def _case(name: str, files: Path) -> tuple[list[str], list[str]]:
    """(command line, expected message parts) of one row of the table."""
    series, labels = toy_series(9, 2)
    train = str(write_npz(files / "train.npz", series, labels))
    if name == "unknown dataset name":
        return (
            ["data=ucr", "data.name=BasicMotion"],
            ["'BasicMotion' is not a UCR/UEA", "Did you mean BasicMotions", "Bundled (offline)"],
        )
    if name == "offline, name not bundled nor cached":  # nothing listens on port 9
        return (
            ["data=ucr", "data.name=Adiac", "data.url='http://127.0.0.1:9/{name}.zip'"],
            ["could not download http://127.0.0.1:9/Adiac.zip", "data.archive=/path/to/Adiac.zip"],
        )
    if name == "different channel counts":
        other, _ = toy_series(9, 3)
        test = str(write_npz(files / "test.npz", other, labels))
        return (
            ["data=series", f"data.train={train}", f"data.test={test}"],
            ["has 3 channel(s) but data.train", "has 2"],
        )
    if name == "ragged file":
        rows = [{"c0": [1, 2, 3], "c1": [1, 2], "label": "a"}, {"c0": [1], "c1": [2], "label": "b"}]
        return (
            ["data=series", f"data.train={_jsonl(files / 'ragged.jsonl', rows)}"],
            ["row 1 has channels of different lengths"],
        )
    if name == "non-numeric file":
        rows = [{"c0": ["x", "y"], "label": "a"}, {"c0": ["z", "w"], "label": "b"}]
        return (
            ["data=series", f"data.train={_jsonl(files / 'text.jsonl', rows)}"],
            ["row 1: not a numeric array"],
        )
    if name == "all-NaN series":
        series[4] = np.full_like(series[4], np.nan)
        path = _npz(files / "nan.npz", X=np.stack(series), y=labels)
        return (["data=series", f"data.train={path}"], ["series 5", "missing (NaN) at every step"])
    if name == "empty series":
        series[2] = np.zeros((2, 0))
        path = _npz(files / "empty.npz", X=_object_array(series), y=labels)
        return (["data=series", f"data.train={path}"], ["series 3", "are empty"])
    if name == "test label missing from training":
        test = str(write_npz(files / "test.npz", series, np.where(labels == "c", "z", labels)))
        return (
            ["data=series", f"data.train={train}", f"data.test={test}"],
            ["class(es) ['z'] that the training data does not have"],
        )
    if name == ".npz without X or y":
        path = _npz(files / "noy.npz", X=np.stack(series))
        return (["data=series", f"data.train={path}"], ["has no y array", "numpy.savez"])
    if name == "text model given numeric data":
        return (
            ["data=ucr", "data.name=GunPoint", "model=bigru_ngram"],
            ["model=bigru_ngram cannot read numeric series", "lstm_fcn"],
        )
    if name == "numeric model given text":
        return (["data=synthetic", "model=lstm_fcn"], ["model=lstm_fcn reads numeric series only"])
    raise AssertionError(name)


ROWS = [
    "unknown dataset name",
    "offline, name not bundled nor cached",
    "different channel counts",
    "ragged file",
    "non-numeric file",
    "all-NaN series",
    "empty series",
    "test label missing from training",
    ".npz without X or y",
    "text model given numeric data",
    "numeric model given text",
]


@pytest.mark.parametrize("row", ROWS)
def test_bad_numeric_input_fails_clearly_before_any_run_or_cache(tmp_path, monkeypatch, capfd, row):
    files = tmp_path / "files"
    files.mkdir()
    args, expected = _case(row, files)
    root = tmp_path / "root"
    code, output = _run(root, args, monkeypatch, capfd)
    assert code == 2, output[-2000:]
    for part in expected:
        assert part in output, f"{part!r} not in:\n{output[-2000:]}"
    assert "Traceback" not in output
    _nothing_written(root)
