"""Hydra's submitit launchers, wired to seqbench's checkpoint-and-resume.

On a cluster a job is warned before it is preempted or reaches its time limit: SLURM sends
``preempt_signal`` (``USR1`` here; submitit's default is ``USR2``) ``signal_delay_s`` seconds
ahead. seqbench's handler (``seqbench.run.interrupt``) catches it in every rank, saves a mid-epoch
``last.ckpt``, marks the MLflow run KILLED and then hands the signal to submitit, whose handler
calls this launcher's ``checkpoint`` (the same job again) and requeues it. The requeued job is
the same config, so ``resume=auto`` continues the same MLflow run from that checkpoint.

Without the ``slurm`` extra the plugin still loads, so that ``hydra/launcher=slurm`` fails with
a message naming the fix rather than Hydra's "unknown plugin".
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher

PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # read by submitit when it is imported
MISSING_EXTRA = (
    "hydra/launcher={name} needs hydra-submitit-launcher, which is not installed: "
    "pip install -e '.[slurm]' (or `make install EXTRAS=dev,slurm`)"
)

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        BaseSubmititLauncher as _Base,
    )
except ImportError:  # the optional extra is absent
    _Base = None


def set_preempt_signal(name: str) -> str:
    """Make submitit use ``name`` (``USR1``, ``SIGUSR1``...) for preemption and time limits, in
    this process and in the jobs it starts (they inherit the environment)."""
    short = name.upper().removeprefix("SIG")
    signal.Signals["SIG" + short]  # noqa: B018 - KeyError for an unknown name
    os.environ[PREEMPT_SIGNAL_ENV] = short
    try:
        from submitit.core.job_environment import JobEnvironment
    except ImportError:
        return short
    JobEnvironment.USR_SIG = short  # already imported: the class read the variable once
    return short


if _Base is not None:

    class _SeqbenchSubmitit(_Base):  # type: ignore[misc,valid-type]
        def __init__(self, preempt_signal: str = "USR1", **params: Any) -> None:
            self.preempt_signal = set_preempt_signal(str(preempt_signal))
            super().__init__(**params)

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            set_preempt_signal(self.preempt_signal)  # submitit may have been imported since
            return super().launch(job_overrides, initial_job_idx)

    class SlurmLauncher(_SeqbenchSubmitit):
        """``hydra/launcher=slurm``: one SLURM job per sweep job (a job array)."""

        _EXECUTOR = "slurm"

    class LocalLauncher(_SeqbenchSubmitit):
        """``hydra/launcher=slurm_local``: the same jobs as local processes (laptop, tests)."""

        _EXECUTOR = "local"

else:

    class _Missing(Launcher):
        _NAME = "slurm"

        def __init__(self, **params: Any) -> None:
            raise ImportError(MISSING_EXTRA.format(name=self._NAME))

        def setup(self, **kwargs: Any) -> None:  # pragma: no cover - never constructed
            raise NotImplementedError

        def launch(  # pragma: no cover - never constructed
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            raise NotImplementedError

    class SlurmLauncher(_Missing):  # type: ignore[no-redef]
        _NAME = "slurm"

    class LocalLauncher(_Missing):  # type: ignore[no-redef]
        _NAME = "slurm_local"
