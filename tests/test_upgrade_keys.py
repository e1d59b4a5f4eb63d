"""An upgrade that adds a config key keeps every finished job (``NEUTRAL_DEFAULTS`` in
``seqbench.run.jobs``). The newer seqbench is simulated by what such an upgrade commits: the key
in the config (``+model.new_option=false``) and its neutral default in the registry.

The older store is written by this code without the key, which hashes exactly as main did
before the registry existed (tests/test_job_keys.py pins those keys).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import run_main, tiny
from seqbench.run import jobs
from test_job_keys import PINNED, _key

# A key no class receives (model.* outside model.net), so the older code accepts it too.
NEW_KEY, NEUTRAL = "model.new_option", False
NEW_OVERRIDE = f"+{NEW_KEY}=false"
# A 2-job sweep of tiny runs, launched before and after the upgrade.
SWEEP = [
    "-m",
    "seed=1,2",
    *tiny(1, n_train=100, n_test=40, max_len=20, console=True),
    "logger.experiment_name=upgrade",
]


@pytest.fixture
def newer(monkeypatch):
    monkeypatch.setitem(jobs.NEUTRAL_DEFAULTS, NEW_KEY, NEUTRAL)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_new_key_at_its_neutral_default_keeps_every_pinned_key(newer, name):
    overrides, pinned = PINNED[name]
    assert _key([*overrides, NEW_OVERRIDE]) == pinned


def test_a_new_key_set_to_another_value_is_a_new_job(newer):
    overrides, pinned = PINNED["data=synthetic model=lstm"]
    assert _key([*overrides, f"+{NEW_KEY}=true"]) != pinned


def test_a_neutral_key_in_a_newer_run_is_no_difference_for_resume(newer):
    params = {"seed": "1", "data.n_train": "300"}
    assert jobs.params_diff(params, {**params, NEW_KEY: "False"}) == []
    assert jobs.params_diff(params, {**params, NEW_KEY: "True"}) == [
        f"{NEW_KEY}: True (run) -> <absent> (now)"
    ]


def _runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("upgrade")
    return client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_a_sweep_finished_before_the_upgrade_is_skipped_after_it(tmp_path, monkeypatch, capfd):
    """Both launches are the console entry point, run in this process: the older seqbench, then
    the newer one (the new key's neutral default registered)."""
    code, output = run_main(tmp_path, SWEEP, monkeypatch, capfd)  # the older seqbench's sweep
    assert code == 0, output[-3000:]
    before = {r.info.run_id: r.info.status for r in _runs(tmp_path)}
    assert sorted(before.values()) == ["FINISHED", "FINISHED"]

    monkeypatch.setitem(jobs.NEUTRAL_DEFAULTS, NEW_KEY, NEUTRAL)  # the newer seqbench
    code, output = run_main(tmp_path, [*SWEEP, NEW_OVERRIDE], monkeypatch, capfd)
    assert code == 0, output[-3000:]
    assert output.count("finished earlier as MLflow run") == 2, output[-3000:]
    assert {r.info.run_id: r.info.status for r in _runs(tmp_path)} == before  # nothing retrained
