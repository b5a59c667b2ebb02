"""The driver's failure paths, on real engines where one runs here.

- A submission the engine refuses or cannot take is no attempt: the jobs stay pending, the
  engine's message is kept on them, ``submit`` exits with one line and can be resumed
  (HTCondor with no pool, through the real CLI; Slurm's sbatch refusing a partition, on
  the real test cluster).
- A suspended job is running, not failed (real Slurm: ``scontrol suspend``, in
  ``test_backend_slurm.py``).
- A held job is removed only once the engine's own release window has passed, or at once
  for a hold no release fixes (HTCondor: event log in HTCondor's format, Schedd.act with
  its transport replaced, see ``htcondor_wire.py``; no pool can run here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from unavailable import require_module

from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.recovery.records import campaign_records
from smartbkg_prod.spec import Campaign, dump_campaign
from smartbkg_prod.store import Store
from smartbkg_prod.store.tables import AttemptRow

pytest_plugins = ["slurm_fixture"]  # the real-cluster fixture `slurm_cluster`


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line, with no HTCondor configuration (no pool here)."""
    env = {name: value for name, value in os.environ.items() if name != "CONDOR_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def two_job_spec(tmp_path: Path, backend: dict) -> Path:
    campaign = Campaign(
        name="refused",
        process="bbbar_mixed",
        events=20,
        events_per_job=10,
        resources={"memory_mb": 500, "walltime_s": 600},
        backend=backend,
        outputs={"directory": str(tmp_path / "out")},
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(dump_campaign(campaign))
    return spec


def status_of(db: str) -> dict:
    result = cli("status", "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    (status,) = json.loads(result.stdout)
    return status


def assert_refused_without_attempts(db: str, message: str, recovery: bool = True) -> dict:
    status = status_of(db)
    assert status["failed_attempts"] == 0
    assert status["jobs_by_state"]["pending"] == 2
    assert status["jobs_submit_refused"] == 2
    assert message in status["submit_error"]
    with Store(db).session() as session:
        assert session.scalars(select(AttemptRow)).all() == []
    if recovery:  # recovery sees no worker failure to act on
        recover = cli("recover", "list", "--db", db)
        assert recover.returncode == 0, recover.stderr
        assert "no open recommendations" in recover.stdout
    return status


@pytest.mark.slow
def test_htcondor_without_a_pool_uses_no_attempt_and_names_the_schedd(tmp_path):
    require_module("htcondor2")
    spec = two_job_spec(tmp_path, {"name": "htcondor"})
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    for again in (False, True):  # a second try changes nothing either
        result = cli("submit", str(spec), "--backend", "htcondor", "--db", db)
        assert result.returncode != 0
        assert_refused_without_attempts(db, "cannot reach the local schedd", recovery=not again)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: htcondor: cannot reach the local schedd")
        assert "no attempt used" in line
    shown = cli("status", "--db", db)
    assert "refused    2 job(s) not taken by the engine (no attempt used)" in shown.stdout


# -- Slurm, on the real test cluster ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_refusing_a_partition_uses_no_attempt_then_resumes(slurm_cluster, tmp_path):
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    spec = two_job_spec(tmp_path, {"name": "slurm", "queue": "nosuchpartition"})
    result = cli("submit", str(spec), "--db", db)
    assert result.returncode != 0
    assert_refused_without_attempts(db, "sbatch")
    (line,) = result.stderr.strip().splitlines()
    assert "invalid partition" in line.lower() and "no attempt used" in line, line
    # The same campaign (the queue is not part of its id) on the cluster's own partition.
    spec = two_job_spec(tmp_path, {"name": "slurm"})
    result = cli("submit", str(spec), "--db", db)
    assert result.returncode == 0, result.stderr + slurm_cluster.logs()
    status = status_of(db)
    assert status["complete"] and status["failed_attempts"] == 0
    assert (status["jobs_submit_refused"], status["submit_error"]) == (0, None)
    with Store(db).session() as session:
        assert sorted(session.scalars(select(AttemptRow.attempt))) == [1, 1]


def scontrol(*args: str) -> None:
    result = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"scontrol {' '.join(args)}: {result.stderr}"


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)
    return value


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_holds_and_jobs_pending_too_long_follow_the_written_policy(slurm_cluster, tmp_path):
    """With the node drained both jobs stay pending: past backend.pending_timeout_s each is
    reported stuck (status shows it), not cancelled. Then job 0 is held by an administrator
    (`scontrol hold`: JobHeldAdmin): the driver removes it, checks it is gone, counts a
    failed attempt and submits it again. Job 1 is held by its user (`scontrol uhold`:
    JobHeldUser): the driver waits, and status shows it held until it is released."""
    from smartbkg_prod.backends import get_backend
    from smartbkg_prod.submit import submit_campaign

    campaign = Campaign(
        name="slurmholds",
        process="bbbar_mixed",
        events=20,
        events_per_job=10,
        resources={"memory_mb": 500, "walltime_s": 600},
        retry={"max_attempts": 2},
        backend={"name": "slurm", "pending_timeout_s": 3},
        outputs={"directory": str(tmp_path / "out")},
    )
    store, campaign_id = Store(f"sqlite:///{tmp_path / 'jobs.db'}"), campaign.campaign_id
    result = {}

    def drive() -> None:
        backend = get_backend("slurm", campaign)
        result["status"] = submit_campaign(campaign, store=store, backend=backend, poll_interval=1)

    def status():
        return store.campaigns.status(campaign_id) if store.campaigns.ids() else None

    scontrol("update", "nodename=localhost", "state=drain", "reason=issue-24-test")
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    tasks = []
    try:
        stuck = wait_until(lambda: (s := status()) and s.attempts_stuck == 2 and s, 60, "stuck")
        assert "past backend.pending_timeout_s = 3" in stuck.engine_note
        assert stuck.jobs_by_state["running"] == 2 and stuck.failed_attempts == 0
        tasks = [a.backend_job_id for a in store.engine.attempts(campaign_id)]
        scontrol("hold", tasks[0])
        scontrol("uhold", tasks[1])
        wait_until(lambda: store.campaigns.job_attempts(campaign_id)[0] == 2, 60, "a retry")
        held = wait_until(lambda: (s := status()).attempts_held == 1 and s, 60, "a held job")
        assert "held by a person" in held.engine_note and held.failed_attempts == 1
    finally:
        scontrol("update", "nodename=localhost", "state=resume")
        for task in tasks[1:]:
            scontrol("release", task)
    driver.join(300)
    assert result["status"].complete, slurm_cluster.logs()
    with store.session() as session:
        rows = session.execute(
            select(AttemptRow.attempt, AttemptRow.state, AttemptRow.native_code)
        ).all()
    assert sorted(map(tuple, rows)) == [
        (1, "done", None),
        (1, "failed", "slurm:HELD/JobHeldAdmin"),
        (2, "done", None),
    ]


# -- HTCondor holds, through the event log and Schedd.act ---------------------------------------


@pytest.mark.slow
def test_driver_waits_out_periodic_release_and_removes_holds_nothing_releases(
    monkeypatch, tmp_path
):
    """Job 0 is held for an input transfer error, which the job's periodic_release fixes: the driver
    leaves it to the schedd, it is released and succeeds. Job 1 is held for memory, which no
    release fixes: the driver removes it through Schedd.act at once, waits until the log
    shows it gone, counts a failure and submits its next attempt, which succeeds."""
    require_module("htcondor2")
    from htcondor_wire import PoolOnRecords, install_wire, use_schedd

    from smartbkg_prod.backends.htcondor import HTCondorBackend
    from smartbkg_prod.submit import submit_campaign

    campaign = Campaign(
        name="holds",
        process="bbbar_mixed",
        events=20,
        events_per_job=10,
        retry={"max_attempts": 2},
        backend={"name": "htcondor", "options": {"shared_filesystem": "true"}},
        outputs={"directory": str(tmp_path / "out")},
    )
    output_dir = tmp_path / "out" / campaign.campaign_id
    pool = PoolOnRecords(output_dir / "holds.htcondor.log", procs=[2, 1])
    pool.install(monkeypatch)
    wire = install_wire(monkeypatch)
    backend = use_schedd(monkeypatch, HTCondorBackend.from_campaign(campaign))
    removed: list[list[str]] = []

    def removals() -> list[str]:
        return [call[2] for call in wire.calls if call[0] == "act"]

    def run_worker(cluster: int, job: int, attempt: int) -> None:
        pool.write("001", cluster, 0)
        (job_list,) = (output_dir / "jobs" / "htcondor").glob(f"holds.{job}.a{attempt}.*.jsonl")
        worker = [sys.executable, "-m", "smartbkg_prod.cli", "worker", "--job", str(job_list)]
        subprocess.run([*worker, "--index", "0"], cwd=output_dir, check=True, capture_output=True)
        pool.write("005", cluster, 0)

    def play() -> None:
        first = pool.submissions.get(timeout=60)
        # Job 0's input transfer fails before it starts: a hold its periodic_release fixes
        # without running the payload twice (only never-started jobs are released).
        pool.write("001", first, 1)
        pool.write("012", first, 0, "781.000.000")  # Code 13 Subcode 256: transfer input
        pool.write("012", first, 1, "781.001.000")  # Code 34 Subcode 102: memory
        deadline = time.monotonic() + 30
        while not removals() and time.monotonic() < deadline:
            time.sleep(0.05)
        removed.append(removals())
        # No retry while the held job may still be there: the next attempt is submitted
        # only once the schedd's log shows the removal (issue 24).
        time.sleep(1.0)
        assert pool.submissions.empty()
        pool.write("009", first, 1, "781.001.000")
        second = pool.submissions.get(timeout=30)  # job 1, attempt 2
        time.sleep(1.5)  # ~15 polls: job 0 stays held, nobody removes it
        removed.append(removals())
        pool.write("013", first, 0)
        run_worker(first, job=0, attempt=1)
        run_worker(second, job=1, attempt=2)

    player = threading.Thread(target=play)
    player.start()
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        status = submit_campaign(campaign, store=store, backend=backend, poll_interval=0.1)
    finally:
        player.join(120)
    assert removed == [["4242.1"], ["4242.1"]]
    assert {call[0] for call in wire.calls} == {"act"}  # the schedd was never queried
    assert status.complete and status.failed_attempts == 1
    with store.session() as session:
        rows = session.execute(
            select(AttemptRow.backend_job_id, AttemptRow.state, AttemptRow.native_code)
        ).all()
    assert sorted(map(tuple, rows)) == [
        ("4242.0", "done", None),
        ("4242.1", "failed", "HoldReasonCode=34/102"),
        ("4243.0", "done", None),
    ]
    # The hold reason (the engine's words) reaches recovery's records as a log line.
    (held,) = [r for r in campaign_records(store, campaign.campaign_id) if r.exit_code]
    assert any(line.startswith("htcondor: ") for line in held.log_lines), held.log_lines


def test_a_refused_retry_leaves_the_job_as_it_was_with_the_message_redacted(
    store, small_campaign, tmp_path, monkeypatch
):
    """A job out of attempts (failed) that a resumed submit tries again, refused: still
    failed, its attempts unchanged, the engine's words kept without the credential."""
    monkeypatch.setenv("PANDA_AUTH_ID_TOKEN", "s3cr3t-token-value")
    job = plan_jobs(small_campaign)[0]
    store.campaigns.register(small_campaign, plan_jobs(small_campaign), tmp_path)
    campaign_id = small_campaign.campaign_id
    attempt = store.attempts.start(job, "panda")
    store.attempts.finish(campaign_id, job.index, attempt, 50, "generator", final=True)
    assert store.campaigns.job_states(campaign_id)[job.index] == "failed"
    retry = store.attempts.start(job, "panda")
    store.attempts.withdraw(
        campaign_id,
        job.index,
        retry,
        "panda",
        "panda: cannot reach https://panda.example (token s3cr3t-token-value rejected)",
        state="failed",
    )
    assert store.campaigns.job_states(campaign_id)[job.index] == "failed"
    assert store.campaigns.job_attempts(campaign_id)[job.index] == 1
    assert store.attempts.refusals(campaign_id) == {
        job.index: "panda: cannot reach https://panda.example (token *** rejected)"
    }
    status = store.campaigns.status(campaign_id)
    assert (status.failed_attempts, status.jobs_submit_refused) == (1, 1)
    # The next accepted submission forgets the refusal.
    store.attempts.clear_refusals(campaign_id, [job.index])
    assert store.campaigns.status(campaign_id).submit_error is None
