#!/usr/bin/env bash
# The team's MLflow tracking server: PostgreSQL backend store, artifacts proxied by the server
# (clients need no storage credentials), MLflow's basic-auth app on by default. docs/team-server.md,
# docs/security.md.
#   MLFLOW_AUTH_ADMIN_PASSWORD_FILE=/srv/mlflow/admin-password SERVER_NAME=mlflow.lab \
#   TLS_CERT=/srv/mlflow/cert.pem TLS_KEY=/srv/mlflow/key.pem  scripts/team_server.sh
# Authentication (AUTH=on, the default):
#   MLFLOW_AUTH_ADMIN_PASSWORD (>= 12 characters) or MLFLOW_AUTH_ADMIN_PASSWORD_FILE: the admin
#     user's password, required; MLflow sets it when it creates the admin user on the first
#     start and ignores it afterwards (rotate with `python -m seqbench.config.team_users`).
#   MLFLOW_AUTH_ADMIN_USERNAME (admin). AUTH_DEFAULT_PERMISSION (READ): what every signed-in
#     user may do with experiments nobody granted them (docs/security.md says why READ).
#   MLFLOW_AUTH_DATABASE_URI: users and permissions; default the tracking store's own database.
#   AUTH_CACHE_TTL (30): seconds a worker trusts a checked password (each check costs ~0.5 s of
#     CPU, and every request carries one); a changed or deleted password lapses within it.
#   MLFLOW_FLASK_SERVER_SECRET_KEY, else $SERVER_DIR/flask-secret-key (created once, mode 0600).
#   AUTH=off: no authentication at all (a single-user laptop); prints a warning.
# Network: HOST (default 0.0.0.0), PORT (5000), WORKERS (4); SERVER_NAME=name[,name...]: the
#   host names clients use (MLflow's --allowed-hosts; default: localhost and private addresses);
#   TLS_CERT and TLS_KEY: serve HTTPS with this certificate and key (PEM).
# Storage: MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:PASS@dbhost:5432/mlflow, else a
#   PostgreSQL cluster created and started under $SERVER_DIR/postgres (default
#   outputs/team-server/) with scripts/postgres_local.sh. MLFLOW_ARTIFACTS_DESTINATION (default
#   $SERVER_DIR/artifacts) may be s3://bucket/prefix (set MLFLOW_S3_ENDPOINT_URL,
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY for the server, and pip install boto3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mlflow=${MLFLOW:-$root/.venv/bin/mlflow}
server_dir=${SERVER_DIR:-$root/outputs/team-server}
host=${HOST:-0.0.0.0}; port=${PORT:-5000}
fail() { echo "team_server.sh: $*" >&2; exit 2; }

auth_args=()
if [ "${AUTH:-on}" = off ]; then
  echo "team_server.sh: WARNING: AUTH=off: anyone who can reach $host:$port can read, change and" \
    "delete every run, model and artifact. Use it only on a single-user machine bound to" \
    "127.0.0.1 (HOST=127.0.0.1); see docs/security.md" >&2
elif [ "${AUTH:-on}" != on ]; then
  fail "AUTH=${AUTH} is neither on nor off"
else
  if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] && [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD_FILE:-}" ]; then
    [ -r "$MLFLOW_AUTH_ADMIN_PASSWORD_FILE" ] || fail "cannot read MLFLOW_AUTH_ADMIN_PASSWORD_FILE=$MLFLOW_AUTH_ADMIN_PASSWORD_FILE"
    MLFLOW_AUTH_ADMIN_PASSWORD=$(head -n 1 "$MLFLOW_AUTH_ADMIN_PASSWORD_FILE")
  fi
  [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] || fail "no admin password: set MLFLOW_AUTH_ADMIN_PASSWORD" \
    "or MLFLOW_AUTH_ADMIN_PASSWORD_FILE (at least 12 characters), or AUTH=off for a single-user" \
    "server on 127.0.0.1 (docs/team-server.md)"
  [ "${#MLFLOW_AUTH_ADMIN_PASSWORD}" -ge 12 ] || fail "the admin password has" \
    "${#MLFLOW_AUTH_ADMIN_PASSWORD} characters; use at least 12 (MLFLOW_AUTH_ADMIN_PASSWORD)"
  export MLFLOW_AUTH_ADMIN_PASSWORD
fi

if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  MLFLOW_BACKEND_STORE_URI=$("$root/scripts/postgres_local.sh" start "$server_dir/postgres" "${PGPORT:-5432}")
fi
artifacts=${MLFLOW_ARTIFACTS_DESTINATION:-$server_dir/artifacts}
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts"; artifacts=$(realpath "$artifacts") ;; esac
# The driver must be in mlflow's own environment (MLFLOW= may name another one than .venv/).
python=$(dirname "$mlflow")/python; [ -x "$python" ] || python=$root/.venv/bin/python
"$python" -c "import psycopg" 2>/dev/null || {
  echo "the PostgreSQL driver is missing: pip install -e '.[postgres]' (make install does)" >&2; exit 3; }

if [ "${AUTH:-on}" = on ]; then
  mkdir -p "$server_dir"
  # One key shared by every worker and kept across restarts: the UI's sessions and CSRF tokens.
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    key_file=$server_dir/flask-secret-key
    [ -s "$key_file" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n=' > "$key_file")
    chmod 600 "$key_file"
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$key_file")
  fi
  export MLFLOW_FLASK_SERVER_SECRET_KEY
  # The auth app reads its database and default permission from an ini file only; it holds the
  # database password, so it is private to the server's user.
  auth_ini=$server_dir/basic_auth.ini
  (umask 077; cat > "$auth_ini" <<INI
[mlflow]
default_permission = ${AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${AUTH_CACHE_TTL:-30}
INI
  )
  chmod 600 "$auth_ini"
  export MLFLOW_AUTH_CONFIG_PATH=$auth_ini
  auth_args=(--app-name basic-auth)
fi

net_args=()
if [ -n "${SERVER_NAME:-}" ]; then
  hosts=localhost,localhost:*,127.0.0.1,127.0.0.1:*
  for name in ${SERVER_NAME//,/ }; do hosts="$hosts,$name,$name:*"; done
  net_args+=(--allowed-hosts "$hosts")
fi
if [ -n "${TLS_CERT:-}${TLS_KEY:-}" ]; then
  [ -r "${TLS_CERT:-}" ] && [ -r "${TLS_KEY:-}" ] || fail "TLS_CERT and TLS_KEY must both name readable PEM files"
  net_args+=(--uvicorn-opts "--ssl-certfile $(realpath "$TLS_CERT") --ssl-keyfile $(realpath "$TLS_KEY")")
fi

# MLflow 3 starts a job runner (huey workers, each importing MLflow) for its GenAI jobs unless
# told not to; seqbench submits none. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true turns it back on.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

exec "$mlflow" server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$artifacts" --serve-artifacts \
  --host "$host" --port "$port" --workers "${WORKERS:-4}" \
  ${auth_args[@]+"${auth_args[@]}"} ${net_args[@]+"${net_args[@]}"}
