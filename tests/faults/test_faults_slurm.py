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
    slurm_runs,
    start_submitter,
    wait_for,
)

from smartbkg_prod.backends import get_backend
from smartbkg_prod.errors import SubmitError
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
        runs=slurm_runs(
            slurm_cluster.directory / "log" / "jobcomp.txt",
            campaign.name,
            store,
            campaign.campaign_id,
        ),
        runs_allowed=campaign.retry.max_attempts,
    )
    assert status.complete, slurm_cluster.logs()
    assert truncated, "job 2's first output should have been truncated"
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 2, 1: 2, 2: 2}
    assert (cover.lost, cover.duplicated) == (0, 0), cover
    assert_same_content(output_dir, reference_outputs)


# Issue 24's setup: jobs long enough that the driver is killed while Slurm runs them.
RESUME_JOBS, RESUME_EVENTS_PER_JOB = 6, 30_000


def test_submitter_killed_while_slurm_runs_the_jobs_follows_them_instead_of_rerunning(
    slurm_cluster, tmp_path, fault_table
):
    """SIGKILL the submitter while its array tasks run on Slurm, then `submit` again: the
    new driver finds the tasks through the ids stored at submission, follows them and
    ingests their reports. Every event is there once, and Slurm's own records show each
    job ran once (before issue 24: 12 runs for 6 jobs, every job submitted again)."""
    campaign = fault_campaign(
        tmp_path / "out",
        name="slurmresume",
        events=RESUME_JOBS * RESUME_EVENTS_PER_JOB,
        events_per_job=RESUME_EVENTS_PER_JOB,
        backend={"name": "slurm"},
    )
    store = Store(f"sqlite:///{tmp_path / 'slurm.db'}")
    submitter = start_submitter(campaign, store, tmp_path)

    def tasks_running() -> bool:
        queue = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-n", campaign.name, "-o", "%i"],
            capture_output=True,
            text=True,
        )
        return bool(queue.stdout.strip())

    try:
        wait_for(tasks_running, 120, "array tasks running")
    finally:
        submitter.send_signal(signal.SIGKILL)
        submitter.wait()
    assert tasks_running(), "the tasks should outlive the submitter"
    status = submit_campaign(
        campaign, store=store, backend=get_backend("slurm", campaign), poll_interval=2
    )
    output_dir = campaign_output_dir(campaign)
    cover = coverage(campaign, output_dir, store)
    reports = sorted(output_dir.glob("*.report.json"))
    runs = slurm_runs(
        slurm_cluster.directory / "log" / "jobcomp.txt",
        campaign.name,
        store,
        campaign.campaign_id,
    )
    fault_table.record(
        f"submitter SIGKILLed while {RESUME_JOBS} array tasks x {RESUME_EVENTS_PER_JOB} events "
        "run, restarted (tasks followed, not rerun)",
        1,
        bool(status.complete and cover.exact),
        cover,
        backend="slurm",
        note=f"{len(reports)} reports; Slurm runs per job {runs}",
        runs=runs,
        runs_allowed=campaign.retry.max_attempts,
    )
    assert status.complete, slurm_cluster.logs()
    assert status.events_generated == campaign.events == 180_000
    assert (cover.lost, cover.duplicated) == (0, 0), cover
    assert [path.name.split(".")[-3] for path in reports] == ["attempt1"] * RESUME_JOBS, reports
    assert store.campaigns.job_attempts(campaign.campaign_id) == dict.fromkeys(
        range(RESUME_JOBS), 1
    )
    assert runs == dict.fromkeys(range(RESUME_JOBS), 1), runs
