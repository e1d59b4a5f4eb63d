"""Where runs are tracked: the one default MLflow tracking URI and the one parser of
``sqlite:///`` store URIs, shared by ``seqbench-train``, ``seqbench-report``,
``seqbench-predict`` and the Optuna sweeper. Light on purpose (no MLflow import), so a command
that only needs the URI starts fast.

``conf/logger/mlflow.yaml`` spells the same default for the composed config
(``${oc.env:MLFLOW_TRACKING_URI,"sqlite:///${paths.mlflow_dir}/mlflow.db"}``, so that
``paths.*`` overrides move the store too); tests/test_store.py checks that the two agree.

It also owns what may be *written* about a store: ``redact_uri`` and ``redact_config`` keep
credentials out of runs, logs and reports (docs/security.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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


# -- secrets: what a run, a log line or a report may say about where it is tracked -------------

# Query keys whose values are credentials (a signed URL's signature, an access token, a password).
_SECRET_QUERY = re.compile(r"pass|token|secret|key|sig|credential|auth", re.IGNORECASE)
# Names (env variables, config keys) whose values are secrets. Leaf names only: `tokenizer` or
# `max_tokens` are not secrets, `token`, `api_token`, `db_password`, `AWS_...` are.
_SECRET_NAME = re.compile(
    r"pass(word|wd)?($|_)|secret|(^|_)token$|(^|_)api_?key$|access_?key|credential|^aws_",
    re.IGNORECASE,
)
# Any URI with a user part (`scheme://user[:password]@host`) inside a longer text.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """``uri`` without its user info and without the values of secret-looking query keys:
    ``https://alice:pw@mlflow.lab`` -> ``https://mlflow.lab``, ``postgresql://u:pw@db/mlflow``
    -> ``postgresql://db/mlflow``. What a run, a log line or a report records of a store, so
    that no credential is written where every reader of the experiment can see it."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc:
        return uri
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with the user info of every URI in it removed (log files, error messages)."""
    return _USERINFO.sub(r"\g<scheme>", text)


def is_secret_name(name: str) -> bool:
    """Whether a config key or environment variable named ``name`` holds a secret."""
    return bool(_SECRET_NAME.search(name.rsplit(".", 1)[-1]))


def redact_config(value: Any, name: str = "") -> Any:
    """A resolved config (nested dicts and lists) fit to log: secret-named values replaced,
    URIs without credentials. Job keys are computed before this (``logger.*`` is no result key)."""
    if isinstance(value, dict):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_config(v, name) for v in value]
    if isinstance(value, str):
        if name and is_secret_name(name) and value:
            return REDACTED
        return redact_text(redact_uri(value)) if "://" in value else value
    return value
