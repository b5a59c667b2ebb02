"""Processes racing on one database: several opening a new SQLite file at once, and two
submitters started on the same campaign."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from fault_harness import assert_same_content, coverage, fault_campaign

from smartbkg_prod.errors import StoreError
from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.spec import dump_campaign
from smartbkg_prod.store import LEASE_STALE_S, Store
from smartbkg_prod.store.tables import DriverLeaseRow

OPEN_STORE = "import sys; from smartbkg_prod.store import Store; Store(sys.argv[1])"


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path):
    """`submit` and `monitor serve` started together on a new file both create the tables:
    the loser used to fail with 'table ... already exists'."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    openers = [
        subprocess.Popen([sys.executable, "-c", OPEN_STORE, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [(opener.wait(timeout=120), opener.stderr.read()) for opener in openers]
    assert all(code == 0 for code, _ in errors), errors
    assert Store(url).campaigns.ids() == []


@pytest.mark.slow
def test_a_second_submitter_of_a_running_campaign_refuses_to_start(
    tmp_path, fault_table, reference_outputs
):
    """One driver per campaign (a lease in the store): the second `submit` says who drives
    it and exits 1, instead of closing the first one's attempts as lost and running them
    again (which used to cost extra attempts, checksum failures and a confusing exit)."""
    campaign = fault_campaign(tmp_path / "out")
    spec = tmp_path / "faults.yaml"
    spec.write_text(dump_campaign(campaign))
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    command = [sys.executable, "-m", "smartbkg_prod.cli", "submit", str(spec), "--db", store.url]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    codes = sorted([first.wait(timeout=300), second.wait(timeout=300)])
    cover = coverage(campaign, campaign_output_dir(campaign), store)
    fault_table.record(
        "second submitter started on a running campaign (refused)",
        1,
        bool(store.campaigns.status(campaign.campaign_id).complete and cover.exact),
        cover,
    )
    assert cover.exact
    assert_same_content(campaign_output_dir(campaign), reference_outputs)
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 1, 1: 1, 2: 1}
    assert codes == [0, 1]
    assert "being driven" in first.stderr.read() + second.stderr.read()


def lease(store: Store, campaign_id: str, host: str, pid: int, age_s: float) -> None:
    with store.session() as session:
        session.add(
            DriverLeaseRow(
                campaign_id=campaign_id,
                holder=f"{host}:{pid}",
                host=host,
                pid=pid,
                heartbeat=time.time() - age_s,
            )
        )


def test_driver_lease_is_kept_by_a_live_local_process_and_taken_from_dead_or_silent_ones():
    store = Store("sqlite://")
    here = socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease(store, "slow", here, sleeper.pid, age_s=1000)  # alive, just slow to renew
        with pytest.raises(StoreError, match="being driven by another submitter"):
            store.leases.acquire("slow", "me")
    finally:
        sleeper.kill()
        sleeper.wait()
    store.leases.acquire("slow", "me")  # its process is gone
    lease(store, "remote-live", "elsewhere", 1, age_s=5)
    with pytest.raises(StoreError, match="pid 1 on elsewhere"):
        store.leases.acquire("remote-live", "me")
    lease(store, "remote-silent", "elsewhere", 1, age_s=LEASE_STALE_S + 1)
    store.leases.acquire("remote-silent", "me")
    store.leases.renew("remote-silent", "me")
    with pytest.raises(StoreError, match="taken over"):
        store.leases.renew("remote-silent", "someone-else")


REGISTER = """
import sys, time
from pathlib import Path
from smartbkg_prod.plan import iter_jobs
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store
store = Store(sys.argv[1])
campaign = Campaign(name="race", process="bbbar_mixed", events=20000, events_per_job=10)
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(store.campaigns.register(campaign, iter_jobs(campaign), Path("/tmp/race")))
"""


def test_submitters_registering_one_campaign_at_once_do_not_fail(tmp_path):
    """Two `submit`s of a new campaign at the same moment: the loser of the insert used to
    die with an IntegrityError traceback."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    Store(url)
    start = time.time() + 3
    registrars = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [registrar.communicate(timeout=120) for registrar in registrars]
    assert all(registrar.returncode == 0 for registrar in registrars), results
    assert sorted(out.strip() for out, _ in results) == ["False", "False", "True"]
    store = Store(url)
    [campaign_id] = store.campaigns.ids()
    assert len(store.campaigns.job_states(campaign_id)) == 2000
