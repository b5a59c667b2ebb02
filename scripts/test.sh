#!/usr/bin/env bash
# Install everything the test suite needs and run it (README command (b), run by CI).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q -e ".[test]"
python3 -m pytest -q "$@"
