#!/usr/bin/env bash
# The fault-injection suite (tests/faults: local campaigns and a real single-node Slurm
# cluster) as one command; writes benchmarks/results/faults.json and faults.md (the table
# of fault, injections, recovered, events lost, events duplicated) and prints the table.
# Extra arguments go to pytest, e.g. `bash scripts/run-fault-suite.sh -m "not slurm"`.
set -euo pipefail
cd "$(dirname "$0")/.."
export SMARTBKG_FAULT_RESULTS="${SMARTBKG_FAULT_RESULTS:-benchmarks/results}"
python3 -m pytest -q -p no:cacheprovider tests/faults "$@"
cat "$SMARTBKG_FAULT_RESULTS/faults.md"
