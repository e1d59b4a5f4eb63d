"""Where runs are tracked: the one default MLflow tracking URI and the one parser of
``sqlite:///`` store URIs, shared by ``seqbench-train``, ``seqbench-report``,
``seqbench-predict`` and the Optuna sweeper. Light on purpose (no MLflow import), so a command
that only needs the URI starts fast.

``conf/logger/mlflow.yaml`` spells the same default for the composed config
(``${oc.env:MLFLOW_TRACKING_URI,"sqlite:///${paths.mlflow_dir}/mlflow.db"}``, so that
``paths.*`` overrides move the store too); tests/test_store.py checks that the two agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from seqbench.config.paths import project_root

SQLITE_PREFIX = "sqlite:///"
STORE_FILE = "mlflow.db"
# what --tracking-uri defaults to, for the commands' --help
DEFAULT_URI_HELP = "$MLFLOW_TRACKING_URI, else sqlite:///<project>/outputs/mlflow/mlflow.db"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's SQLite store ``outputs/mlflow/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(
        project_root() / "outputs" / "mlflow" / STORE_FILE
    )


def sqlite_uri(path: str | Path) -> str:
    """The URI of the SQLite database at ``path`` (absolute paths give ``sqlite:////...``)."""
    return f"{SQLITE_PREFIX}{path}"


def sqlite_path(uri: str) -> Path | None:
    """The database file a ``sqlite:///`` URI names, or None for any other store (a server,
    a folder): the caller then has no local file to check, lock or create."""
    return Path(uri.removeprefix(SQLITE_PREFIX)) if uri.startswith(SQLITE_PREFIX) else None
