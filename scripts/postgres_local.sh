#!/usr/bin/env bash
# A PostgreSQL cluster for the MLflow tracking server, entirely under one folder (Debian's
# `postgresql` package, or any initdb/pg_ctl on PATH). PostgreSQL refuses to run as root: as
# root the cluster belongs to the `postgres` system user (created by the package).
#   scripts/postgres_local.sh start DIR [PORT]   # prints the backend store URI
#   scripts/postgres_local.sh stop DIR
# Password: $PGPASSWORD, else a random one kept in DIR/password (the URI carries it).
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?folder}"); port=${3:-5432}
bin=$(dirname "$(command -v pg_ctl 2>/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)")
[ -x "$bin/pg_ctl" ] || { echo "PostgreSQL not found: apt-get install postgresql" >&2; exit 3; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
  mkdir -p "$dir"
  [ -f "$dir/password" ] || { echo "${PGPASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}" > "$dir/password"; }
  chmod 600 "$dir/password"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir" "$dir/password"; chmod 755 "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U mlflow --pwfile="$dir/password" \
      --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 >"$dir/initdb.log"
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
  export PGPASSWORD=$(cat "$dir/password")
  psql -h 127.0.0.1 -p "$port" -U mlflow -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='mlflow'" \
    | grep -q 1 || psql -h 127.0.0.1 -p "$port" -U mlflow -d postgres -qc "CREATE DATABASE mlflow"
  echo "postgresql://mlflow:$PGPASSWORD@127.0.0.1:$port/mlflow" ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true ;;
*) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
