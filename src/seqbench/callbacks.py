"""Lightning callbacks that measure throughput for the comparison tables."""

from __future__ import annotations

import os
import time

import lightning as L
import torch


def process_start_time() -> float | None:
    """Unix time this process started (Linux ``/proc``), or None where that is not available.

    Read from the kernel rather than taken at import so that interpreter start-up and imports
    count too: "start to first training step" is what a user waits for.
    """
    try:
        with open(f"/proc/{os.getpid()}/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


class EpochTimer(L.Callback):
    """Logs ``perf/epoch_seconds`` (wall time of the epoch's training steps, validation excluded)
    and ``perf/samples_per_second`` once per epoch, and once ``perf/start_to_first_step_seconds``
    (process start to the first training step: start-up, data loading and model building)."""

    def __init__(self) -> None:
        self._start = 0.0
        self._end = 0.0
        self._samples = 0
        self._first_step: float | None = None
        self.origin: float | None = None  # unix time the run started; None: this process's start

    @staticmethod
    def _sync(trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self._samples = 0
        self._start = self._end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._first_step is None:
            started = self.origin if self.origin is not None else process_start_time()
            self._first_step = time.time() - started if started is not None else float("nan")

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
        if trainer.current_epoch == 0 and self._first_step is not None:
            pl_module.log(
                "perf/start_to_first_step_seconds", self._first_step, on_epoch=True, on_step=False
            )
        pl_module.log(
            "perf/samples_per_second",
            self._samples * trainer.world_size / seconds,
            on_epoch=True,
            on_step=False,
        )
