"""The study's pruner, built from its Hydra config (``hydra.sweeper.pruner``)."""

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf


def plain_config(conf: Any) -> Any:
    """A config as plain Python containers (what a study attribute can store)."""
    if OmegaConf.is_config(conf):
        return OmegaConf.to_container(conf, resolve=True)
    return dict(conf) if isinstance(conf, Mapping) else conf


def build_pruner(conf: Any) -> Any:
    """The configured Optuna pruner (None when off); any problem names ``hydra.sweeper.pruner``
    before a trial starts."""
    from hydra.utils import instantiate
    from optuna.pruners import BasePruner

    if conf is None:
        return None
    plain = plain_config(conf)
    target = plain.get("_target_") if isinstance(plain, Mapping) else None
    if not target:
        raise ValueError(f"hydra.sweeper.pruner needs a _target_ (an Optuna pruner), got {plain!r}")
    try:
        pruner = instantiate(plain)
    except Exception as exc:
        raise ValueError(f"hydra.sweeper.pruner: cannot build {target}: {exc}") from exc
    if not isinstance(pruner, BasePruner):
        raise ValueError(f"hydra.sweeper.pruner: {target} is not an Optuna pruner")
    return pruner
