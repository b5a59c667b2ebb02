"""Shared fixtures: real campaigns, real databases, real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'jobs.db'}")


@pytest.fixture
def small_campaign(tmp_path: Path) -> Campaign:
    """Three jobs of generic B Bbar with a short last job, writing under tmp_path."""
    return Campaign(
        name="small",
        process="bbbar_generic",
        events=750,
        events_per_job=300,
        seed=7,
        outputs={"directory": str(tmp_path / "out")},
        backend={"max_parallel": 2},
    )


@pytest.fixture(autouse=True)
def _no_injected_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell variable must never leak into a test's workers.
    monkeypatch.delenv("SMARTBKG_INJECT_FAULT", raising=False)
    monkeypatch.delenv("SMARTBKG_DB", raising=False)


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_report_header(config) -> str:
    return f"smartbkg-prod tests; cpu count {os.cpu_count()}"
