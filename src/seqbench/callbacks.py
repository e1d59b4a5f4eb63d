"""Lightning callbacks that measure throughput for the comparison tables."""

from __future__ import annotations

import time

import lightning as L
import torch


class EpochTimer(L.Callback):
    """Logs ``perf/epoch_seconds`` (wall time of the epoch's training steps, validation excluded)
    and ``perf/samples_per_second`` once per epoch."""

    def __init__(self) -> None:
        self._start = 0.0
        self._end = 0.0
        self._samples = 0

    @staticmethod
    def _sync(trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self._samples = 0
        self._start = self._end = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._samples += int(batch[-1].shape[0])
        if (
            batch_idx + 1 >= trainer.num_training_batches
        ):  # last step: stop the clock before validation
            self._sync(trainer)
            self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = max(self._end - self._start, 1e-9)
        pl_module.log("perf/epoch_seconds", seconds, on_epoch=True, on_step=False)
        pl_module.log(
            "perf/samples_per_second",
            self._samples * trainer.world_size / seconds,
            on_epoch=True,
            on_step=False,
        )
