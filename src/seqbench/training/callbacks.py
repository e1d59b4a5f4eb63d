"""Training callbacks that know nothing of tracking: throughput for the comparison tables, the
non-finite loss guard, and random states saved in checkpoints."""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch

from seqbench.run.heartbeat import process_start_time


class EpochTimer(L.Callback):
    """Logs ``perf/epoch_seconds`` (wall time of the epoch's training steps, validation excluded)
    and ``perf/samples_per_second`` once per epoch, and once per launch ``perf/start_to_first_step_seconds``
    (process start to the first training step: start-up, data loading and model building)."""

    def __init__(self) -> None:
        self._start = 0.0
        self._end = 0.0
        self._samples = 0
        self._first_step: float | None = None
        self._first_step_logged = False
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
        if self._start == 0.0:  # resumed mid-epoch: Lightning skips on_train_epoch_start
            self._start = self._end = time.perf_counter()
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
        self._start = 0.0
        pl_module.log("perf/epoch_seconds", seconds, on_epoch=True, on_step=False)
        if self._first_step is not None and not self._first_step_logged:
            # once per launch: a resumed run logs it again, at the epoch it resumed in
            self._first_step_logged = True
            pl_module.log(
                "perf/start_to_first_step_seconds", self._first_step, on_epoch=True, on_step=False
            )
        pl_module.log(
            "perf/samples_per_second",
            self._samples * trainer.world_size / seconds,
            on_epoch=True,
            on_step=False,
        )


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run is stopped as FAILED."""


class NonFiniteLossGuard(L.Callback):
    """Stops training at the first NaN/inf training loss, naming the epoch and step.

    Each step only queues an on-device ``isfinite`` flag (no host sync); every
    ``every_n_steps`` steps the flags are read at once, so the exact first bad step is still
    reported while a GPU never waits per step. 0 turns the guard off.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = int(every_n_steps)
        self._flags: list[tuple[int, int, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps <= 0:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not torch.is_tensor(loss):
            return
        self._flags.append((trainer.current_epoch, batch_idx, torch.isfinite(loss.detach())))
        if len(self._flags) >= self.every_n_steps or batch_idx + 1 >= trainer.num_training_batches:
            self._check()

    def _check(self) -> None:
        flags, self._flags = self._flags, []
        finite = torch.stack([f for _, _, f in flags]).cpu()
        if bool(finite.all()):
            return
        epoch, batch_idx, _ = flags[int((~finite).nonzero()[0])]
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {epoch + 1}, batch {batch_idx + 1}; lower "
            "model.optimizer.lr, set trainer.gradient_clip_val, or check the data "
            "(nonfinite_check.every_n_steps=0 turns this check off)"
        )


def _numpy_state_to_plain(state: tuple) -> tuple:
    kind, keys, pos, has_gauss, gauss = state
    return (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss))


class RandomStateInCheckpoint(L.Callback):
    """Saves the Python, NumPy and torch (CPU and CUDA) random states in every checkpoint and
    restores them on resume, so dropout masks after a resume are the ones an uninterrupted
    run draws (Lightning restores weights, optimiser and loops, not the generators). Batch
    slices seed their generators from torch's global one, so they follow."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": random.getstate(),
            # plain ints and tensors only: checkpoints stay loadable with weights_only=True
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
