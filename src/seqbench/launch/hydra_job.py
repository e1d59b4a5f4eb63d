"""What Hydra says about the job this process runs: whether it is one job of a multirun, and
the tags that tie a run to its output folder and sweep."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def in_multirun() -> bool:
    """True inside a job of ``seqbench-train -m ...`` (any launcher), False for a single run
    and outside Hydra (tests, notebooks)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_tags() -> dict[str, str]:
    """The run's output folder and, in a multirun, its sweep id, sweep folder and job number."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    tags = {"output_dir": str(hc.runtime.output_dir)}
    if hc.mode == RunMode.MULTIRUN:
        tags |= {
            "sweep_id": Path(hc.sweep.dir).name,
            "sweep_dir": str(hc.sweep.dir),
            "job_num": str(hc.job.num),
        }
    return tags
