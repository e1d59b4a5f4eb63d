#!/usr/bin/env bash
# The team's MLflow tracking server: PostgreSQL backend store, artifacts proxied by the server
# (clients need no storage credentials). docs/team-server.md.
#   MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:PASS@dbhost:5432/mlflow \
#   MLFLOW_ARTIFACTS_DESTINATION=/srv/mlflow/artifacts  scripts/team_server.sh
# Without MLFLOW_BACKEND_STORE_URI a PostgreSQL cluster is created and started under
# $SERVER_DIR/postgres (default outputs/team-server/) with scripts/postgres_local.sh.
# MLFLOW_ARTIFACTS_DESTINATION may be s3://bucket/prefix (S3-compatible storage: set
# MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY for the server, and
# pip install boto3). HOST (default 0.0.0.0), PORT (5000), WORKERS (4).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mlflow=${MLFLOW:-$root/.venv/bin/mlflow}
server_dir=${SERVER_DIR:-$root/outputs/team-server}
if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  MLFLOW_BACKEND_STORE_URI=$("$root/scripts/postgres_local.sh" start "$server_dir/postgres" "${PGPORT:-5432}")
fi
artifacts=${MLFLOW_ARTIFACTS_DESTINATION:-$server_dir/artifacts}
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts"; artifacts=$(realpath "$artifacts") ;; esac
"$root/.venv/bin/python" -c "import psycopg" 2>/dev/null || {
  echo "the PostgreSQL driver is missing: pip install -e '.[postgres]' (make install does)" >&2; exit 3; }
exec "$mlflow" server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$artifacts" --serve-artifacts \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-5000}" --workers "${WORKERS:-4}"
