"""Checkpoints that are either whole or absent: written to a temporary file, then renamed.

A crash, a full disk or an unwritable folder in the middle of ``torch.save`` used to leave a
half-written ``last.ckpt`` over the good one, and the next resume trusted it. Lightning writes
every checkpoint through its strategy's ``CheckpointIO`` (``ModelCheckpoint``, the signal-time
checkpoint of ``seqbench.run.interrupt`` and ``trainer.save_checkpoint`` alike), so one
``CheckpointIO`` makes them all atomic: the new file appears under its name only once it is
complete (``os.replace`` is atomic within a folder), and a failed write removes its temporary
file and leaves the previous checkpoint as it was. The failure is raised as
``CheckpointWriteError``: the run ends FAILED with its reason in
``seqbench.run.tracking.FAILURE_REASON_TAG``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one at the same path is intact."""

    failure_reason = "checkpoint write failed"

    def __init__(self, path: Path, cause: BaseException) -> None:
        self.path, self.cause = path, cause
        previous = "the previous checkpoint there is kept" if path.is_file() else "none was there"
        super().__init__(
            f"could not write checkpoint {path}: {cause} ({previous}); free space or make the "
            "folder writable, then run the same command again to resume"
        )


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes go to a temporary file renamed into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if not _is_local(path):  # object stores write whole objects already
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        import torch

        path = Path(str(path).removeprefix("file://"))
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())  # on disk before the rename makes it the checkpoint
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the group's other users
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # torch.save reports write errors as either
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise CheckpointWriteError(path, exc) from exc


class AtomicCheckpoints(L.Callback):
    """Puts ``AtomicCheckpointIO`` on the trainer's strategy when it uses Lightning's default.

    A callback rather than a ``Trainer(plugins=...)`` argument so that every trainer the run
    lends callbacks to gets it, whatever its configured arguments; a ``CheckpointIO`` the user
    configured (e.g. an asynchronous one) is left alone.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        elif not isinstance(strategy.checkpoint_io, AtomicCheckpointIO):
            log.info("checkpoints are written by %s, not atomically", type(strategy.checkpoint_io))
