#!/usr/bin/env bash
# Start a private Docker engine for tests and local builds (no systemd here).
#
#   scripts/start-docker-engine.sh STATE_DIR      # prints: export DOCKER_HOST=unix://STATE_DIR/docker.sock
#   scripts/start-docker-engine.sh --stop STATE_DIR
#
# SMARTBKG_DOCKER_TMPFS_GB=N keeps images and containers in a tmpfs of at most N GiB
# (memory, not disk): image builds commit their layers faster, and --stop frees them at
# once instead of deleting ~100k files. Use it only where that much memory is free.
# Data and exec roots, socket, pid file and log all live under STATE_DIR, so the engine
# never clashes with another one on the machine. No bridge and no iptables: containers
# get `--network none` (or `--network host` for builds that need Debian's mirror / PyPI).
# Needs root and the docker.io package (scripts/install-system-deps.sh docker.io).
set -euo pipefail

if [ "${1:-}" = "--stop" ]; then
    state_dir=$(realpath "${2:?usage: $0 --stop STATE_DIR}")
    pid=$(cat "$state_dir/dockerd.pid" 2>/dev/null || true)
    # Only the dockerd this STATE_DIR started (a stale pid file may name another process).
    ours() {
        [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
            grep -q -- "--data-root $state_dir/data"
    }
    if ours; then
        kill "$pid"
        for _ in $(seq 100); do
            ours || break
            sleep 0.1
        done
        if ours; then kill -9 "$pid"; fi
    fi
    # dockerd leaves its netns bind mount (exec/netns/default) and, when killed, container
    # mounts behind: unmount everything under STATE_DIR, deepest first, so it can be removed.
    awk -v root="$state_dir/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r mount_point; do umount --lazy "$mount_point" 2>/dev/null || true; done
    exit 0
fi

state_dir=${1:?usage: $0 STATE_DIR}
mkdir -p "$state_dir"
state_dir=$(realpath "$state_dir")
socket="$state_dir/docker.sock"
# A unix socket path is limited to 107 bytes; keep STATE_DIR short (e.g. under /tmp).
if [ ${#socket} -gt 100 ]; then
    echo "start-docker-engine: socket path $socket is too long; use a shorter STATE_DIR" >&2
    exit 2
fi
command -v dockerd >/dev/null || {
    echo "start-docker-engine: dockerd not found (bash scripts/install-system-deps.sh docker.io)" >&2
    exit 3
}
if [ -n "${SMARTBKG_DOCKER_TMPFS_GB:-}" ]; then
    mkdir -p "$state_dir/data"
    mountpoint -q "$state_dir/data" ||
        mount -t tmpfs -o "size=${SMARTBKG_DOCKER_TMPFS_GB}g,mode=0710" tmpfs "$state_dir/data"
fi
# dockerd picks overlay2 where the kernel allows it (vfs otherwise: slow but works).
dockerd \
    --host "unix://$socket" \
    --data-root "$state_dir/data" \
    --exec-root "$state_dir/exec" \
    --pidfile "$state_dir/dockerd.pid" \
    --iptables=false --ip6tables=false --bridge=none \
    ${SMARTBKG_DOCKERD_ARGS:-} \
    >"$state_dir/dockerd.log" 2>&1 &
for _ in $(seq 300); do
    if DOCKER_HOST="unix://$socket" docker version >/dev/null 2>&1; then
        echo "export DOCKER_HOST=unix://$socket"
        exit 0
    fi
    if ! kill -0 $! 2>/dev/null; then
        echo "start-docker-engine: dockerd exited; last log lines:" >&2
        tail -n 20 "$state_dir/dockerd.log" >&2
        exit 4
    fi
    sleep 0.1
done
echo "start-docker-engine: dockerd did not answer within 30 s (see $state_dir/dockerd.log)" >&2
exit 5
