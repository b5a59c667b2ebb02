#!/usr/bin/env bash
# Install everything the test suite needs, check the import contracts (pyproject.toml,
# [tool.importlinter]) and run the tests (README command (b), run by CI).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q -e ".[test]"
lint-imports
python3 -m pytest -q "$@"
