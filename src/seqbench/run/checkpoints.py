"""Checkpoints that outlive the machine: copies in the run's MLflow artifacts, found again on resume.

``TrackedCheckpoint`` is Lightning's ``ModelCheckpoint`` whose checkpoints also reach the run's
artifacts through the ``CheckpointUploader`` the run's lifecycle hands it: ``last.ckpt`` goes to
``resume/`` (a relaunch on another machine, or after the output folder was cleaned, continues
from there) and the best checkpoint, once, to ``checkpoints/best.ckpt`` (what a resume fetches
back for the final test, and the run's best weights for whoever reads its artifacts). The best
one is stored without its optimiser state (``weights_only_copy``): the test and a reader need
only the weights, and Adam's two moments would triple the size of every run's artifacts (a
hashed n-gram bag: 70 MB of weights, 210 MB with the moments).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

CHECKPOINT_ARTIFACT = "resume"  # artifact folder of the run's latest last.ckpt
CHECKPOINT_NAME = "last.ckpt"
BEST_ARTIFACT = "checkpoints"  # artifact folder of the run's best checkpoint
BEST_NAME = "best.ckpt"

log = logging.getLogger(__name__)


def upload_checkpoint(
    client: MlflowClient, run_id: str, path: Path, name: str, folder: str = CHECKPOINT_ARTIFACT
) -> None:
    """Copy a checkpoint into the run's artifact ``folder`` as ``name`` (overwriting)."""
    if path.name == name:
        client.log_artifact(run_id, str(path), artifact_path=folder)
        return
    with tempfile.TemporaryDirectory() as tmp:  # log_artifact keeps the file's own name
        renamed = Path(tmp) / name
        shutil.copyfile(path, renamed)
        client.log_artifact(run_id, str(renamed), artifact_path=folder)


def download_checkpoint(
    client: MlflowClient,
    run_id: str,
    name: str,
    download_dir: Path,
    folder: str = CHECKPOINT_ARTIFACT,
) -> Path | None:
    """``<folder>/<name>`` of the run, downloaded into ``download_dir``; None when absent."""
    try:
        names = [a.path for a in client.list_artifacts(run_id, folder)]
    except MlflowException:
        return None
    wanted = f"{folder}/{name}"
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


def unreadable(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted (one line), or None when it is whole.

    Lightning's checkpoints are zip archives with a CRC-32 per member: a file cut short by a
    crash or a full disk, or with damaged bytes, fails the archive's own check here instead of
    as a ``torch.load`` traceback in the middle of Lightning's restore.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"member {bad} fails its CRC check" if bad else None


# What a Lightning checkpoint needs for trainer.test / load_from_checkpoint (no optimiser,
# scheduler or loop state; callbacks and the data module restore nothing when absent).
_WEIGHTS_KEYS = (
    "state_dict",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "hyper_parameters",
    "hparams_name",
)


def weights_only_copy(path: Path) -> Path:
    """``<name>.weights`` beside the checkpoint at ``path``: the same checkpoint without its
    training state, written atomically (an upload still reading an older copy is unharmed)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    target = path.with_name(path.name + ".weights")
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save({k: checkpoint[k] for k in _WEIGHTS_KEYS if k in checkpoint}, tmp)
    tmp.replace(target)
    return target


def has_training_state(path: Path) -> bool:
    """Whether a checkpoint can resume training (it holds the optimiser state), not just test."""
    import torch

    try:
        return "optimizer_states" in torch.load(
            path, map_location="cpu", weights_only=True, mmap=True
        )
    except Exception:  # unreadable: ``unreadable`` says why
        return True


class NoUsableCheckpoint(RuntimeError):
    """The run saved checkpoints, but none of them (local or in its artifacts) is readable."""


def _candidates(client: MlflowClient, run: Run, download_dir: Path) -> Iterator[Path]:
    """Where a run's checkpoint may be, best first: its local ``last.ckpt``, the copy in its
    artifacts, then older good ones (the local best checkpoints, newest first, and the
    artifacts' best). Downloads happen only when the earlier candidates failed."""
    run_id = run.info.run_id
    local_dir = (
        Path(run.data.tags["output_dir"]) / "checkpoints"
        if run.data.tags.get("output_dir")
        else None
    )
    if local_dir is not None and (local_dir / CHECKPOINT_NAME).is_file():
        yield local_dir / CHECKPOINT_NAME
    if (path := download_checkpoint(client, run_id, CHECKPOINT_NAME, download_dir)) is not None:
        yield path
    if local_dir is not None and local_dir.is_dir():
        others = [p for p in local_dir.glob("*.ckpt") if p.name != CHECKPOINT_NAME]
        yield from sorted(others, key=lambda p: p.stat().st_mtime_ns, reverse=True)
    best_dir = download_dir / "best"
    path = download_checkpoint(client, run_id, BEST_NAME, best_dir, BEST_ARTIFACT)
    if path is not None and has_training_state(path):  # runs before weights-only best copies
        yield path


def find_checkpoint(client: MlflowClient, run: Run, download_dir: Path) -> Path | None:
    """The run's latest readable checkpoint: ``last.ckpt`` in the output folder it ran in when
    that still exists on this machine, else the copy in its MLflow artifacts (another machine,
    a cleaned disk, a local copy cut short), else an older good checkpoint. None when the run
    saved none; ``NoUsableCheckpoint`` when every one it saved is unreadable. Each unreadable
    one is reported in one line."""
    tried = []
    for path in _candidates(client, run, download_dir):
        problem = unreadable(path)
        if problem is None:
            if tried:
                log.warning("resuming from %s instead", path)
            return path
        log.warning("checkpoint %s is unreadable (%s); trying the next copy", path, problem)
        tried.append(str(path))
    if tried:
        raise NoUsableCheckpoint(
            f"no readable checkpoint for run {run.info.run_id} (tried {', '.join(tried)})"
        )
    return None


class CheckpointUploader:
    """A run's checkpoint artifacts: each file uploaded once per version, and fetched back.

    A file is uploaded again only when it changed (path, modification time and size), so the
    hooks that call it every epoch cost nothing while the best checkpoint stays the same.
    """

    def __init__(self, client: MlflowClient, run_id: str, outbox: Any = None) -> None:
        self.client, self.run_id = client, run_id
        self.outbox = outbox  # seqbench.run.outbox.Outbox: uploads queue behind the metrics
        self._uploaded: dict[str, tuple[str, int, int]] = {}

    @staticmethod
    def _stamp(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)

    def _upload(self, path: Path, folder: str, name: str, weights_only: bool = False) -> None:
        if not path.is_file():
            return
        stamp = self._stamp(path)
        if self._uploaded.get(folder) != stamp:
            source = stamp
            if weights_only:
                path = weights_only_copy(path)
            if self.outbox is not None:
                self.outbox.put_artifact(self.run_id, path, name, folder)
            else:
                upload_checkpoint(self.client, self.run_id, path, name, folder)
            self._uploaded[folder] = source

    def upload_last(self, path: Path) -> None:
        """``resume/last.ckpt``: where a relaunch on any machine continues from."""
        self._upload(Path(path), CHECKPOINT_ARTIFACT, CHECKPOINT_NAME)

    def drop_resume(self) -> None:
        """Delete the run's ``resume/`` artifacts once it has finished: a finished job is skipped,
        never resumed, and its resume state (weights plus the optimiser's moments, three times
        the weights under Adam: 430 of a ``bigru_ngram`` run's 573 MB) is dead weight in the
        store. ``checkpoints/best.ckpt`` and the logged model stay. A store that refuses (a
        read-only artifact root, a server without artifact deletes) keeps the file, with a
        warning: nothing depends on it being gone."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            uri = self.client.get_run(self.run_id).info.artifact_uri
            if self.client.list_artifacts(self.run_id, CHECKPOINT_ARTIFACT):
                get_artifact_repository(uri).delete_artifacts(CHECKPOINT_ARTIFACT)
        except Exception as exc:  # noqa: BLE001 - a cleanup: never fail a finished run on it
            log.warning(
                "kept %s/ of finished run %s (could not delete it: %s)",
                CHECKPOINT_ARTIFACT,
                self.run_id,
                exc,
            )

    def upload_best(self, path: Path) -> None:
        """``checkpoints/best.ckpt``: the best checkpoint so far, weights only."""
        self._upload(Path(path), BEST_ARTIFACT, BEST_NAME, weights_only=True)

    def fetch_best(self, download_dir: Path) -> Path | None:
        """The best checkpoint from the run's artifacts (``resume/best.ckpt`` for runs stopped
        before it moved to ``checkpoints/``); None when the run has none."""
        for folder in (BEST_ARTIFACT, CHECKPOINT_ARTIFACT):
            path = download_checkpoint(self.client, self.run_id, BEST_NAME, download_dir, folder)
            if path is not None:
                if folder == BEST_ARTIFACT:  # that very file is there already
                    self._uploaded[folder] = self._stamp(path)
                return path
        return None


def moved_best(state: dict[str, Any], new_path: str) -> dict[str, Any]:
    """``ModelCheckpoint``'s saved state with its best checkpoint at ``new_path`` instead.

    Why this knows Lightning's keys: ``ModelCheckpoint`` has no public way to say "your best
    checkpoint now lives elsewhere"; its state (``ModelCheckpoint.state_dict``) names the best
    file in ``best_model_path``, ``best_k_models`` (path -> score) and ``kth_best_model_path``.
    ``tests/test_lifecycle.py`` checks these keys on a real ``ModelCheckpoint``, so a Lightning
    upgrade that renames them fails there, not silently in a resumed run's test metrics.
    """
    old = state["best_model_path"]
    best_k = dict(state.get("best_k_models") or {})
    score = best_k.pop(old, state.get("best_model_score"))
    best_k[new_path] = score
    moved = {**state, "best_model_path": new_path, "best_k_models": best_k}
    if state.get("kth_best_model_path") == old:
        moved["kth_best_model_path"] = new_path
    return moved


def save_last_if_skipped(
    callback: ModelCheckpoint, trainer: L.Trainer, train_epoch_end: bool
) -> None:
    """Write ``last.ckpt`` at the end of an epoch in which ``callback`` wrote nothing; called
    from both hooks where Lightning saves (``train_epoch_end`` says which one this is).

    Why this uses Lightning's private methods: in Lightning 2.6 (2.6.6) ``ModelCheckpoint`` with
    ``save_last=True`` refreshes ``last.ckpt`` only in an epoch that saved a top-k checkpoint
    (``on_validation_end``: "Only save last checkpoint if a checkpoint was actually saved"), so
    once the monitored metric stops improving ``last.ckpt`` goes stale and a crash repeats every
    epoch since the last improvement. seqbench promises a checkpoint every epoch (a crash costs
    at most the epoch in flight), and there is no public switch for it. This calls the same
    private steps Lightning's own hooks do: ``_should_skip_saving_checkpoint`` (sanity check,
    fast_dev_run, not fitting, or saved at this step already), ``_should_save_on_train_epoch_end``
    (which of the two hooks saves), ``_monitor_candidates`` and ``_save_last_checkpoint``;
    ``tests/test_lifecycle.py`` fails if an upgrade renames them or stops refreshing
    ``last.ckpt`` in a non-improving epoch.
    """
    if not callback.save_last or callback._should_skip_saving_checkpoint(trainer):
        return
    if callback._should_save_on_train_epoch_end(trainer) != train_epoch_end:
        return  # the other hook is the one that saves
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


class TrackedCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose checkpoints also reach the run's MLflow artifacts.

    ``uploader`` (set by ``seqbench.run.lifecycle`` on the rank that tracks the run; None
    elsewhere) receives each new ``last.ckpt`` and each new best checkpoint, and fetches the
    best one back when a resume finds the folder it was written to missing on this machine.

    A checkpoint is uploaded only once the metrics of the epochs it holds are logged, so that
    the store never holds a checkpoint ahead of its metrics. Lightning saves at the end of an
    epoch (``on_train_epoch_end``, or ``on_validation_end`` when validation ends the epoch) but
    logs that epoch's training metrics after every ``on_train_epoch_end`` hook (Lightning 2.6,
    ``_FitLoop.on_advance_end``). Uploaded there, the copy would reach the server before the
    metrics (the outbox delivers in order), and a kill in between would resume past an epoch
    with no ``train/loss``. So the upload waits for the next moment after the logging: the next
    training batch, the end of training, or a crash that came after the epoch was complete.
    """

    def __init__(self, *args: Any, uploader: CheckpointUploader | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.uploader = uploader
        self._saved_in_epoch = -1  # the epoch of the latest save (-1: none yet)

    def _upload_new(self) -> None:
        if self.uploader is None:
            return
        if self.last_model_path:
            self.uploader.upload_last(Path(self.last_model_path))
        if self.best_model_path:
            self.uploader.upload_best(Path(self.best_model_path))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the best-so-far record of the run being resumed. A resume writes into a new
        output folder, and Lightning forgets the best score when the folder differs: a worse
        later epoch would then become "best" and give the test metrics."""
        state = {**state_dict, "dirpath": self.dirpath, "last_model_path": self.last_model_path}
        best = state.get("best_model_path")
        if best and not Path(best).is_file() and self.uploader is not None:
            # resumed on another machine: the best checkpoint is in the run's artifacts
            fetched = self.uploader.fetch_best(Path(str(self.dirpath)) / "downloaded")
            if fetched is not None:
                state = moved_best(state, str(fetched))
        super().load_state_dict(state)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        save_last_if_skipped(self, trainer, train_epoch_end=False)
        self._saved_in_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        save_last_if_skipped(self, trainer, train_epoch_end=True)
        self._saved_in_epoch = trainer.current_epoch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Everything saved before this batch is logged: the previous epoch's end included.
        # Unchanged files are not sent again (one stat per file per batch).
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._upload_new()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._upload_new()  # the last epoch's checkpoints, after its metrics

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        # ``current_epoch`` counts completed epochs: Lightning raises it after logging an
        # epoch's training metrics. A crash before that (e.g. while they were logged) keeps
        # the store's older copy: a relaunch from it repeats the epoch and logs what is missing.
        if trainer.current_epoch > self._saved_in_epoch:
            self._upload_new()
