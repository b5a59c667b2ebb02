"""The same faults through a real single-node Slurm cluster (tests/slurm_fixture.py): a
worker killed while writing, a report never delivered, an output truncated before the
driver checks it, and squeue polls that fail; the campaign still holds every planned
event exactly once, with the content of the fault-free local run."""

from __future__ import annotations

import signal
import subprocess

import pytest
from fault_harness import (
    MisbehavingBackend,
    assert_same_content,
    coverage,
    fault_campaign,
    start_submitter,
    wait_for,
)

from smartbkg_prod.backends import get_backend
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.monitor.collect import collect_directory
from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.store import Store
from smartbkg_prod.submit import submit_campaign

pytest_plugins = ["slurm_fixture"]  # the real-cluster fixture `slurm_cluster`
pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def test_faults_on_a_real_slurm_cluster(
    slurm_cluster, tmp_path, monkeypatch, fault_table, reference_outputs
):
    campaign = fault_campaign(tmp_path / "out", backend={"name": "slurm", "max_parallel": 3})
    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT", "kill@write:job=0:attempt=1;exit=0@report:job=1:attempt=1"
    )
    output_dir = campaign_output_dir(campaign)
    truncated = []

    def misbehave(real_poll, call):
        if call in (2, 3):
            raise SubmitError(
                "slurm: squeue failed: slurm_load_jobs error: Socket timed out on send/recv"
            )
        states = real_poll()
        for state in states:
            if (state.handle.job_index, state.handle.attempt, state.state) == (2, 1, "done"):
                path = output_dir / f"{campaign.campaign_id}.job000002.root"
                if path.exists() and not truncated:
                    with open(path, "r+b") as handle:
                        handle.truncate(path.stat().st_size // 3)
                    truncated.append(path)
        return states

    store = Store(f"sqlite:///{tmp_path / 'slurm.db'}")
    backend = MisbehavingBackend(get_backend("slurm", campaign), on_poll=misbehave)
    status = submit_campaign(campaign, store=store, backend=backend, poll_interval=0.3)
    cover = coverage(campaign, output_dir, store)
    injections = 2 + 2 + len(truncated)
    fault_table.record(
        "SIGKILL@write + report never + output truncated + 2 squeue errors",
        injections,
        bool(status.complete and cover.exact),
        cover,
        backend="slurm",
    )
    assert status.complete, slurm_cluster.logs()
    assert truncated, "job 2's first output should have been truncated"
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 2, 1: 2, 2: 2}
    assert (cover.lost, cover.duplicated) == (0, 0), cover
    assert_same_content(output_dir, reference_outputs)


def test_submitter_killed_and_restarted_on_slurm(
    slurm_cluster, tmp_path, fault_table, reference_outputs
):
    """SIGKILL the submitter while array tasks run: they go on under slurmd; a new
    submitter resumes from the store, the tasks' late reports are collected afterwards,
    and every event is there once."""
    campaign = fault_campaign(tmp_path / "out", backend={"name": "slurm", "max_parallel": 3})
    store = Store(f"sqlite:///{tmp_path / 'slurm.db'}")
    submitter = start_submitter(campaign, store, tmp_path)

    def tasks_running() -> bool:
        queue = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True
        )
        return bool(queue.stdout.strip()) and bool(store.campaigns.ids())

    try:
        wait_for(tasks_running, 120, "array tasks running")
    finally:
        submitter.send_signal(signal.SIGKILL)
        submitter.wait()
    status = submit_campaign(
        campaign, store=store, backend=get_backend("slurm", campaign), poll_interval=0.3
    )
    wait_for(
        lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip(),
        180,
        "the killed submitter's tasks to end",
    )
    collect_directory(store, campaign_output_dir(campaign))
    after = store.campaigns.status(campaign.campaign_id)
    cover = coverage(campaign, campaign_output_dir(campaign), store)
    fault_table.record(
        "submitter SIGKILLed while array tasks run, restarted",
        1,
        bool(after.complete and cover.exact),
        cover,
        backend="slurm",
        note=f"attempts per job {store.campaigns.job_attempts(campaign.campaign_id)}",
    )
    assert status.complete, slurm_cluster.logs()
    assert (cover.lost, cover.duplicated) == (0, 0), cover
    assert_same_content(campaign_output_dir(campaign), reference_outputs)
