"""The sweeper's settings (``hydra/sweeper=seqbench_optuna``), registered in Hydra's ConfigStore
when Hydra scans the plugin package."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.seqbench_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # Keep `sampler` and `pruner` configs: the sweeper instantiates them itself.
    _recursive_: bool = False
    # Total finished trials (COMPLETE/PRUNED/FAIL) the study should hold, over all sweepers
    # sharing it; a relaunch tops it up.
    n_trials: int = 20
    # Trials this sweeper keeps in flight (parallel with hydra/launcher=joblib or slurm).
    n_jobs: int = 1
    # "maximize" or "minimize" the value the task function returns.
    direction: str = "maximize"
    # sqlite:///path/optuna.db, postgresql://..., journal:///path/optuna.journal; null = in memory.
    storage: str | None = None
    # Study in `storage`; loaded if it exists. null = a fresh auto-named study.
    study_name: str | None = None
    # Optuna sampler; a set seed becomes seed + trial number for each trial.
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None}
    )
    # Optuna pruner config (_target_: optuna.pruners.MedianPruner, ...); null = no pruning.
    pruner: Any = None
    # Optuna's heartbeat (database storage): seconds between beats of this sweeper's RUNNING
    # trials, and after how long without one another sweeper fails and re-queues a trial.
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    # Search space: {config key or group: override value}, e.g. {lr: "tag(log, interval(1e-4, 1e-2))"}.
    params: dict[str, Any] = field(default_factory=dict)
    # If set (e.g. "logger.tags"), every job gets ++<key>.optuna_trial=N and ++<key>.optuna_study=NAME.
    trial_tags_key: str | None = None
    # Configurations to try first, each {param: value} over (some of) `params`, queued once when
    # the study is new (Optuna's enqueue_trial): a known good start, e.g. a hand-tuned model,
    # that the sampler then has to beat. Parameters a configuration leaves out are sampled.
    start_from: list[dict[str, Any]] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="seqbench_optuna",
    node=OptunaSweeperConf,
    provider="seqbench_optuna_sweeper",
)
