"""What a launch does with earlier runs of the same job: skip, continue, or start fresh.

``resume=auto`` (default) looks up the experiment's runs tagged with this launch's job key
(``seqbench.run.jobs``):

- a FINISHED run: skip the job and return that run's metrics (sweepers and tables see it). A
  run a pruner stopped (tag ``seqbench.pruned``) is a partial result: it counts only for a job
  that prunes too (a relaunched pruned search skips it, ``accept_pruned``); any other launch of
  the job (a search without a pruner, a single run) trains a new run and leaves it as it is;
- a KILLED or FAILED run, or a RUNNING run whose process is gone (``seqbench.run.heartbeat``):
  continue that same MLflow run from its last checkpoint;
- a RUNNING run that is alive: refuse, naming the process (two processes must never train
  the same run);
- nothing: a new run.

``resume=never`` always starts a new run; ``resume=<run id>`` continues that run (its
configuration must match this launch's, apart from ``NON_RESULT_KEYS``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from seqbench.run.heartbeat import liveness
from seqbench.run.jobs import JOB_KEY_TAG, params_diff
from seqbench.run.optuna_trial import is_pruned

log = logging.getLogger(__name__)

RESUME_COUNT_TAG = "seqbench.resume_count"
RESUMED_FROM_STEP_TAG = "seqbench.resumed_from_step"  # global step of the checkpoint resumed
_RESUMABLE = ("KILLED", "FAILED", "RUNNING")


class ResumeError(RuntimeError):
    """This launch cannot decide or do what ``resume=`` asks (clear message, nothing written)."""


class RunningElsewhere(ResumeError):
    """The job is being trained right now by another live process (this host or another)."""

    def __init__(self, message: str, run: Run) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class ResumePlan:
    action: str  # "new" | "skip" | "resume"
    run: Run | None = None
    reason: str = ""


def _job_runs(client: MlflowClient, experiment_id: str, key: str) -> list[Run]:
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{JOB_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )


def plan(
    client: MlflowClient,
    experiment_id: str,
    key: str,
    resume: str,
    params: dict[str, str],
    stale_after: float,
    accept_pruned: bool = False,
) -> ResumePlan:
    """Decide what to do; ``params`` are this launch's result params (for ``resume=<run id>``);
    ``accept_pruned``: whether a pruned run is this job's result (the job prunes too)."""
    if resume == "never":
        return ResumePlan("new", reason="resume=never")
    if resume != "auto":
        try:
            run = client.get_run(resume)
        except MlflowException:
            raise ResumeError(f"resume={resume}: no such run in this tracking store") from None
        if run.info.experiment_id != experiment_id:
            raise ResumeError(
                f"resume={resume}: that run belongs to another experiment "
                f"(id {run.info.experiment_id}); set logger.experiment_name to its experiment"
            )
        if diff := params_diff(params, run.data.params):
            raise ResumeError(
                f"resume={resume}: that run was launched with another configuration:\n  "
                + "\n  ".join(diff[:20])
            )
        return _decide([run], stale_after, accept_pruned=True)  # the run the user named
    return _decide(_job_runs(client, experiment_id, key), stale_after, accept_pruned)


def _decide(runs: list[Run], stale_after: float, accept_pruned: bool = False) -> ResumePlan:
    runs = [r for r in runs if accept_pruned or not is_pruned(r.data.tags)]
    for run in runs:
        if run.info.status == "FINISHED":
            return ResumePlan("skip", run, "finished")
    for run in runs:
        status = run.info.status
        if status == "RUNNING":
            alive = liveness(run, stale_after)
            if alive.alive:
                raise RunningElsewhere(
                    f"this job is already running as MLflow run {run.info.run_id} "
                    f"({alive.reason}); wait for it, or launch with resume=never for a separate run",
                    run,
                )
            return ResumePlan("resume", run, f"RUNNING but dead: {alive.reason}")
        if status in _RESUMABLE:
            return ResumePlan("resume", run, status)
    return ResumePlan("new", reason="no earlier run of this job")
