#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for tests: trust auth, listening on 127.0.0.1:PORT
# only, data and socket under DIR. Prints the SQLAlchemy URL on stdout.
#   start:  bash scripts/start-postgres-test-server.sh DIR PORT
#   stop:   bash scripts/start-postgres-test-server.sh --stop DIR
# As root the server runs as the `postgres` user (DIR is handed to it); otherwise as the
# caller. Install the server first with `bash scripts/install-system-deps.sh postgresql`.
set -euo pipefail

bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin_dir" ] || [ ! -x "$bin_dir/initdb" ]; then
    echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin" \
        "(run: bash scripts/install-system-deps.sh postgresql)" >&2
    exit 3
fi

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ "${1:-}" = "--stop" ]; then
    dir=${2:?usage: $0 --stop DIR}
    as_owner "$bin_dir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    exit 0
fi

dir=${1:?usage: $0 DIR PORT}
port=${2:?usage: $0 DIR PORT}
mkdir -p "$dir"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
fi
as_owner "$bin_dir/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: a test database need not survive a power cut, and it is much faster.
as_owner "$bin_dir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
