#!/usr/bin/env bash
# Start a private PanDA stack on 127.0.0.1: PostgreSQL 15 with the upstream PanDA schema,
# the real panda-server 1.0.4 (under gunicorn), JEDI, the server daemons (Adder) and a
# pilot pool (panda-pilot 3.7) on one local queue. Everything lives under one directory:
# the venv with the pinned PanDA packages (never the project's own environment), the
# database, configs, logs, the sandbox cache, pilot work dirs and the queue's storage.
#
#   eval "$(bash scripts/start-panda-test-stack.sh [DIR])"   # prints the export lines
#   bash scripts/stop-panda-test-stack.sh [DIR]
#
# Idempotent: a running stack in DIR is reused (its exports printed again); an installed
# one restarts in seconds. DIR defaults to /var/tmp/smartbkg-panda. Needs root (Debian
# packages, the postgres user). The PanDA schema (PanDAWMS/panda-database) is kept in
# scripts/panda_stack/panda-database, or named by $PANDA_DB_SCHEMA; exit 2, with one line,
# when it is missing. scripts/panda_stack/README.md says what each part is and what a real
# site uses instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
stack="$here/panda_stack"
SERVER_VERSION=1.0.4
PILOT_VERSION=3.7.0.36
QUEUE="${PANDA_STACK_QUEUE:-SMARTBKG_LOCAL}"
# The payloads' software: the caller's python3 and PYTHONPATH (the server's differ).
payload_pythonpath="${PYTHONPATH:-}"
PILOTS="${PANDA_STACK_PILOTS:-2}"

# The upstream schema is kept in the repository (panda_stack/panda-database, Apache-2.0);
# $PANDA_DB_SCHEMA names another checkout of PanDAWMS/panda-database.
schema_root="${PANDA_DB_SCHEMA:-$stack/panda-database}"
if [ ! -f "$schema_root/schema/postgres/sqls/pg_PANDA_TABLE.sql" ]; then
    echo "panda test stack: no PanDA database schema (PanDAWMS/panda-database) in $schema_root" >&2
    exit 2
fi
schema="$(cd "$schema_root/schema/postgres" && pwd)"
if [ "$(id -u)" -ne 0 ]; then
    echo "panda test stack: needs root (Debian packages, the postgres user)" >&2
    exit 3
fi

dir="${1:-/var/tmp/smartbkg-panda}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
venv="$dir/venv"
mkdir -p "$dir"/{log,run,cache,trf,storage,pilots,etc}
# One start at a time per DIR (the daemons below must not inherit this descriptor, or
# the lock would outlive the script).
exec 9>"$dir/run/start.lock"
flock 9

env_file="$dir/stack.env"
server_alive() {
    [ -s "$dir/run/gunicorn.pid" ] && kill -0 "$(cat "$dir/run/gunicorn.pid")" 2>/dev/null &&
        curl -sf "http://127.0.0.1:$1/api/v1/system/is_alive" >/dev/null 2>&1
}
if [ -s "$env_file" ]; then
    # shellcheck disable=SC1090
    port="$(sed -n 's/^PANDA_STACK_PORT=//p' "$env_file")"
    if server_alive "$port" && [ -s "$dir/run/jedi.pid" ] && kill -0 "$(cat "$dir/run/jedi.pid")" 2>/dev/null; then
        sed 's/^/export /' "$env_file"
        exit 0
    fi
    bash "$here/stop-panda-test-stack.sh" "$dir" >&2 || true
fi

# -- software ----------------------------------------------------------------------------
bash "$here/install-system-deps.sh" postgresql postgresql-15-cron postgresql-15-partman curl >&2
if [ ! -f "$venv/.installed-$SERVER_VERSION-$PILOT_VERSION" ]; then
    started=$(date +%s)
    rm -rf "$venv" "$dir/pilot" "$dir/dl"
    python3 -m venv "$venv"
    # panda-server's build hook chowns its log dirs to atlpan:zp when built as root.
    getent group zp >/dev/null || groupadd --system zp
    getent passwd atlpan >/dev/null || useradd --system --no-create-home -g zp -s /usr/sbin/nologin atlpan
    "$venv/bin/pip" download -q --no-deps -d "$dir/dl" "panda-server==$SERVER_VERSION" "panda-pilot==$PILOT_VERSION" >&2
    # mod_wsgi (a dependency) needs Apache's apxs: the server runs under gunicorn instead,
    # so everything is installed from the pinned list without dependency resolution.
    "$venv/bin/pip" install -q --no-deps -r "$stack/requirements.txt" >&2
    "$venv/bin/pip" install -q --no-deps "$dir/dl/panda_server-$SERVER_VERSION.tar.gz" >&2
    # The pilot's launcher (pilot.py) is only in the sdist, not in what pip installs.
    mkdir -p "$dir/pilot"
    tar -xzf "$dir/dl/panda-pilot-$PILOT_VERSION.tar.gz" -C "$dir/pilot" --strip-components=1
    touch "$venv/.installed-$SERVER_VERSION-$PILOT_VERSION"
    echo "panda test stack: installed in $(($(date +%s) - started)) s" >&2
fi
site_packages="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"

# -- ports -------------------------------------------------------------------------------
# The server keeps its port across restarts when it is still free: tasks already
# submitted carry the server's URL (--sourceURL) in their job parameters.
previous_port="$(sed -n 's/^PANDA_STACK_PORT=//p' "$env_file" 2>/dev/null || true)"
read -r port pg_port < <(python3 - "${previous_port:-0}" <<'EOF'
import socket
import sys
sockets = [socket.socket() for _ in range(2)]
try:
    sockets[0].bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sockets[0].bind(("127.0.0.1", 0))
sockets[1].bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
)

# -- PostgreSQL with the PanDA schema ----------------------------------------------------
pg_bin="$(ls -d /usr/lib/postgresql/15/bin)"
pg="$dir/pg"
as_postgres() { runuser -u postgres -- "$@"; }
psql_() { as_postgres "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -q -v ON_ERROR_STOP=1 "$@"; }
fresh_db=0
if [ ! -f "$pg/schema-loaded" ]; then
    # a database whose schema load did not finish is made again from scratch
    rm -rf "$pg"
    mkdir -p "$pg"
    chown postgres: "$pg"
    as_postgres "$pg_bin/initdb" -D "$pg/data" -A trust -U postgres --no-sync >"$dir/log/initdb.log" 2>&1
    cat >>"$pg/data/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_cron, pg_partman_bgw'
cron.database_name = 'postgres'
# without background workers pg_cron needs a password-less TCP login and JEDI's contents
# feeder silently finds no datasets
cron.use_background_workers = on
max_worker_processes = 32
pg_partman_bgw.dbname = 'panda_db'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fresh_db=1
fi
as_postgres "$pg_bin/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 60 \
    -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1" start >/dev/null 9>&-
if [ "$fresh_db" = 1 ]; then
    sqls="$schema/sqls"
    sed 's/${PANDA_DB_PASSWORD}/panda/g' "$sqls/init_step.sql" | psql_ -f - >>"$dir/log/schema.log" 2>&1
    # Upstream's loading order (panda_db_init.sh). Debian's pg_partman 4.7 knows the
    # partition type 'native' where the schema (written for partman 5) says 'range'.
    for comp in PANDA PANDAMETA PANDAARCH PANDABIGMON DEFT PARTITION; do
        for file in "$sqls/pg_$comp.sql" "$sqls/pg_${comp}"_{TABLE,VIEW,TYPE,SEQUENCE,FUNCTION,TRIGGER,SCHEDULER_JOBS,PROCEDURE}.sql; do
            [ -f "$file" ] || continue
            sed "s/p_type => 'range'/p_type => 'native'/" "$file" |
                as_postgres "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -q -d panda_db -f - >>"$dir/log/schema.log" 2>&1 || true
        done
    done
    # one known, harmless error upstream (a view on worker_node_queue, created later)
    tables="$(psql_ -d panda_db -tAc "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'doma_panda'")"
    if [ "$tables" -lt 200 ]; then
        echo "panda test stack: the schema load made only $tables tables (see $dir/log/schema.log)" >&2
        exit 1
    fi
    IFS=. read -r major minor patch <"$schema/version"
    psql_ -d panda_db -c "INSERT INTO doma_panda.pandadb_version (component, major, minor, patch) VALUES ('PanDA', '$major', '$minor', '$patch')"
    psql_ -d panda_db -f "$sqls/post_step_panda.sql" >>"$dir/log/schema.log" 2>&1
    psql_ -f "$sqls/post_step_cron.sql" >>"$dir/log/schema.log" 2>&1
    touch "$pg/schema-loaded"
fi
# The local queue, its site and its storage endpoint (what CRIC holds for a real site).
"$venv/bin/python" "$stack/local_queue.py" "$QUEUE" "$dir/storage" "http://127.0.0.1:$port" |
    psql_ -d panda_db -f - >>"$dir/log/schema.log" 2>&1

# -- configuration -----------------------------------------------------------------------
url="http://127.0.0.1:$port"
PANDA_HOME="$dir" "$venv/bin/python" "$stack/configure.py" "$dir" "$venv" "$port" "$pg_port" "$QUEUE"
cat >"$env_file" <<EOF
PANDA_URL=$url/server/panda
PANDA_URL_SSL=$url/server/panda
PANDA_API_URL=$url/api/v1
PANDA_API_URL_SSL=$url/api/v1
PANDACACHE_URL=$url/server/panda
PANDAMON_URL=$url
PANDA_BEHIND_REAL_LB=1
PANDA_AUTH=oidc
PANDA_AUTH_VO=wlcg
PANDA_AUTH_ID_TOKEN=$("$venv/bin/python" "$stack/configure.py" --token)
PANDA_STORAGE_PATH=$dir/storage
PANDA_STACK_DIR=$dir
PANDA_STACK_PORT=$port
PANDA_STACK_QUEUE=$QUEUE
EOF

# -- processes ---------------------------------------------------------------------------
export PANDA_HOME="$dir" TZ=UTC PANDA_NO_ROOT=1 PANDA_BEHIND_REAL_LB=1
export PANDA_URL="$url/server/panda" PANDA_URL_SSL="$url/server/panda"
export PANDA_API_URL="$url/api/v1" PANDA_API_URL_SSL="$url/api/v1" PANDACACHE_URL="$url/server/panda"
export PYTHONPATH="$site_packages/pandacommon:$site_packages/pandaserver:$stack"
rm -f "$dir/run/"*.pid
"$venv/bin/gunicorn" --daemon --pid "$dir/run/gunicorn.pid" --bind "127.0.0.1:$port" \
    --workers 2 --threads 4 --timeout 300 --chdir "$stack" \
    --error-logfile "$dir/log/gunicorn.log" --access-logfile "$dir/log/access.log" \
    loopback_wsgi:application 9>&-
"$venv/bin/python" -u "$site_packages/pandajedi/jediorder/JediMaster.py" --pid "$dir/run/jedi.pid" \
    >>"$dir/log/jedi.stdout" 2>&1 </dev/null 9>&-
"$venv/bin/python" -u "$site_packages/pandaserver/daemons/master.py" --pidfile "$dir/run/daemons.pid" \
    >>"$dir/log/daemons.stdout" 2>&1 </dev/null 9>&-
for _ in $(seq 1 150); do
    if server_alive "$port"; then
        break
    fi
    sleep 0.2
done
if ! server_alive "$port"; then
    echo "panda test stack: the server did not answer on $url (logs in $dir/log)" >&2
    bash "$here/stop-panda-test-stack.sh" "$dir" >&2 || true
    exit 1
fi
if [ "$PILOTS" -gt 0 ]; then
    PYTHONPATH="$payload_pythonpath" setsid "$venv/bin/python" "$stack/pilot_pool.py" "$dir" "$QUEUE" "$port" "$PILOTS" \
        >>"$dir/log/pilot_pool.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/run/pilots.pid"
fi
sed 's/^/export /' "$env_file"
