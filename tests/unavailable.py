"""What a test does when a real component it needs cannot be had here.

Locally, a test whose engine or server cannot start (Slurm, PostgreSQL, PanDA, Docker,
Chromium) or whose dependency is missing is skipped, with the reason. Under ``CI=true``
the same reason fails it: ``bash scripts/test.sh`` installs everything the suite needs,
so there a missing piece is a broken setup, and a run must not go green by skipping.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True where CI runs the suite (``CI=true``, as GitHub, GitLab and our .ci/run set)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under ``CI=true`` (one line, no traceback).

    Called at module level, it skips (or fails) the whole module.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing test component fails the run)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, install: str = "pip install -e '.[test]'") -> ModuleType:
    """Import ``name``, or :func:`unavailable` with what to install (pytest.importorskip,
    except that under CI=true a missing module fails)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        unavailable(f"cannot import {name} ({error}): {install}")


def run_start_script(
    command: list[str], what: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a start script (``bash scripts/start-….sh …``); if it fails, :func:`unavailable`
    with ``what`` and the last line it wrote on stderr (its one-line reason)."""
    try:
        started = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        unavailable(f"{what} did not start: {error}")
    if started.returncode != 0:
        lines = started.stderr.strip().splitlines() or ["no message"]
        unavailable(f"{what} did not start (exit {started.returncode}): {lines[-1]}")
    return started
