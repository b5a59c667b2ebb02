"""Fixtures of the fault-injection suite: a fault-free reference run of the campaign every
fault test uses, and the results table (written when ``SMARTBKG_FAULT_RESULTS`` names a
directory, as ``scripts/run-fault-suite.sh`` does)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fault_harness import FaultTable, coverage, fault_campaign

from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.store import Store
from smartbkg_prod.submit import submit_campaign

RESULTS_ENV = "SMARTBKG_FAULT_RESULTS"


@pytest.fixture(scope="session")
def fault_table():
    table = FaultTable()
    started = time.time()
    yield table
    directory = os.environ.get(RESULTS_ENV)
    if directory and table.rows:
        table.write(Path(directory), time.time() - started)


@pytest.fixture(scope="session")
def reference_outputs(tmp_path_factory) -> Path:
    """Output directory of the campaign run once without any fault."""
    base = tmp_path_factory.mktemp("reference")
    campaign = fault_campaign(base / "out")
    store = Store(f"sqlite:///{base / 'jobs.db'}")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.delenv("SMARTBKG_INJECT_FAULT", raising=False)
    try:
        status = submit_campaign(campaign, store=store, poll_interval=0.05)
    finally:
        monkeypatch.undo()
    output_dir = campaign_output_dir(campaign)
    assert status.complete and coverage(campaign, output_dir, store).exact
    return output_dir
