"""Stop cleanly on SIGTERM, SIGINT, SIGUSR1 and SIGUSR2: checkpoint, mark the run KILLED, exit.

Schedulers warn before they preempt (SLURM sends SIGUSR1 or SIGTERM ahead of the kill), laptops
get Ctrl-C. While ``trainer.fit`` runs, a signal only sets a flag; at the end of the current
training batch ``StopOnSignal`` saves a mid-epoch checkpoint (``last.ckpt``, resumable to the
exact batch: the batch sampler is fast-forwarded on restore) and raises ``RunInterrupted``.
Outside the training loop (data preparation, the final test), the signal raises at once: the
last epoch's checkpoint is already on disk. A second identical signal also raises at once.

Lightning's own SIGTERM handling is replaced during training: it would stop mid-validation
without a checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import lightning as L
import torch

from seqbench.run.checkpoints import CheckpointUploader

log = logging.getLogger(__name__)

# USR2: submitit's default preemption signal (seqbench's cluster launchers use USR1).
SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class RunInterrupted(BaseException):  # noqa: N818 - it is not an error
    """A run stopped by a signal. A BaseException like KeyboardInterrupt, so that no
    ``except Exception`` (Hydra's job runner, a sweeper) swallows it and keeps the sweep going."""

    def __init__(self, signum: int, where: str = "") -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}{' ' + where if where else ''}")


class SignalGuard:
    """Installs the handlers for the duration of a run (main thread only: Python delivers
    signals there; joblib's worker threads keep the process's handlers)."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.armed = False  # inside trainer.fit: defer to the next batch boundary
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.armed and self.requested is None:
            self.requested = signum
            log.warning(
                "received %s: stopping at the end of this batch with a checkpoint",
                signal.Signals(signum).name,
            )
            return
        raise RunInterrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def reinstall(self) -> None:
        """Take the signals back after Lightning registered its own at the start of fit."""
        if threading.current_thread() is threading.main_thread() and self._previous:
            for sig in SIGNALS:
                signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def raise_if_requested(self, where: str = "") -> None:
        if self.requested is not None:
            raise RunInterrupted(self.requested, where)


class StopOnSignal(L.Callback):
    """Arms the guard during fit; saves ``last.ckpt`` and raises at the next batch boundary.

    ``uploader`` (the tracking rank's; None on the others) copies the checkpoint to the run's
    MLflow artifacts, so another machine can resume.
    """

    def __init__(
        self,
        guard: SignalGuard,
        checkpoint_dir: str | Path,
        uploader: CheckpointUploader | None = None,
    ) -> None:
        self.guard = guard
        self.checkpoint_dir = Path(checkpoint_dir)
        self.uploader = uploader

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.guard.reinstall()
        self.guard.armed = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.guard.armed = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException):
        self.guard.armed = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            # Not at an epoch's last batch (as OutageGuard): Lightning resumes such a checkpoint
            # in the next epoch, without this epoch's validation and training metrics. The
            # request is taken at the next batch, after the epoch's checkpoint, or after fit.
            return
        requested = self.guard.requested
        if trainer.world_size > 1:
            # Under DDP a signal may reach one rank only, and saving a checkpoint is collective
            # (a barrier): every rank learns of the request at the same batch (Lightning itself
            # broadcasts its SIGTERM flag every step the same way).
            flag = torch.tensor([requested or 0], device=pl_module.device)
            requested = int(trainer.strategy.reduce(flag, reduce_op="max").item()) or None
        if requested is None:
            return
        path = self.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(path)
        if trainer.is_global_zero and self.uploader is not None:
            self.uploader.upload_last(path)
        if trainer.world_size > 1:
            trainer.strategy.barrier("seqbench.run.interrupt")  # other ranks exit after the upload
        raise RunInterrupted(
            requested,
            f"at epoch {trainer.current_epoch + 1}, batch {batch_idx + 1}; checkpoint {path}",
        )


def hand_over(signum: int) -> None:
    """Pass a signal seqbench has acted on to the handler that was installed before the run.

    Under submitit (``hydra/launcher=slurm``) that is submitit's preemption handler: it calls the
    launcher's ``checkpoint`` and requeues the job (it exits the process itself), and the
    requeued job continues the same MLflow run. Default handlers are left alone: the caller
    exits with 128 + signum.
    """
    handler = signal.getsignal(signum)
    if callable(handler) and handler is not signal.default_int_handler:
        log.info("handing %s over to %s", signal.Signals(signum).name, handler)
        handler(signum, None)
