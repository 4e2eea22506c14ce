#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the tests: a fresh cluster in a temp dir, on a free port of
# 127.0.0.1, with a database and a password-protected user. Prints the SQLAlchemy URL and writes
# `export REPAIRQC_TEST_POSTGRES_URL=...` plus `export REPAIRQC_TEST_POSTGRES_STOP=...` (the
# command that stops and removes the cluster) to the file given as $1 (default:
# <cluster dir>/env), for the caller to `source`.
#
# Why a cluster of our own instead of a system service: CI starts from a clean checkout with no
# database running, and tests must never touch a database they did not create. The cluster's
# socket, data and log all live in the temp dir; stopping it removes everything.
#
# Installs Debian's postgresql with apt-get when no server binaries are found (the only network
# access: the ordinary package registry). PostgreSQL refuses to run as root: as root the cluster
# runs as the `postgres` system user (created by the package; created here if missing).
#
# Env: REPAIRQC_PG_BIN (folder of initdb/pg_ctl, default: newest /usr/lib/postgresql/*/bin),
#      REPAIRQC_PG_PORT (default: a free port), TMPDIR (where the cluster dir goes).
set -euo pipefail

ENV_FILE="${1:-}"
DB=repairqc_test
DB_USER=repairqc
# a throwaway password: the cluster lives for one test run, listens on 127.0.0.1 only
DB_PASSWORD="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

find_bin() {
  if [[ -n "${REPAIRQC_PG_BIN:-}" ]]; then
    echo "$REPAIRQC_PG_BIN"
    return
  fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -z "$d" ]] && command -v pg_ctl >/dev/null 2>&1; then
    d="$(dirname "$(command -v pg_ctl)")"
  fi
  echo "$d"
}

PG_BIN="$(find_bin)"
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" || ! -x "$PG_BIN/pg_ctl" ]]; then
  # shellcheck source=scripts/apt-install.sh
  source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
  # the package's own cluster (if its postinst creates one) is not used: ours is in a temp dir
  if ! apt_install start-postgres postgresql postgresql-client; then
    echo "  (or point REPAIRQC_PG_BIN at the folder holding initdb and pg_ctl)" >&2
    exit 1
  fi
  PG_BIN="$(find_bin)"
fi

# who runs the server: ourselves, or (as root) the postgres system user
RUN_AS=()
if [[ "$(id -u)" -eq 0 ]]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  fi
  RUN_AS=(runuser -u postgres --)
fi

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}
PORT="${REPAIRQC_PG_PORT:-$(free_port)}"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/repairqc-pg.XXXXXX")"
chmod 755 "$DIR"
mkdir -p "$DIR/data" "$DIR/socket"
PWFILE="$DIR/pwfile"
printf '%s\n' "$DB_PASSWORD" >"$PWFILE"
if [[ "${#RUN_AS[@]}" -gt 0 ]]; then
  chown -R postgres: "$DIR"
fi
chmod 600 "$PWFILE"

# the superuser is $DB_USER itself (the tests create and drop one database per test module)
"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$DIR/data" -U "$DB_USER" --pwfile="$PWFILE" \
  --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || {
  cat "$DIR/initdb.log" >&2
  exit 1
}
rm -f "$PWFILE"

# Light settings: a test database, not a production one (no fsync: the data is thrown away).
# The server's time zone is Asia/Shanghai (where the service's users are), not UTC, so that a
# time read back in the server's zone instead of as written shows up in the tests.
"${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR/socket -c fsync=off \
      -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB \
      -c max_connections=200 -c timezone=Asia/Shanghai" start >&2 || {
  cat "$DIR/postgres.log" >&2
  exit 1
}

STOP="${RUN_AS[*]} $PG_BIN/pg_ctl -D $DIR/data -m fast -w stop >/dev/null 2>&1; rm -rf $DIR"
CREATEDB="$PG_BIN/createdb"
[[ -x "$CREATEDB" ]] || CREATEDB=createdb
PGPASSWORD="$DB_PASSWORD" "$CREATEDB" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" "$DB" || {
  eval "$STOP"
  exit 1
}

URL="postgresql+psycopg://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB"
ENV_FILE="${ENV_FILE:-$DIR/env}"
umask 077 # the file holds the (throwaway) password
{
  echo "export REPAIRQC_TEST_POSTGRES_URL='$URL'"
  echo "export REPAIRQC_TEST_POSTGRES_STOP='$STOP'"
} >"$ENV_FILE"
echo "start-postgres: PostgreSQL $("$PG_BIN/postgres" --version | awk "{print \$3}") on" \
  "127.0.0.1:$PORT, data in $DIR; env in $ENV_FILE" >&2
echo "$URL"
