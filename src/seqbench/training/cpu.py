"""The CPU plan of a run: torch threads, batch slices and denormal flushing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@dataclass(frozen=True)
class CpuPlan:
    """How a run uses the CPU: torch intra-op threads per batch slice, and the slice count."""

    threads: int  # cores this run may use
    batch_split: int  # batch slices trained in parallel threads (1: off)

    @property
    def threads_per_split(self) -> int:
        return max(1, self.threads // self.batch_split)


def usable_threads(cfg: DictConfig) -> int:
    """``cfg.num_threads``, else the usable cores divided by the launcher's parallel jobs.

    Oversubscribed OpenMP threads spin against each other and slow a CPU run several-fold.
    """
    threads = cfg.get("num_threads")
    if threads:
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = 1
    if HydraConfig.initialized():
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        if isinstance(n_jobs, int):
            jobs = (cores or 1) if n_jobs < 0 else max(1, n_jobs)
    return max(1, (cores or 1) // jobs)


# Automatic batch slices hold at least this many examples: measured with batch 64 on 2 cores
# (2 slices of 32); thinner slices would spend more on per-slice overhead than they gain.
MIN_AUTO_SLICE = 32


def plan_cpu(cfg: DictConfig) -> CpuPlan:
    """Threads and batch slices. ``cfg.batch_split`` null: when training on the CPU in one
    process, one slice per thread but no slice under ``MIN_AUTO_SLICE`` examples (batch 64:
    2 slices, each with half the threads); else 1 (``seqbench.training.parallel``)."""
    threads = usable_threads(cfg)
    split = cfg.get("batch_split")
    if split is None:
        trainer = cfg.trainer
        one_process = (
            str(trainer.get("devices", 1)) == "1" and int(trainer.get("num_nodes", 1)) == 1
        )
        on_cpu = trainer.get("accelerator") == "cpu" and trainer.get("strategy") in (None, "auto")
        most = max(1, int(cfg.data.get("batch_size", MIN_AUTO_SLICE)) // MIN_AUTO_SLICE)
        split = min(threads, most) if on_cpu and one_process else 1
    if int(split) < 1:
        raise ValueError(f"batch_split must be null or >= 1, got {split}")
    return CpuPlan(threads=threads, batch_split=min(int(split), threads))


def configure_cpu(cfg: DictConfig) -> CpuPlan:
    """Set torch's intra-op threads and denormal flushing for ``plan_cpu(cfg)``.

    Torch's thread count is per process (OpenMP), so with batch slices every slice's thread
    runs ``threads // batch_split`` of them. ``cfg.flush_denormal``: gradients vanishing
    through hundreds of LSTM steps reach the denormal float range, where x86 arithmetic is
    ~100x slower; flushing them to zero made the recurrent-dropout LSTM's step 3x faster
    (docs/benchmarks.md) without changing what is learned (they are below 1e-38).
    """
    plan = plan_cpu(cfg)
    torch.set_num_threads(plan.threads_per_split)
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))
    return plan
