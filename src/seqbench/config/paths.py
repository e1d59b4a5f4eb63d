"""Where things live: the project root, the config directory, and the OmegaConf resolvers.

Output paths are built from the project root, never from the working directory, so a run
started from any folder writes to the same ``outputs/``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/seqbench


def project_root() -> Path:
    """``$SEQBENCH_ROOT``; else the source checkout this package runs from; else the cwd."""
    if env := os.environ.get("SEQBENCH_ROOT"):
        return Path(env).expanduser().resolve()
    checkout = _PACKAGE_DIR.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf").is_dir():
        return checkout
    return Path.cwd().resolve()


def config_dir() -> Path:
    """``conf/`` of the checkout (editable installs) or the copy packaged inside the wheel."""
    checkout_conf = _PACKAGE_DIR.parents[1] / "conf"
    return checkout_conf if checkout_conf.is_dir() else _PACKAGE_DIR / "conf"


def file_stem(path: str | None) -> str:
    """A data file's name without its extension and ``.gz`` (``tickets.csv.gz`` -> ``tickets``)."""
    name = Path(str(path or "data")).name
    name = name[: -len(".gz")] if name.lower().endswith(".gz") else name
    return Path(name).stem or name


def register_resolvers() -> None:
    """``${seqbench.root:}``, ``${seqbench.uid:}``, ``${seqbench.cpu_precision:}`` and
    ``${seqbench.stem:PATH}`` (a data set's default name, ``file_stem``); uid is
    cached per config, and Hydra copies the cache into every sweep job, so a sweep's jobs share
    it while separate launches differ."""
    from seqbench.training.hardware import cpu_precision

    OmegaConf.register_new_resolver("seqbench.cpu_precision", cpu_precision, replace=True)
    OmegaConf.register_new_resolver("seqbench.root", lambda: str(project_root()), replace=True)
    OmegaConf.register_new_resolver("seqbench.stem", file_stem, replace=True)
    OmegaConf.register_new_resolver(
        "seqbench.uid", lambda: uuid.uuid4().hex[:8], use_cache=True, replace=True
    )
    from seqbench.launch import cluster  # the job shape of hydra/launcher=slurm

    OmegaConf.register_new_resolver("seqbench.tasks_per_node", cluster.tasks_per_node, replace=True)
    OmegaConf.register_new_resolver("seqbench.gpus_per_node", cluster.gpus_per_node, replace=True)
