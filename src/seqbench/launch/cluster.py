"""The shape of a cluster job, derived from the trainer config (``conf/hydra/launcher/``).

Lightning on SLURM takes its ranks from SLURM (one task per device), so a job's tasks per
node, GPUs per node and node count must agree with ``trainer.devices``, ``trainer.accelerator``
and ``trainer.num_nodes``; these resolvers derive them once instead of asking users to repeat
them (``hydra.launcher.*`` still overrides each).
"""

from __future__ import annotations

import os
from typing import Any

GPU_ACCELERATORS = ("gpu", "cuda")


class ClusterConfigError(ValueError):
    """A trainer setting that no cluster job shape can express."""


def device_count(devices: Any) -> int:
    """How many devices ``trainer.devices`` names: a count, a list of ids or ``"0,1"``."""
    if (
        isinstance(devices, (list, tuple))
        or hasattr(devices, "__len__")
        and not isinstance(devices, str)
    ):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 1:
        raise ClusterConfigError(
            f"trainer.devices={devices} cannot size a cluster job: give the number of devices "
            "per node (trainer.devices=4), or set hydra.launcher.tasks_per_node and "
            "hydra.launcher.gpus_per_node yourself"
        )
    return count


def tasks_per_node(devices: Any) -> int:
    """One SLURM task per device (Lightning's SLURMEnvironment requires it)."""
    return device_count(devices)


def gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """``trainer.devices`` GPUs on a GPU accelerator; none for CPU training."""
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return None
    return device_count(devices)


def scheduler_tags() -> dict[str, str]:
    """The SLURM job running this process (``<array job>_<task>`` for a sweep's job array), so
    a run can be found in ``squeue``/``sacct`` and preempted or cancelled from its MLflow page."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    elif "SLURM_JOB_ID" in env:
        job = env["SLURM_JOB_ID"]
    else:
        return {}
    tags = {"slurm.job_id": job}
    if restarts := env.get("SLURM_RESTART_COUNT"):
        tags["slurm.restart_count"] = restarts
    return tags
