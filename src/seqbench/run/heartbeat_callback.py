"""The Lightning side of the heartbeat (``seqbench.run.heartbeat``): a callback that refreshes it
after every training epoch. Kept apart so that reading liveness (``seqbench-report``) never
imports Lightning."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L


class HeartbeatEachEpoch(L.Callback):
    """Refreshes the run's heartbeat at the end of every training epoch."""

    def __init__(self, beat: Callable[[], None]) -> None:
        self.beat = beat

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.beat()
