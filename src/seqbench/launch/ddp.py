"""DDP inside Hydra multiruns: Lightning's children run exactly the job that started them.

With ``strategy=ddp`` Lightning's ``_SubprocessScriptLauncher`` starts ranks 1..N-1 by running
the script again: ``_hydra_subprocess_cmd`` (lightning/fabric/strategies/launchers/
subprocess_script.py) copies ``sys.argv[1:]`` unchanged and appends
``hydra.run.dir="<HydraConfig.run.dir>"``, ``hydra.job.name=train_ddp_process_<rank>`` and
``hydra.output_subdir=null``. That is right for a single run and wrong for a multirun:

- ``sys.argv`` still holds ``-m`` and the sweep (``seed=1,2``), so every child starts the whole
  sweep again in a new sweep folder (Hydra ignores ``hydra.run.dir`` in multirun mode);
- ``HydraConfig.run.dir`` is not the job's folder in a multirun (that is ``sweep.dir/subdir``);
- the launcher sets ``MASTER_ADDR/MASTER_PORT/NODE_RANK/LOCAL_RANK/WORLD_SIZE`` in the parent's
  own environment, and the process group lives until the process exits: the *next* job of the
  sweep then believes its processes were created externally (``LOCAL_RANK`` is set), launches
  no children and reuses a dead process group.

``one_job_per_child`` fixes all three around one job's ``fit``/``test``, and does nothing
outside a multirun or in a process that did not launch the others (a child, or ranks started by
SLURM/torchrun, whose environment the cluster owns).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

# What Lightning's subprocess launcher writes into the launching process's environment.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
THREADS_ENV = "OMP_NUM_THREADS"  # set by Lightning to cores / processes on first launch
CHILD_EXIT_TIMEOUT = 120.0  # seconds a job waits for its DDP children to exit
DECISION_TIMEOUT = 900.0  # seconds SLURM tasks wait for rank 0's resume decision


def launched_externally() -> bool:
    """True when this process's ranks come from outside (a Lightning child, SLURM's srun,
    torchrun): the environment then already names its rank."""
    return "LOCAL_RANK" in os.environ or ("SLURM_PROCID" in os.environ and _slurm_ntasks() > 1)


def _slurm_ntasks() -> int:
    try:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    except ValueError:
        return 1


def single_job_argv(argv0: str, task_overrides: list[str]) -> list[str]:
    """The command line of one job: its own overrides, no ``-m`` and no sweep."""
    return [argv0, *task_overrides]


@contextlib.contextmanager
def one_job_per_child(trainer: Any) -> Iterator[None]:
    """Make DDP children started during this block run only the current multirun job, in its
    output folder; afterwards wait for them, and clear the process group and launcher
    environment so the next job of the sweep launches its own children."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if (
        not HydraConfig.initialized()
        or HydraConfig.get().mode != RunMode.MULTIRUN
        or launched_externally()
    ):
        yield
        return
    hc = HydraConfig.get()
    saved_argv = list(sys.argv)
    saved_env = {k: os.environ.get(k) for k in (*LAUNCHER_ENV, THREADS_ENV)}
    saved_run_dir = OmegaConf.to_container(hc.run)["dir"]  # keep its interpolation
    output_dir = str(Path(hc.runtime.output_dir).resolve())
    sys.argv = single_job_argv(sys.argv[0], list(hc.overrides.task))
    with read_write(hc), open_dict(hc):
        hc.run.dir = output_dir  # Lightning passes it to the children as hydra.run.dir
    try:
        yield
    finally:
        _reap_children(trainer)
        _destroy_process_group()
        sys.argv = saved_argv
        with read_write(hc), open_dict(hc):
            hc.run.dir = saved_run_dir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def child_processes(trainer: Any) -> list[subprocess.Popen]:
    """The DDP child ranks this process started for ``trainer`` (empty when it started none).

    Why an internal: Lightning has no public way to reach the processes its
    ``_SubprocessScriptLauncher`` (``trainer.strategy.launcher``) started; it keeps them in
    ``launcher.procs``. ``tests/test_lifecycle.py`` checks that attribute on a real DDP trainer,
    so a Lightning upgrade that renames it fails there instead of leaving children unreaped.
    """
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return list(getattr(launcher, "procs", None) or [])


def _reap_children(trainer: Any) -> None:
    """Wait for the job's child ranks (they exit after their ``test``); kill stragglers."""
    for proc in child_processes(trainer):
        try:
            proc.wait(timeout=CHILD_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("DDP child %s did not exit; killing it", proc.pid)
            proc.kill()
            proc.wait()
        if proc.returncode:
            log.warning("DDP child %s exited with status %s", proc.pid, proc.returncode)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def slurm_ranks() -> bool:
    """True in one task of a multi-task SLURM job step: Lightning takes its ranks from SLURM
    (``SLURMEnvironment``), and no rank is a child of rank 0."""
    return "SLURM_PROCID" in os.environ and _slurm_ntasks() > 1


def _decision_file(output_root: str | Path) -> Path:
    """One file per launch of a SLURM job step, the same path in every task (shared disk)."""
    env = os.environ
    launch = ".".join(
        env.get(k, "0")
        for k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_STEP_ID")
    )
    return Path(output_root) / ".seqbench-ranks" / f"{launch}.json"


def publish_decision(output_root: str | Path, skip: bool, ckpt_path: str | None) -> None:
    """Rank 0 of a multi-task SLURM job: tell the other tasks whether this job trains and from
    which checkpoint. They are started by ``srun``, not by rank 0, so they inherit nothing;
    the process group does not exist yet (and never will when the job is skipped)."""
    if not slurm_ranks():
        return
    path = _decision_file(output_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"skip": skip, "ckpt_path": ckpt_path}))
    tmp.replace(path)  # atomic: a reader sees all of it or nothing


def await_decision(output_root: str | Path, timeout: float = DECISION_TIMEOUT) -> dict:
    """Another task of a multi-task SLURM job: rank 0's decision (``publish_decision``)."""
    path = _decision_file(output_root)
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 wrote no decision to {path} within {timeout:.0f} s")
        time.sleep(0.5)
    return json.loads(path.read_text())


# Lightning's DDP children run the script again (module docstring) and inherit nothing from
# rank 0 but the environment; they do not track, so rank 0 names the checkpoint there.
RESUME_CKPT_ENV = "SEQBENCH_RESUME_CKPT"


def pass_to_children(ckpt_path: str | None) -> None:
    """Rank 0: the checkpoint its DDP children must continue from (None: the start)."""
    os.environ[RESUME_CKPT_ENV] = ckpt_path or ""


def from_parent() -> str | None:
    """A DDP child: the checkpoint rank 0 passed with ``pass_to_children``."""
    return os.environ.get(RESUME_CKPT_ENV) or None
