"""The authenticated team server for real: PostgreSQL, `scripts/team_server.sh` with MLflow's
basic-auth app and HTTPS (a certificate made here), users made with
`python -m seqbench.config.team_users`; one server for the module, stopped at the end."""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from helpers import (
    REPO,
    SLOW_SYNTHETIC,
    cli_env,
    free_port,
    kill_a_joblib_job,
    postgres_missing,
    stop_process_group,
    tiny,
)
from seqbench.config.store import redact_config, redact_text, redact_uri
from seqbench.run.checkpoints import CHECKPOINT_ARTIFACT, CHECKPOINT_NAME
from seqbench.run.resume import RESUME_COUNT_TAG, RESUMED_FROM_STEP_TAG
from test_team_server import (
    REQUIRE_POSTGRES,
    _tail,
    check_sweep_runs,
    joblib_sweep,
    report,
    table_row,
)

SCRIPT = REPO / "scripts" / "team_server.sh"
ADMIN_PASSWORD = "admin-Pa55word-for-tests"
PASSWORDS = {
    "walt": "walt-Secret-1234567",
    "wendy": "wendy-Secret-7654321",
    "rita": "rita-Pw-0987654321",
}
AWS_SECRET = "aws-Canary-Secret-5f2e9c"
TINY = tiny(epochs=1, n_train=200, n_test=60, console=True)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seqbench test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _add_user(base: str, cert: Path, username: str, role: str) -> None:
    """`python -m seqbench.config.team_users add USER --role ROLE`, signed in as the admin."""
    from seqbench.config import team_users

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    saved["MLFLOW_TRACKING_SERVER_CERT_PATH"] = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    os.environ.update(
        MLFLOW_TRACKING_USERNAME="admin",
        MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_TRACKING_SERVER_CERT_PATH=str(cert),
    )
    stdin = sys.stdin
    sys.stdin = io.StringIO(PASSWORDS[username] + "\n")
    try:
        args = ["--tracking-uri", base, "add", username, "--role", role, "--password-stdin"]
        assert team_users.main(args) == 0
    finally:
        sys.stdin = stdin
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def server():
    """PostgreSQL + the authenticated HTTPS team server on free loopback ports, with a reader
    (rita) and two writers (walt, wendy); everything stopped and removed afterwards."""
    if reason := postgres_missing():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required here (SEQBENCH_REQUIRE_POSTGRES=1): {reason}")
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="seqbench-auth-"))
    folder.chmod(0o755)  # the postgres user owns the cluster below it
    pg = folder / "postgres"
    pg_port = free_port()
    started = subprocess.run(
        [str(REPO / "scripts" / "postgres_local.sh"), "start", str(pg), str(pg_port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    proc, log = None, folder / "server.log"
    try:
        assert started.returncode == 0, started.stderr + _tail(pg / "postgres.log")
        cert, key = _certificate(folder)
        port = free_port()
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": started.stdout.strip(),
            "SERVER_DIR": str(folder / "server"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "TLS_CERT": str(cert),
            "TLS_KEY": str(key),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "1",  # a second worker only costs start-up time here
            "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
        }
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [str(SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        base = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(f"{base}/health", verify=str(cert), timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, _tail(log)
            time.sleep(0.5)
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        for _ in range(2):  # the tracking store opened, the admin's password checked (slow)
            answer = requests.get(
                search, auth=("admin", ADMIN_PASSWORD), verify=str(cert), timeout=60
            )
            assert answer.status_code == 200, answer.text
        _add_user(base, cert, "rita", "reader")
        _add_user(base, cert, "walt", "writer")
        _add_user(base, cert, "wendy", "writer")
        yield SimpleNamespace(
            base=base,
            cert=cert,
            pg_uri=started.stdout.strip(),
            pg_password=(pg / "password").read_text().strip(),
            artifacts=folder / "server" / "artifacts",
        )
    finally:
        if proc is not None:
            stop_process_group(proc)
        subprocess.run([str(REPO / "scripts" / "postgres_local.sh"), "stop", str(pg)], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _env(root: Path, server, user: str | None, password: str | None = None) -> dict[str, str]:
    """A client's environment: MLflow's standard settings, the test CA trusted."""
    env = {**cli_env(root), "MLFLOW_TRACKING_URI": server.base}
    env["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(server.cert)
    env["AWS_SECRET_ACCESS_KEY"] = AWS_SECRET  # a secret a careless logger would record
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    if user is not None:
        env["MLFLOW_TRACKING_USERNAME"] = user
        env["MLFLOW_TRACKING_PASSWORD"] = password if password is not None else PASSWORDS[user]
    return env


def _client(server, user: str) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(server.cert)
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = PASSWORDS.get(user, ADMIN_PASSWORD)
    return MlflowClient(server.base)


@pytest.fixture
def signed_out():
    """Restore the process's MLflow credentials after a test that set them."""
    names = (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
    )
    saved = {k: os.environ.get(k) for k in names}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _train(args: list[str], root: Path, env: dict[str, str], timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "seqbench.train", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- what may be recorded, and the script, without a server -------------------------------


def test_recorded_uris_and_configs_carry_no_secret():
    assert redact_uri("https://alice:pw@mlflow.lab:5000/") == "https://mlflow.lab:5000/"
    assert redact_uri("postgresql://u:pw@db:5432/mlflow?sslmode=require&password=pw") == (
        "postgresql://db:5432/mlflow?sslmode=require&password=***"
    )
    assert redact_uri("s3://b/k?X-Amz-Signature=abc&x=1") == "s3://b/k?X-Amz-Signature=***&x=1"
    assert redact_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert redact_text("at http://a:b@h:1/x, postgresql://u:p@db/m.") == (
        "at http://h:1/x, postgresql://db/m."
    )
    config = {
        "data": {"tokenizer": "word", "max_tokens": 3, "api_token": "t0k", "db_password": "pw"},
        "logger": {"tracking_uri": "https://a:pw@h", "tags": {"AWS_SECRET_ACCESS_KEY": "k"}},
        "urls": ["http://u:p@h/x"],
    }
    assert redact_config(config) == {
        "data": {"tokenizer": "word", "max_tokens": 3, "api_token": "***", "db_password": "***"},
        "logger": {"tracking_uri": "https://h", "tags": {"AWS_SECRET_ACCESS_KEY": "***"}},
        "urls": ["http://h/x"],
    }


def test_credentials_in_the_tracking_uri_leave_the_job_key_alone(tmp_path):
    from omegaconf import OmegaConf

    from helpers import make_config
    from seqbench.run.jobs import job_key

    plain = make_config(tmp_path, tiny())
    secret = make_config(tmp_path, [*tiny(), "logger.tracking_uri=https://alice:pw@mlflow.lab"])
    keys = [job_key(OmegaConf.to_container(c, resolve=True)) for c in (plain, secret)]
    assert keys[0] == keys[1]


def _script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """team_server.sh with `mlflow` replaced by `echo`: its checks and the command it would run."""
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "MLFLOW": "/bin/echo",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "SERVER_DIR": str(tmp_path / "server"),
        **env,
    }
    return subprocess.run([str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)


def test_the_script_refuses_to_start_without_a_long_enough_admin_password(tmp_path):
    missing = _script(tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "no admin password: set MLFLOW_AUTH_ADMIN_PASSWORD" in missing.stderr
    short = _script(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD="only11chars")
    assert short.returncode == 2 and short.stdout == ""
    assert "has 11 characters; use at least 12" in short.stderr
    (tmp_path / "pw").write_text("short\n")
    from_file = _script(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD_FILE=str(tmp_path / "pw"))
    assert from_file.returncode == 2 and "has 5 characters" in from_file.stderr


def test_the_script_turns_authentication_on_with_a_private_secret_key(tmp_path):
    (tmp_path / "pw").write_text(ADMIN_PASSWORD + "\n")
    done = _script(
        tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD_FILE=str(tmp_path / "pw"), SERVER_NAME="mlflow.lab"
    )
    assert done.returncode == 0, done.stderr
    assert "--app-name basic-auth" in done.stdout
    assert (
        "--allowed-hosts localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow.lab,mlflow.lab:*"
        in (done.stdout)
    )
    key, ini = tmp_path / "server" / "flask-secret-key", tmp_path / "server" / "basic_auth.ini"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text()) >= 32
    assert ini.stat().st_mode & 0o777 == 0o600
    assert "default_permission = READ" in ini.read_text()
    assert f"database_uri = sqlite:///{tmp_path}/mlflow.db" in ini.read_text()
    first = key.read_text()
    again = _script(tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert again.returncode == 0 and key.read_text() == first  # kept across restarts

    off = _script(tmp_path, AUTH="off", HOST="0.0.0.0", PORT="5123")
    assert off.returncode == 0 and "--app-name" not in off.stdout
    assert "WARNING: AUTH=off: anyone who can reach 0.0.0.0:5123" in off.stderr


# -- the server ---------------------------------------------------------------------------


@pytest.mark.scenario
def test_anonymous_and_wrong_passwords_get_401(server):
    verify = str(server.cert)
    search = f"{server.base}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, verify=verify, timeout=30).status_code == 401
    assert requests.get(f"{server.base}/", verify=verify, timeout=30).status_code == 401  # UI
    wrong = requests.get(search, auth=("walt", "not-his-password"), verify=verify, timeout=30)
    assert wrong.status_code == 401
    right = requests.get(search, auth=("walt", PASSWORDS["walt"]), verify=verify, timeout=30)
    assert right.status_code == 200


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """The writer walt trains one tiny run in experiment `team`, with his credentials both in
    the tracking URI (as people paste it) and in MLFLOW_TRACKING_PASSWORD. (root, process)."""
    root = tmp_path_factory.mktemp("walt")
    in_uri = server.base.replace("https://", f"https://walt:{PASSWORDS['walt']}@")
    args = [*TINY, "logger.experiment_name=team", f"logger.tracking_uri={in_uri}"]
    done = _train(args, root, _env(root, server, "walt"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


@pytest.mark.scenario
@pytest.mark.slow
def test_a_writer_logs_a_run_and_a_client_without_the_ca_is_refused(server, trained, tmp_path):
    _, done = trained
    assert "MLflow run lstm-seed1" in done.stderr + done.stdout
    # Without the server's CA: one line naming the setting, before any folder is created.
    env = _env(tmp_path, server, "walt")
    env.pop("MLFLOW_TRACKING_SERVER_CERT_PATH")
    refused = _train([*TINY, "logger.experiment_name=team"], tmp_path, env, timeout=180)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "presents a certificate this machine does not trust" in refused.stderr
    assert (
        "MLFLOW_TRACKING_SERVER_CERT_PATH" in refused.stderr and "Traceback" not in refused.stderr
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.scenario
@pytest.mark.slow
def test_wrong_password_fails_fast_with_one_line_and_leaves_nothing(server, tmp_path, signed_out):
    from seqbench.config.access import TrackingAccessDenied, check_reachable

    # The check itself: one request, no retries (MLflow's own client would retry for minutes).
    _client(server, "walt")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "not-his-password"
    start = time.monotonic()
    with pytest.raises(TrackingAccessDenied):
        check_reachable(server.base)
    assert time.monotonic() - start < 15

    env = _env(tmp_path, server, "walt", password="not-his-password")
    start = time.monotonic()
    done = _train([*TINY, "logger.experiment_name=team"], tmp_path, env, timeout=180)
    # The whole command: 3.3-4.3 s at load average 6 on 2 cores (docs/benchmarks.md; Hydra's
    # launch check runs before the job imports Lightning and torch). The bound is loose on
    # purpose: figures are measured, not asserted; MLflow's own retries would take 255 s.
    assert time.monotonic() - start < 150
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert f"server at {server.base} refused the sign-in (401" in errors[0]
    assert "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD" in errors[0]
    assert list(tmp_path.iterdir()) == []  # no run folder, no cache, no local store


@pytest.mark.scenario
@pytest.mark.slow
def test_a_reader_builds_the_table_but_cannot_log_a_run(server, trained, tmp_path, signed_out):
    walt = _client(server, "walt")
    experiment = walt.get_experiment_by_name("team").experiment_id
    runs_before = len(walt.search_runs([experiment]))

    env = _env(tmp_path, server, "rita")
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqbench.report",
            "--experiment",
            "team",
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| lstm" in (tmp_path / "r" / "table.md").read_text()
    assert "no summary run: this user may read experiment 'team' but not write" in report.stderr

    # seed=2: not walt's job (that one would be skipped as finished, which needs no write)
    done = _train([*TINY, "seed=2", "logger.experiment_name=team"], tmp_path, env)
    assert done.returncode == 2, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "lets this user read experiment 'team' but not log runs in it (403)" in output
    assert "Traceback" not in output
    assert len(walt.search_runs([experiment])) == runs_before  # nothing written


@pytest.mark.scenario
def test_a_writer_cannot_delete_another_users_experiment(server, signed_out):
    walt = _client(server, "walt")
    experiment = walt.create_experiment(f"walts-{time.time_ns()}")
    wendy = _client(server, "wendy")
    with pytest.raises(MlflowException) as refused:
        wendy.delete_experiment(experiment)
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert _client(server, "walt").get_experiment(experiment).lifecycle_stage == "active"


@pytest.mark.scenario
@pytest.mark.slow
def test_no_secret_reaches_the_store_the_artifacts_or_the_logs(server, trained, signed_out):
    """Credentials in the tracking URI and in MLFLOW_TRACKING_PASSWORD (the HTTPS server), in a
    PostgreSQL URI (a client writing to the database directly), an AWS secret in the
    environment: none in a dump of the database, the artifacts, outputs/ or Hydra's logs."""
    root, done = trained
    in_uri = server.base.replace("https://", f"https://walt:{PASSWORDS['walt']}@")
    env = _env(root, server, "walt")
    direct = _train(
        [*TINY, "logger.experiment_name=direct", f"logger.tracking_uri={server.pg_uri}"], root, env
    )
    assert direct.returncode == 0, direct.stderr[-3000:]
    report = subprocess.run(
        [
            *(sys.executable, "-m", "seqbench.report", "--tracking-uri", in_uri),
            *("--experiment", "team", "--register", "team-lstm"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "registered team-lstm version 1" in report.stderr
    # A reader scores texts with the registered model, read through the artifact proxy.
    predict = subprocess.run(
        [
            *(sys.executable, "-m", "seqbench.serving.predict", "--format", "jsonl"),
            *("--model", "models:/team-lstm@champion", "a great film"),
        ],
        cwd=root,
        env=_env(root, server, "rita"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert '"label"' in predict.stdout

    client = _client(server, "walt")
    runs = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    (run,) = [r for r in runs if r.data.tags.get("seqbench.kind") != "report"]
    assert run.data.params["logger.tracking_uri"] == server.base  # recorded, without user info
    secrets = [PASSWORDS["walt"], server.pg_password, AWS_SECRET]
    dump = subprocess.run(
        ["pg_dump", "--data-only", server.pg_uri], capture_output=True, text=True, timeout=120
    )
    assert dump.returncode == 0, dump.stderr
    assert "walt" in dump.stdout and server.base in dump.stdout  # the dump holds the runs
    texts = {"pg_dump": dump.stdout, "report stdout": report.stdout + report.stderr}
    texts["train output"] = done.stdout + done.stderr + direct.stdout + direct.stderr
    for folder in (server.artifacts, root):
        for path in folder.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any(".hydra" in name for name in texts) and any("config.yaml" in n for n in texts)
    found = [(name, s) for name, text in texts.items() for s in secrets if s in text]
    assert found == [], found


def _checkpointed_runs(client: MlflowClient, experiment: str) -> list:
    """RUNNING runs of ``experiment`` whose ``resume/last.ckpt`` reached the server."""
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    running = client.search_runs([exp_id], "attributes.status = 'RUNNING'")
    wanted = f"{CHECKPOINT_ARTIFACT}/{CHECKPOINT_NAME}"
    return [
        r
        for r in running
        if wanted in [a.path for a in client.list_artifacts(r.info.run_id, CHECKPOINT_ARTIFACT)]
    ]


@pytest.mark.scenario
@pytest.mark.slow
def test_a_writer_sweeps_resumes_through_the_proxy_and_registers(server, tmp_path, signed_out):
    """walt's 2-job joblib sweep; one job killed after its first checkpoint reached the server,
    every local checkpoint deleted (as on another machine), the same command resumes it from
    the copy fetched through the artifact proxy; then the table and --register, all signed in."""
    env = _env(tmp_path, server, "walt")
    overrides = [
        *SLOW_SYNTHETIC,
        *("data.n_train=3000", "trainer.max_epochs=3", "seed=1,2"),
        "logger.experiment_name=walts-sweep",
    ]
    walt = _client(server, "walt")
    proc = joblib_sweep(tmp_path, env, overrides, 2, background=True)
    victim = kill_a_joblib_job(proc, lambda: _checkpointed_runs(walt, "walts-sweep"))
    local = [p for p in (tmp_path / "outputs").rglob("checkpoints") if p.is_dir()]
    assert local, "no local checkpoint folder to delete"
    for folder in local:
        shutil.rmtree(folder)

    done = joblib_sweep(tmp_path, env, overrides, 2)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    exp_id = walt.get_experiment_by_name("walts-sweep").experiment_id
    runs = walt.search_runs([exp_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["1", "2"]
    check_sweep_runs(walt, runs, 3, tmp_path / "read")
    (resumed,) = [r for r in runs if r.info.run_id == victim.info.run_id]  # the same run
    assert int(resumed.data.tags[RESUME_COUNT_TAG]) >= 1
    assert int(resumed.data.tags[RESUMED_FROM_STEP_TAG]) > 0  # not from the start
    # The job's log (Hydra's, in the relaunch's job folder) names the copy it continued from.
    folder = Path(resumed.data.tags["output_dir"])
    (line,) = [
        line
        for log in folder.glob("*.log")
        for line in log.read_text().splitlines()
        if f"resuming MLflow run {victim.info.run_id}" in line
    ]
    fetched = folder / "checkpoints" / "downloaded" / CHECKPOINT_NAME
    assert line.endswith(f" from {fetched}"), line  # fetched through the proxy

    out = tmp_path / "report"
    args = ["--experiment", "walts-sweep", "--latest-sweep", "--out", str(out)]
    done = report(tmp_path, env, *args, "--register", "walts-lstm")
    assert done.returncode == 0, done.stderr[-3000:]
    assert table_row(out / "table.md", "lstm")[:2] == ["lstm", "2"]
    assert "registered walts-lstm version 1" in done.stderr
    champion = walt.get_model_version_by_alias("walts-lstm", "champion")
    assert champion.run_id in {r.info.run_id for r in runs}
