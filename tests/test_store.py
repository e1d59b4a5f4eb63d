"""The one default tracking URI and the one ``sqlite:///`` parser (``seqbench.config.store``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from seqbench.config.paths import config_dir, project_root, register_resolvers
from seqbench.config.store import default_tracking_uri, sqlite_path, sqlite_uri


def test_default_is_the_project_store_unless_the_environment_names_one(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{project_root()}/outputs/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert default_tracking_uri() == "http://team:5000"


@pytest.mark.parametrize("env", [None, "http://team:5000"])
def test_the_composed_config_has_the_same_default(monkeypatch, env):
    """conf/logger/mlflow.yaml spells the default in YAML; it must name the same store."""
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train")
    assert cfg.logger.tracking_uri == default_tracking_uri()


def test_sqlite_path_round_trip():
    assert sqlite_path(sqlite_uri("/tmp/x/mlflow.db")) == Path("/tmp/x/mlflow.db")
    assert sqlite_path("sqlite:///relative/m.db") == Path("relative/m.db")
    assert sqlite_path("http://host:5000") is None
    assert sqlite_path("file:///tmp/mlruns") is None
