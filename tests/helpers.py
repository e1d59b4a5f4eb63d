"""Test helpers: composing real Hydra configs, small fake IMDB corpora, crafted archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from seqbench.paths import config_dir, register_resolvers

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "aclImdb_v1-labeled.tar.gz"

register_resolvers()


def make_config(tmp_path: Path, overrides: list[str] | None = None) -> DictConfig:
    """The real composed `train` config, with every output under ``tmp_path``."""
    base = [
        f"paths.output_root={tmp_path}/outputs",
        f"paths.output_dir={tmp_path}/outputs/run",
        f"logger.tracking_uri=sqlite:///{tmp_path}/outputs/mlflow/mlflow.db",
        "callbacks.progress_bar.refresh_rate=0",
        "trainer.enable_model_summary=false",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=base + list(overrides or []), return_hydra_config=False)
    with open_dict(cfg):
        cfg.callbacks.pop("progress_bar", None)
        cfg.trainer.enable_progress_bar = False
    return cfg


POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving", "best"]
NEGATIVE = ["awful", "boring", "terrible", "worst", "waste", "dull", "hated"]
FILLER = ["the", "movie", "film", "a", "plot", "actor", "and", "it", "was", "story", "scene", "of"]


def fake_review(label: int, rng: np.random.Generator) -> str:
    words = list(rng.choice(FILLER, size=int(rng.integers(8, 40))))
    cue = POSITIVE if label else NEGATIVE
    for _ in range(3):
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cue)))
    return " ".join(words).capitalize() + ".<br /><br />The end."


def write_fake_imdb(root: Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """An ``aclImdb/`` directory in the official layout (no ``train/unsup``, like the shared copy)."""
    rng = np.random.default_rng(seed)
    base = root / "aclImdb"
    for split in ("train", "test"):
        for label, cls in enumerate(("neg", "pos")):
            folder = base / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                rating = int(rng.integers(7, 11)) if label else int(rng.integers(1, 5))
                (folder / f"{i}_{rating}.txt").write_text(fake_review(label, rng), encoding="utf-8")
    (base / "README").write_text("fake IMDB for tests\n")
    return base


def tar_directory(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def crafted_tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    """A gzipped tar with hand-made members (path escapes, links, devices) after a normal file."""
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("aclImdb/README")
        ok.size = len(payload)
        tar.addfile(ok, io.BytesIO(payload))
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path
