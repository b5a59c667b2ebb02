#!/usr/bin/env bash
# Stop a cluster started by start-slurm-test-cluster.sh DIR: its slurmd, slurmctld and
# munged only (by their pid files under DIR), then wait for them to exit.
set -uo pipefail
dir="${1:?usage: stop-slurm-test-cluster.sh DIR}"
pids=()
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -TERM "$pid" 2>/dev/null; then
        pids+=("$pid")
    fi
done
for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
done
exit 0
