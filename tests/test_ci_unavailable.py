"""Under CI=true a test component that cannot be had fails the run with its one-line
reason; locally the test is skipped with the same reason (tests/unavailable.py).

Each case runs pytest in a subprocess on a small test module: one whose PostgreSQL
fixture gets a start script that does not exist, one that needs a module that is not
installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each case starts a pytest process (a few seconds).
pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent

BROKEN_START_SCRIPT = """
from pathlib import Path

import postgres_fixture
from postgres_fixture import postgres_server, postgres_url  # noqa: F401

postgres_fixture.SCRIPT = Path("/nonexistent/start-postgres-test-server.sh")


def test_uses_the_server(postgres_url):
    assert postgres_url
"""
BROKEN_START_REASON = (
    "the PostgreSQL test server did not start (exit 127): "
    "bash: /nonexistent/start-postgres-test-server.sh: No such file or directory"
)

MISSING_MODULE = """
from unavailable import require_module

require_module("smartbkg_no_such_module")


def test_uses_the_module():
    pass
"""
MISSING_MODULE_REASON = "cannot import smartbkg_no_such_module"


def run_pytest(tmp_path: Path, source: str, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_a_component.py").write_text(source)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [(BROKEN_START_SCRIPT, BROKEN_START_REASON), (MISSING_MODULE, MISSING_MODULE_REASON)],
    ids=["broken-start-script", "missing-module"],
)
def test_a_missing_component_fails_the_run_under_ci_with_its_reason(tmp_path, source, reason):
    result = run_pytest(tmp_path, source, ci=True)
    output = result.stdout + result.stderr
    assert result.returncode not in (0, 5), output
    assert "passed" not in output and "skipped" not in output, output
    assert reason in output, output
    assert "CI=true: a missing test component fails the run" in output, output


@pytest.mark.parametrize(
    ("source", "reason"),
    [(BROKEN_START_SCRIPT, BROKEN_START_REASON), (MISSING_MODULE, MISSING_MODULE_REASON)],
    ids=["broken-start-script", "missing-module"],
)
def test_a_missing_component_skips_locally_with_its_reason(tmp_path, source, reason):
    result = run_pytest(tmp_path, source, ci=False)
    output = result.stdout + result.stderr
    assert result.returncode in (0, 5), output  # 5: a skipped module leaves no test to run
    assert "1 skipped" in output, output
    assert reason in output, output
