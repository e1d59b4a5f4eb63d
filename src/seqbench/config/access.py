"""Whether this process may use a tracking server: it answers, trusts our TLS, accepts our
credentials. One bounded request before anything is prepared, so that a dead server, an
untrusted certificate or a wrong password is one line naming the setting to fix instead of
minutes of MLflow's retries and a traceback (docs/team-server.md, docs/exit-codes.md).

It sends the request the way MLflow's own client would (``get_default_host_creds``:
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or ``~/.mlflow/credentials``,
``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``, ...), so it passes exactly when
the client's own requests will.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from seqbench.config.store import redact_uri

REACHABLE_TIMEOUT = 10.0  # seconds to wait for a tracking server before giving up
SIGN_IN_TIMEOUT = 60.0  # the signed-in probe reads the store: a cold server may be slow
_PROBE = "/api/2.0/mlflow/experiments/search"  # any signed-in user may call it (READ or not)
_CREDENTIALS = "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"


class TrackingUnreachable(RuntimeError):
    """The tracking server does not answer, or not to us; raised before anything is written."""


class TrackingAccessDenied(TrackingUnreachable):
    """The server answers but refuses our credentials (401) or any access (403)."""


def check_reachable(uri: str, timeout: float = REACHABLE_TIMEOUT) -> None:
    """Fail fast unless the HTTP(S) tracking server at ``uri`` answers and lets us in.

    MLflow's client retries a dead server with exponential back-off for minutes, and a wrong
    password surfaces as a traceback deep in the first write; one request with no retries says
    either in seconds. Stores that are not servers (SQLite, PostgreSQL, folders) pass.
    """
    if urlparse(uri).scheme not in ("http", "https"):
        return
    if urlparse(uri).username or urlparse(uri).password:
        # MLflow prints "View run ... at: <tracking URI>/#/..." when a run ends: not with a
        # password in it (docs/security.md).
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    import requests
    from mlflow.utils.credentials import get_default_host_creds

    shown = redact_uri(uri)
    creds = get_default_host_creds(uri)  # what MLflow's client sends (rest_utils.http_request)
    auth = (creds.username, creds.password) if creds.username and creds.password else None
    headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
    kwargs = {
        "auth": auth,
        "headers": headers,
        "verify": creds.server_cert_path or not creds.ignore_tls_verification,
        "cert": creds.client_cert_path,
    }
    try:
        # Alive? /health needs no sign-in and no database: bounded by ``timeout``.
        requests.get(uri.rstrip("/") + "/health", timeout=(timeout / 2, timeout), **kwargs)
        # Let in? A 401 comes back at once; a cold worker's first query may take a while.
        response = requests.post(
            uri.rstrip("/") + _PROBE,
            json={"max_results": 1},
            timeout=(timeout / 2, SIGN_IN_TIMEOUT),
            **kwargs,
        )
    except requests.exceptions.SSLError:
        raise TrackingUnreachable(
            f"the MLflow tracking server at {shown} presents a certificate this machine does not "
            "trust: set MLFLOW_TRACKING_SERVER_CERT_PATH to the server's CA certificate (PEM), "
            "see docs/security.md"
        ) from None
    except (requests.RequestException, OSError) as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.Timeout):
            reason = f"no answer within {timeout:.0f} s"
        elif isinstance(exc, requests.ConnectionError):
            reason = "connection refused or host unreachable"
        raise TrackingUnreachable(
            f"cannot reach the MLflow tracking server at {shown} ({reason}). Start it "
            "(`mlflow server ...`, see docs/team-server.md), or point logger.tracking_uri / "
            "MLFLOW_TRACKING_URI at a running server, or unset MLFLOW_TRACKING_URI to use the "
            "local store under outputs/mlflow"
        ) from None
    if response.status_code == 401:
        raise TrackingAccessDenied(
            f"the MLflow tracking server at {shown} refused the sign-in (401: missing or wrong "
            f"user name or password): set {_CREDENTIALS}, see docs/team-server.md"
        )
    if response.status_code == 403:
        raise TrackingAccessDenied(
            f"the MLflow tracking server at {shown} refused access (403) to the user in "
            f"{_CREDENTIALS}: ask the server's admin for access, see docs/team-server.md"
        )
