"""Fault injection on real local campaigns: every fault is recovered with each planned
event produced exactly once, and with the same content as a run without faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_harness import (
    MisbehavingBackend,
    assert_same_content,
    coverage,
    fault_campaign,
    local_runs,
    output_files,
    pid_alive,
    start_submitter,
    wait_for,
)
from sqlalchemy import func, select

from smartbkg_prod.backends.local import LocalBackend
from smartbkg_prod.errors import StoreError, SubmitError
from smartbkg_prod.monitor.collect import collect_directory
from smartbkg_prod.plan import JobInput, campaign_output_dir, plan_jobs
from smartbkg_prod.report import read_report
from smartbkg_prod.store import DONE, RUNNING, Store
from smartbkg_prod.store.tables import AttemptRow, JobRow
from smartbkg_prod.submit import submit_campaign

pytestmark = pytest.mark.slow


@pytest.fixture
def campaign(tmp_path):
    return fault_campaign(tmp_path / "out")


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'jobs.db'}")


def run(campaign, store, backend=None, **kwargs):
    return submit_campaign(
        campaign, store=store, backend=backend or LocalBackend(), poll_interval=0.05, **kwargs
    )


def failed_attempts(store: Store, campaign, exit_code: int | None = None) -> int:
    with store.session() as session:
        query = (
            select(func.count())
            .select_from(AttemptRow)
            .join(JobRow, AttemptRow.job_id == JobRow.id)
            .where(JobRow.campaign_id == campaign.campaign_id, AttemptRow.state == "failed")
        )
        if exit_code is not None:
            query = query.where(AttemptRow.exit_code == exit_code)
        return session.scalar(query)


def check_and_record(
    fault_table, fault, injections, campaign, store, status, reference_outputs, note=""
):
    output_dir = campaign_output_dir(campaign)
    cover = coverage(campaign, output_dir, store)
    recovered = bool(status.complete and cover.exact)
    fault_table.record(
        fault,
        injections,
        recovered,
        cover,
        note=note,
        runs=local_runs(output_dir),
        runs_allowed=campaign.retry.max_attempts,
    )
    assert status.complete, status
    assert (cover.lost, cover.duplicated) == (0, 0), cover
    assert cover.events_read == campaign.events
    assert not list(output_dir.glob(".*.tmp")), "a temporary output file was left behind"
    assert_same_content(output_dir, reference_outputs)
    return cover


def test_worker_killed_during_generation(
    campaign, store, monkeypatch, fault_table, reference_outputs
):
    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT", "kill@generate:job=1:attempt=1;kill@generate:job=2:attempt=1"
    )
    status = run(campaign, store)
    assert failed_attempts(store, campaign, 137) == 2
    check_and_record(
        fault_table,
        "worker SIGKILL during generation",
        2,
        campaign,
        store,
        status,
        reference_outputs,
    )


def test_worker_killed_during_output_write(
    campaign, store, monkeypatch, fault_table, reference_outputs
):
    # Twice for job 0: the second attempt is killed too, after the first left a partial file.
    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT",
        "kill@write:job=0:attempt=1;kill@write:job=0:attempt=2;kill@write:job=2:attempt=1",
    )
    status = run(campaign, store)
    assert failed_attempts(store, campaign, 137) == 3
    check_and_record(
        fault_table,
        "worker SIGKILL during output write",
        3,
        campaign,
        store,
        status,
        reference_outputs,
    )


# -- disk full --------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (root can mount one); None when mounting is not permitted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_disk_full_while_writing(
    tmp_path, small_disk, store, monkeypatch, fault_table, reference_outputs
):
    """The output file system fills up as the first attempts write; space comes back once
    the failures are seen (an operator or a cleanup cron); the retries then succeed.

    On a real small file system (tmpfs) when mount is permitted; otherwise the worker runs
    under ``ulimit -f`` (EFBIG instead of ENOSPC, same code path in the worker)."""
    ballast = (small_disk or tmp_path) / "ballast"
    if small_disk is not None:
        campaign = fault_campaign(small_disk / "out")
        backend_inner = LocalBackend()
        method = "tmpfs of 8 MB, filled up to 16 kB free"

        def fill(_handles):
            if not ballast.exists() and not hasattr(fill, "done"):
                fill.done = True
                stats = os.statvfs(small_disk)
                size = stats.f_bavail * stats.f_frsize - 16 * 1024
                with open(ballast, "wb") as handle:
                    handle.truncate(0)
                    block = b"\0" * (1 << 20)
                    while size > 0:
                        handle.write(block[: min(size, len(block))])
                        size -= len(block)
    else:
        campaign = fault_campaign(tmp_path / "out")
        wrapper = tmp_path / "python-fsize"
        wrapper.write_text(
            f'#!/bin/bash\nif [ -e "{ballast}" ]; then ulimit -f 32; fi\nexec {sys.executable} "$@"\n'
        )
        wrapper.chmod(0o755)
        backend_inner = LocalBackend(python=str(wrapper))
        method = "mount not permitted: ulimit -f 32 (EFBIG)"

        def fill(_handles):
            if not hasattr(fill, "done"):
                fill.done = True
                ballast.write_bytes(b"")

    def free_space_after_failures(real_poll, _call):
        states = real_poll()
        if any(s.state == "failed" for s in states) and ballast.exists():
            ballast.unlink()
        return states

    backend = MisbehavingBackend(backend_inner, on_poll=free_space_after_failures, on_submit=fill)
    status = run(campaign, store, backend=backend)
    injections = failed_attempts(store, campaign)
    assert injections >= 1
    with store.session() as session:
        codes = sorted(
            set(session.scalars(select(AttemptRow.exit_code).where(AttemptRow.state == "failed")))
        )
    # STAGE_OUT (60) from the worker; 120 when Python also cannot flush its log at exit.
    assert set(codes) <= {60, 120}, codes
    method += f"; failed attempts exited {codes}"
    check_and_record(
        fault_table,
        "disk full while writing",
        injections,
        campaign,
        store,
        status,
        reference_outputs,
        note=method,
    )


# -- corrupted or truncated outputs ---------------------------------------------------------
def truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def flip_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_output_truncated_before_validation_is_reproduced(
    campaign, store, fault_table, reference_outputs
):
    """Between the worker's rename and the driver's check (a storage glitch): the checksum
    in the report no longer matches, the attempt fails validation and runs again."""
    damaged = []

    def damage_first_success(real_poll, _call):
        states = real_poll()
        for state in states:
            if state.state == "done" and state.handle.attempt == 1 and len(damaged) < 2:
                path = campaign_output_dir(campaign) / (
                    f"{campaign.campaign_id}.job{state.handle.job_index:06d}.root"
                )
                (truncate if not damaged else flip_byte)(path)
                damaged.append(state.handle.job_index)
        return states

    status = run(campaign, store, backend=MisbehavingBackend(LocalBackend(), damage_first_success))
    assert len(damaged) == 2
    assert failed_attempts(store, campaign, 61) == 2  # OUTPUT_VALIDATION
    check_and_record(
        fault_table,
        "output truncated / corrupted before validation",
        2,
        campaign,
        store,
        status,
        reference_outputs,
    )


def test_output_damaged_after_completion_is_found_at_resume_and_reproduced(
    campaign, store, fault_table, reference_outputs
):
    first = run(campaign, store)
    assert first.complete
    files = output_files(campaign_output_dir(campaign))
    truncate(files[0])
    flip_byte(files[1])
    files[2].unlink()
    resumed = run(campaign, store, verify_outputs="sha256")
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 2, 1: 2, 2: 2}
    check_and_record(
        fault_table,
        "output truncated / corrupted / deleted, found at resume",
        3,
        campaign,
        store,
        resumed,
        reference_outputs,
    )


def test_truncated_output_is_found_at_resume_by_the_default_size_check(campaign, store):
    run(campaign, store)
    truncate(output_files(campaign_output_dir(campaign))[1])
    resumed = run(campaign, store)
    assert resumed.complete
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 1, 1: 2, 2: 1}
    assert coverage(campaign, campaign_output_dir(campaign), store).exact


# -- reports never, twice, late --------------------------------------------------------------
def test_report_never_delivered(campaign, store, monkeypatch, fault_table, reference_outputs):
    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT", "exit=0@report:job=0:attempt=1;exit=0@report:job=2:attempt=1"
    )
    status = run(campaign, store)
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 2, 1: 1, 2: 2}
    check_and_record(
        fault_table, "report never delivered", 2, campaign, store, status, reference_outputs
    )


def test_report_delivered_twice(campaign, store, fault_table, reference_outputs):
    """The engine announces each finished attempt twice (in one poll and in the next), and
    every report file is then ingested twice more, by the store and by monitor collect."""
    seen_done = []

    def repeat_terminal_states(real_poll, _call):
        states = real_poll()
        terminal = [s for s in states if s.state in {"done", "failed"}]
        replay = list(seen_done)
        seen_done.extend(terminal)
        return states + terminal + replay

    status = run(
        campaign, store, backend=MisbehavingBackend(LocalBackend(), repeat_terminal_states)
    )
    before = store.campaigns.status(campaign.campaign_id)
    output_dir = campaign_output_dir(campaign)
    reports = [read_report(path) for path in sorted(output_dir.glob("*.report.json"))]
    assert not any(store.reports.record(report) for report in reports)
    assert collect_directory(store, output_dir).duplicates == len(reports)
    assert collect_directory(store, output_dir).stored == 0
    assert store.campaigns.status(campaign.campaign_id) == before
    check_and_record(
        fault_table,
        "report delivered twice (engine + store + collect)",
        2 * len(reports) + len(seen_done),
        campaign,
        store,
        status,
        reference_outputs,
    )


def test_report_delivered_late(campaign, store, fault_table, reference_outputs):
    """Job 1's first report is held back until the driver has given the attempt up as
    lost and produced the job again; it then arrives and is ingested."""
    held = {}

    def hold_report(real_poll, _call):
        states = real_poll()
        for state in states:
            handle = state.handle
            if (handle.job_index, handle.attempt) == (1, 1) and state.state == "done":
                report = campaign_output_dir(campaign) / (
                    f"{campaign.campaign_id}.job000001.attempt1.report.json"
                )
                held["path"] = report
                held["late"] = report.with_name(report.name + ".late")
                report.rename(held["late"])
        return states

    status = run(campaign, store, backend=MisbehavingBackend(LocalBackend(), hold_report))
    assert store.campaigns.job_attempts(campaign.campaign_id)[1] == 2
    held["late"].rename(held["path"])
    result = collect_directory(store, campaign_output_dir(campaign))
    assert result.stored == 1 and not result.rejected
    after = store.campaigns.status(campaign.campaign_id)
    assert after.events_generated == campaign.events and after.complete
    check_and_record(
        fault_table, "report delivered late", 1, campaign, store, after, reference_outputs
    )
    assert status.events_generated == after.events_generated


# -- the store --------------------------------------------------------------------------------
LOCK_SECONDS = 5.0
HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
db.execute("UPDATE jobs SET updated_at = updated_at")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_store_locked_by_a_concurrent_writer(campaign, tmp_path, fault_table, reference_outputs):
    """Another process holds SQLite's write lock for 5 s right after the first submission:
    the driver waits (busy timeout) instead of failing, and nothing is lost."""
    db_file = tmp_path / "locked.db"
    store = Store(f"sqlite:///{db_file}")
    lockers = []

    def lock_after_first_submit(_handles):
        if lockers:
            return
        locker = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(db_file), str(LOCK_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout.readline().strip() == "locked"
        lockers.append((locker, time.time()))

    started = time.time()
    status = run(
        campaign,
        store,
        backend=MisbehavingBackend(LocalBackend(), on_submit=lock_after_first_submit),
    )
    locker, locked_at = lockers[0]
    assert locker.wait(timeout=30) == 0
    assert time.time() - started >= LOCK_SECONDS
    check_and_record(
        fault_table,
        f"store locked by a concurrent writer ({LOCK_SECONDS:.0f} s)",
        1,
        campaign,
        store,
        status,
        reference_outputs,
    )


def test_store_locked_past_the_busy_timeout_is_a_clear_error_then_resume(
    campaign, tmp_path, monkeypatch, fault_table, reference_outputs
):
    """A writer holds the lock longer than the busy timeout (shortened to 0.5 s here): the
    driver stops with one clear StoreError instead of a traceback, and a resume after the
    lock is gone completes the campaign; workers started before the error are absorbed."""
    import smartbkg_prod.store.database as database_module

    monkeypatch.setattr(database_module, "SQLITE_BUSY_TIMEOUT_MS", 500)
    db_file = tmp_path / "locked.db"
    store = Store(f"sqlite:///{db_file}")
    lockers = []

    def lock_after_first_submit(_handles):
        if not lockers:
            locker = subprocess.Popen(
                [sys.executable, "-c", HOLD_LOCK, str(db_file), "3"],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert locker.stdout.readline().strip() == "locked"
            lockers.append(locker)

    backend = MisbehavingBackend(LocalBackend(), on_submit=lock_after_first_submit)
    with pytest.raises(StoreError, match="another writer holding it too long"):
        run(campaign, store, backend=backend)
    assert lockers[0].wait(timeout=30) == 0
    status = run(campaign, store)
    worker_pids = [int(pid) for pid in store_pids(store, campaign) if pid]
    wait_for(lambda: not any(pid_alive(pid) for pid in worker_pids), 120, "workers to end")
    collect_directory(store, campaign_output_dir(campaign))
    check_and_record(
        fault_table,
        "store locked past the busy timeout: clear error, then resume",
        1,
        campaign,
        store,
        store.campaigns.status(campaign.campaign_id),
        reference_outputs,
    )
    assert status.complete


def store_pids(store: Store, campaign) -> list[str | None]:
    with store.session() as session:
        return list(
            session.scalars(
                select(AttemptRow.backend_job_id)
                .join(JobRow, AttemptRow.job_id == JobRow.id)
                .where(JobRow.campaign_id == campaign.campaign_id)
            )
        )


# -- the submitter itself ---------------------------------------------------------------------
def running_worker_pids(store: Store, campaign) -> list[int]:
    with store.session() as session:
        ids = session.scalars(
            select(AttemptRow.backend_job_id)
            .join(JobRow, AttemptRow.job_id == JobRow.id)
            .where(JobRow.campaign_id == campaign.campaign_id, AttemptRow.state == RUNNING)
        )
        return [int(pid) for pid in ids if pid]


def test_submitter_killed_and_restarted(campaign, store, tmp_path, fault_table, reference_outputs):
    """SIGKILL the submitting process while one job is done and others run. Its workers live
    on (own sessions); a new submitter adopts them by pid from the store and ingests their
    reports. Nothing is lost, counted twice or run twice."""
    submitter = start_submitter(campaign, store, tmp_path)

    def one_done_and_one_just_started() -> bool:
        # A worker started less than a second ago has seconds of work left: it will
        # certainly outlive the submitter.
        states = store.campaigns.job_states(campaign.campaign_id) if store.campaigns.ids() else {}
        with store.session() as session:
            started = session.scalars(
                select(AttemptRow.submitted_at)
                .join(JobRow, AttemptRow.job_id == JobRow.id)
                .where(JobRow.campaign_id == campaign.campaign_id, AttemptRow.state == RUNNING)
            ).all()
        return DONE in states.values() and any(time.time() - t < 1.0 for t in started)

    try:
        wait_for(one_done_and_one_just_started, 120, "a done job and a worker just started")
    finally:
        submitter.send_signal(signal.SIGKILL)
        submitter.wait()
    orphans = [pid for pid in running_worker_pids(store, campaign) if pid_alive(pid)]
    assert orphans, "the submitter's workers should outlive it"

    status = run(campaign, store)
    wait_for(lambda: not any(pid_alive(pid) for pid in orphans), 120, "orphaned workers to end")
    collected = collect_directory(store, campaign_output_dir(campaign))
    assert not collected.rejected and not collected.unreadable
    after = store.campaigns.status(campaign.campaign_id)
    check_and_record(
        fault_table,
        "submitter SIGKILLed mid-campaign, restarted (workers still running)",
        1,
        campaign,
        store,
        after,
        reference_outputs,
        note=f"{len(orphans)} orphaned worker(s) still running at restart",
    )
    assert status.complete and after.events_generated == campaign.events
    # The new submitter followed the orphaned workers (by pid) instead of running their
    # jobs again (issue 24): one attempt, one report file per job.
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 1, 1: 1, 2: 1}
    reports = sorted(campaign_output_dir(campaign).glob("*.report.json"))
    assert [path.name.split(".")[-3] for path in reports] == ["attempt1"] * 3, reports
    assert run(campaign, store, verify_outputs="sha256").complete
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 1, 1: 1, 2: 1}


def test_a_worker_whose_pid_never_reached_the_store_is_found_by_its_job_file(campaign, store):
    """The submitter SIGKILLed after starting a worker but before storing its pid (issue 24):
    the attempt is open without identity while its worker runs. The next submitter finds
    the worker by its job file and follows it instead of running the job a second time."""
    output_dir = campaign_output_dir(campaign)
    output_dir.mkdir(parents=True)
    jobs = plan_jobs(campaign)
    store.campaigns.register(campaign, jobs, output_dir)
    job_input = JobInput(
        job=jobs[2],
        campaign=campaign,
        attempt=store.attempts.start(jobs[2], "local"),
        output_dir=str(output_dir),
        backend="local",
    )
    # What the kill leaves: a real worker of attempt 1, and no pid or identity stored.
    [orphan] = LocalBackend().submit(campaign, [job_input])
    pid = int(orphan.backend_job_id)
    assert store.engine.open(campaign.campaign_id) == [] and pid_alive(pid)
    try:
        status = run(campaign, store)
    finally:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    assert status.complete and status.events_generated == campaign.events
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 1, 1: 1, 2: 1}
    reports = sorted(output_dir.glob("*.report.json"))
    assert [path.name.split(".")[-3] for path in reports] == ["attempt1"] * 3, reports
    [found] = [
        record for record in store.engine.attempts(campaign.campaign_id) if record.job_index == 2
    ]
    assert (found.backend_job_id, found.phase) == (str(pid), "finished")


# -- the backend's poll ------------------------------------------------------------------------
def test_transient_poll_errors_and_timeouts_are_survived(
    campaign, store, fault_table, reference_outputs
):
    failing_calls = {2, 3, 4, 7}

    def flaky(real_poll, call):
        if call in failing_calls:
            if call == 7:
                raise TimeoutError("poll timed out")
            raise SubmitError("squeue: slurm_load_jobs error: Socket timed out")
        return real_poll()

    backend = MisbehavingBackend(LocalBackend(), flaky)
    status = run(campaign, store, backend=backend)
    assert backend.poll_calls > max(failing_calls)
    check_and_record(
        fault_table,
        "backend poll errors / timeouts (transient)",
        len(failing_calls),
        campaign,
        store,
        status,
        reference_outputs,
    )


def test_persistent_poll_failure_stops_with_a_clear_error_and_resume_completes(
    campaign, store, fault_table, reference_outputs
):
    def broken(_real_poll, _call):
        raise SubmitError("condor_q: Failed to connect to schedd")

    backend = MisbehavingBackend(LocalBackend(), broken)
    with pytest.raises(SubmitError, match=r"poll failed .* times in a row.*re-run submit"):
        run(campaign, store, backend=backend, poll_retries=3)
    assert backend.poll_calls == 3
    status = run(campaign, store)
    check_and_record(
        fault_table,
        "backend poll fails persistently: clear error, then resume",
        3,
        campaign,
        store,
        status,
        reference_outputs,
    )


def test_fault_free_reference_is_exact(reference_outputs):
    campaign = fault_campaign(reference_outputs.parent)
    assert coverage(campaign, reference_outputs).exact
