"""Checkpoints that outlive the machine: copies in the run's MLflow artifacts, found again on resume.

``TrackedCheckpoint`` is Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` and best checkpoint
also reach the run's ``resume/`` artifacts, so a relaunch on another machine (or after the output
folder was cleaned) continues from there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

CHECKPOINT_ARTIFACT = "resume"  # artifact folder of the run's latest last.ckpt
CHECKPOINT_NAME = "last.ckpt"


def upload_checkpoint(client: MlflowClient, run_id: str, path: Path, name: str) -> None:
    """Copy a checkpoint into the run's ``resume/`` artifacts as ``name`` (overwriting)."""
    if path.name == name:
        client.log_artifact(run_id, str(path), artifact_path=CHECKPOINT_ARTIFACT)
        return
    with tempfile.TemporaryDirectory() as tmp:  # log_artifact keeps the file's own name
        renamed = Path(tmp) / name
        shutil.copyfile(path, renamed)
        client.log_artifact(run_id, str(renamed), artifact_path=CHECKPOINT_ARTIFACT)


def download_checkpoint(
    client: MlflowClient, run_id: str, name: str, download_dir: Path
) -> Path | None:
    """``resume/<name>`` of the run, downloaded into ``download_dir``; None when absent."""
    try:
        names = [a.path for a in client.list_artifacts(run_id, CHECKPOINT_ARTIFACT)]
    except MlflowException:
        return None
    wanted = f"{CHECKPOINT_ARTIFACT}/{name}"
    if wanted not in names:
        return None
    download_dir.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, wanted, str(download_dir)))


def checkpoint_step(path: Path) -> int | None:
    """The global step a Lightning checkpoint was saved at (None when it cannot be read)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # unreadable: Lightning reports it properly when it loads the file
        return None


def find_checkpoint(client: MlflowClient, run: Run, download_dir: Path) -> Path | None:
    """The run's latest ``last.ckpt``: in the output folder it ran in when that still exists on
    this machine, else downloaded from its MLflow artifacts (another machine, a cleaned disk)."""
    output_dir = run.data.tags.get("output_dir")
    if output_dir:
        local = Path(output_dir) / "checkpoints" / CHECKPOINT_NAME
        if local.is_file():
            return local
    return download_checkpoint(client, run.info.run_id, CHECKPOINT_NAME, download_dir)


class TrackedCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose checkpoints also reach the run's MLflow artifacts.

    Each new ``last.ckpt`` and each new best checkpoint (as ``best.ckpt``) is passed to
    ``on_saved(path, name)``, which the training entry point sets to an upload into the run's
    ``resume/`` folder: a relaunch on another machine resumes from there
    (``find_checkpoint``), and ``fetch(name)`` brings the best one back when the
    folder it was written to is not on this machine.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_saved: Callable[[Path, str], None] | None = None
        self.fetch: Callable[[str], Path | None] | None = None
        self._uploaded: dict[str, tuple[str, float]] = {}

    def _upload(self, path_text: str, name: str) -> None:
        path = Path(path_text) if path_text else None
        if self.on_saved is None or path is None or not path.is_file():
            return
        stamp = (str(path), path.stat().st_mtime)
        if self._uploaded.get(name) != stamp:
            self.on_saved(path, name)
            self._uploaded[name] = stamp

    def _upload_new(self) -> None:
        self._upload(self.last_model_path, "last.ckpt")
        self._upload(self.best_model_path, "best.ckpt")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the best-so-far record of the run being resumed. A resume writes into a new
        output folder, and Lightning forgets the best score when the folder differs: a worse
        later epoch would then become "best" and give the test metrics."""
        super().load_state_dict(
            {**state_dict, "dirpath": self.dirpath, "last_model_path": self.last_model_path}
        )
        best = self.best_model_path
        if best and not Path(best).is_file() and self.fetch is not None:
            fetched = self.fetch("best.ckpt")  # resumed on another machine
            if fetched is not None:
                score = self.best_k_models.pop(best, self.best_model_score)
                self.best_model_path = str(fetched)
                self.best_k_models[str(fetched)] = score
                if self.kth_best_model_path == best:
                    self.kth_best_model_path = str(fetched)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._upload_new()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._upload_new()
