#!/usr/bin/env bash
# Stop a stack started by start-panda-test-stack.sh DIR: the pilot pool (and the pilots
# and payloads it started), the server daemons, JEDI (it kills its own process group),
# gunicorn and PostgreSQL, by the pid files under DIR; then anything still running from
# DIR's venv or pilot directory. The installation, database and logs stay for next time.
set -uo pipefail
dir="${1:-/var/tmp/smartbkg-panda}"
[ -d "$dir" ] || exit 0
dir="$(cd "$dir" && pwd)"

# Each of these leads its own session (setsid / python-daemon): signal the whole group.
groups=()
for name in pilots daemons jedi gunicorn; do
    pidfile="$dir/run/$name.pid"
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')"
    if [ -n "$pgid" ]; then
        kill -TERM -- "-$pgid" 2>/dev/null && groups+=("$pgid")
    fi
done
for pgid in "${groups[@]}"; do
    for _ in $(seq 1 50); do
        pgrep -g "$pgid" >/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
done
# Stragglers started from this stack only: run from its venv or pilot, or working in a
# pilot's directory (a payload that a killed pilot left behind).
for pid in $(pgrep -f -- "$dir/(venv|pilot)/" 2>/dev/null); do
    [ "$pid" != "$$" ] && kill -KILL "$pid" 2>/dev/null
done
for cwd in /proc/[0-9]*/cwd; do
    case "$(readlink "$cwd" 2>/dev/null)" in
    "$dir"/pilots/*)
        pid="${cwd#/proc/}"
        kill -KILL "${pid%/cwd}" 2>/dev/null
        ;;
    esac
done
rm -f "$dir"/run/*.pid "$dir"/run/*.pid.lock
if [ -f "$dir/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1
fi
exit 0
