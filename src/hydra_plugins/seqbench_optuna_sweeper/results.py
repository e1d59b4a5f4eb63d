"""``optimization_results.yaml``: the study's state and best trial when a sweeper ends."""

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .trials import count_finished

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def write_results(study: Any, sweep_dir: Path, settings: dict[str, Any]) -> None:
    """Write the study's trial states and best trial (with ``settings``: storage, direction,
    n_trials, pruner) to ``sweep_dir``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        **settings,
        "n_finished": count_finished(trials),
        "trial_states": {k: v for k, v in states.items() if v},
        "best_trial": None,
        "best_value": None,
        "best_params": None,
    }
    if states.get("COMPLETE"):
        best = study.best_trial
        results |= {
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": dict(best.params),
        }
        log.info("Best trial %d: value %s with %s", best.number, best.value, best.params)
    else:
        log.warning("no COMPLETE trial in study %r yet", study.study_name)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
    log.info("wrote %s", sweep_dir / RESULTS_FILE)
