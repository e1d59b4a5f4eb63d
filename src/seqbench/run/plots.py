"""Figures logged with a run: the test split's confusion matrix, in label names."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mlflow import MlflowClient


def plot_confusion_matrix(
    matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Counts per (true, predicted) class with each row's share as the colour; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    try:
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        ax.set_xticks(range(n), [str(x) for x in labels], rotation=45, ha="right")
        ax.set_yticks(range(n), [str(x) for x in labels])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color)
        ax.set_title(title or f"confusion matrix ({int(matrix.sum())} examples)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def log_confusion_matrix(
    client: MlflowClient, run_id: str, matrix, labels: Sequence[str], split: str = "test"
) -> None:
    """``plots/confusion_matrix_<split>.png`` and the counts as ``.json`` (rows = true class)."""
    if matrix is None:
        return
    counts = np.asarray(matrix, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        png = plot_confusion_matrix(
            counts, labels, Path(tmp) / f"confusion_matrix_{split}.png", f"{split} split"
        )
        client.log_artifact(run_id, str(png), artifact_path="plots")
    client.log_dict(
        run_id,
        {"labels": list(labels), "rows": "true", "columns": "predicted", "counts": counts.tolist()},
        f"plots/confusion_matrix_{split}.json",
    )
