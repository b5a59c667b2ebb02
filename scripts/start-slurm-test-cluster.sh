#!/usr/bin/env bash
# Start a private single-node Slurm cluster (slurmctld + slurmd + its own munged) whose
# config, state, logs, munge socket and ports all live under one directory, so it never
# touches /etc/slurm or a system munged and several clusters can coexist.
#
#   bash scripts/start-slurm-test-cluster.sh [DIR]     # prints: export SLURM_CONF=DIR/slurm.conf
#   eval "$(bash scripts/start-slurm-test-cluster.sh)" && sinfo
#   bash scripts/stop-slurm-test-cluster.sh DIR
#
# Needs root, and Debian's slurm-wlm + munge (installed here if missing, via
# scripts/install-system-deps.sh). The tests' fixture (tests/slurm_fixture.py) runs this.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$(mktemp -d /tmp/smartbkg-slurm.XXXXXX)}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

command -v slurmctld >/dev/null && command -v munged >/dev/null ||
    bash "$here/install-system-deps.sh" slurm-wlm munge >&2

mkdir -p "$dir"/{state,spool,log,munge}
# munged refuses keys and sockets in directories others can write to.
chmod 755 "$dir"
chown munge:munge "$dir/munge"
chmod 755 "$dir/munge"
if [ ! -s "$dir/munge/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
fi
socket="$dir/munge/munge.socket"
runuser -u munge -- /usr/sbin/munged --socket="$socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"

# Free TCP ports for the two daemons (a cluster started by someone else keeps its own).
read -r ctld_port slurmd_port < <(python3 - <<'EOF'
import socket
ports = []
sockets = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
    ports.append(s.getsockname()[1])
print(*ports)
EOF
)
cpus="$(nproc)"
# Leave headroom: the node advertises 3/4 of the machine's memory.
memory_mb="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 3 / 4}' /proc/meminfo)"

# --mem is a hard limit where the machine lets slurmd make memory cgroups (task/cgroup with
# ConstrainRAMSpace, as production clusters run): a job over it is OOM-killed and ends
# OUT_OF_MEMORY. Without a writable memory controller (or SMARTBKG_SLURM_CGROUP=no) the
# cluster runs task/none and --mem only books memory. Job ids start at a random number:
# the cgroups of several private clusters on one machine never share a job path.
task_plugin=task/none
select_parameters=CR_Core
rm -f "$dir/cgroup.conf"
cgroup_probe="/sys/fs/cgroup/memory/smartbkg-probe-$$"
if [ "${SMARTBKG_SLURM_CGROUP:-auto}" != no ] && [ -w /sys/fs/cgroup/memory ] &&
    mkdir "$cgroup_probe" 2>/dev/null; then
    rmdir "$cgroup_probe"
    task_plugin=task/cgroup
    # Memory becomes a consumable resource: --mem is what the job's cgroup may use; a job
    # without --mem gets DefMemPerCPU (below), not the whole node.
    select_parameters=CR_Core_Memory
    cat >"$dir/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
ConstrainCores=no
ConstrainDevices=no
EOF
fi
first_job_id=$(( (RANDOM % 30000 + 1) * 1000 ))

cat >"$dir/slurm.conf" <<EOF
ClusterName=smartbkgtest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=$select_parameters
DefMemPerCPU=1000
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
FirstJobId=$first_job_id
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MinJobAge=3600
SchedulerParameters=sched_interval=1
MaxArraySize=100001
NodeName=localhost CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost

# Ready when the node is idle (slurmd registered and nothing runs).
for _ in $(seq 1 100); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null || true)"
    if [ "$state" = "idle" ]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm test cluster in $dir did not become idle (node state: '${state:-none}'); logs in $dir/log" >&2
bash "$here/stop-slurm-test-cluster.sh" "$dir" >&2 || true
exit 1
