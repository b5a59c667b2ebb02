"""A job made to fail under real pilots (panda-server + JEDI + panda-pilot 3, see
``tests/panda_fixture.py``): the worker fails job 1's first attempt (fault injection in the
pilots' environment), the pilot reports the failure with its own code, JEDI does not retry
it (``maxAttempt`` 1: the driver owns retries), and the driver's next attempt, a new task
submitted only once JEDI could not retry the old job, succeeds with every event once. The failed attempt keeps the worker's exit code and, beside it, the code
the server recorded for the job (``pilot:NNNN/exit``), which the recovery taxonomy reads.

Slow by nature: a pilot whose payload failed waits about two minutes before its final
update.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from unavailable import require_module

require_module("pandaclient")

from panda_fixture import pilot_pool  # noqa: E402
from test_panda_campaign import all_jobs, events_in_outputs, status, write_spec  # noqa: E402

pytestmark = [pytest.mark.panda, pytest.mark.slow]
pytest_plugins = ["panda_fixture"]  # the real-stack fixture `panda_stack`

REPO = Path(__file__).resolve().parents[1]
FAULT = "raise=SIMULATION@generate:job=1:attempt=1"


@pytest.fixture
def failing_pilots(panda_stack):
    """Pilots whose payloads fail job 1's first attempt in the simulation stage."""
    with pilot_pool(panda_stack, {"SMARTBKG_INJECT_FAULT": FAULT}):
        yield


def test_a_failed_job_is_retried_and_the_campaign_completes(panda_stack, failing_pilots, tmp_path):
    from sqlalchemy import select

    from smartbkg_prod.store import Store
    from smartbkg_prod.store.tables import AttemptRow

    spec = write_spec(tmp_path, panda_stack, "pandafail", events=200, per_job=100)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SMARTBKG_DB": f"sqlite:///{tmp_path}/store.db"}
    run = subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", "submit", str(spec), "--backend", "panda"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, f"{run.stdout}{run.stderr}\n{panda_stack.logs()}"
    campaign = status(tmp_path)
    assert campaign["complete"] and campaign["events_generated"] == 200, campaign
    assert campaign["failed_attempts"] == 1, campaign
    assert events_in_outputs(tmp_path / "out") == list(range(200))
    store = Store(f"sqlite:///{tmp_path}/store.db")
    with store.session() as session:
        rows = session.execute(
            select(AttemptRow.attempt, AttemptRow.state, AttemptRow.exit_code)
        ).all()
        failed_attempt = session.execute(
            select(AttemptRow.backend_job_id, AttemptRow.native_code).where(
                AttemptRow.state == "failed"
            )
        ).one()
    # Job 1's first attempt failed with the worker's own code (its report came back from the
    # server as the job's metadata); its second attempt, like job 0's first, is done.
    failed = [(attempt, code) for attempt, state, code in rows if state == "failed"]
    assert failed == [(1, 40)], rows  # ExitCode.SIMULATION
    assert sorted(attempt for attempt, state, _ in rows if state == "done") == [1, 2], rows
    assert_the_servers_code_is_stored_beside_the_workers(
        store, campaign["campaign_id"], *failed_attempt
    )
    assert_the_retry_is_a_new_task_once_jedi_could_not_retry(store, campaign["campaign_id"])


def assert_the_retry_is_a_new_task_once_jedi_could_not_retry(store, campaign_id):
    """One task per attempt, and no new task while JEDI could still rerun the old one: job
    1's second attempt is another task, created after its first attempt's PanDA job ended."""
    from smartbkg_prod.backends.panda import job_entry

    first, second = (a for a in store.engine.attempts(campaign_id) if a.job_index == 1)
    (old_task, entry), (new_task, _) = (
        (int(part) for part in a.backend_job_id.split("/")) for a in (first, second)
    )
    assert old_task != new_task
    (failed,) = [job for job in all_jobs(old_task) if job_entry(job) == entry]
    retried = all_jobs(new_task)
    assert [job["jobStatus"] for job in retried] == ["finished"], retried
    assert retried[0]["creationTime"] >= failed["endTime"], (failed, retried)


def assert_the_servers_code_is_stored_beside_the_workers(
    store, campaign_id, backend_job_id, native_code
):
    """The failed attempt's native code is what the server recorded for the job (read back
    with panda-client), and the recovery records show it beside the worker's exit code."""
    from smartbkg_prod.backends.panda import jedi_may_retry, job_entry
    from smartbkg_prod.recovery.records import campaign_records
    from smartbkg_prod.recovery.taxonomy import PILOT, FailureCode, describe, parse_native_code

    task_id, entry = (int(part) for part in backend_job_id.split("/"))
    records = all_jobs(task_id)
    # JEDI ran the failed entry once (maxAttempt 1): one failed job, which it could not retry.
    failed_jobs = [r for r in records if job_entry(r) == entry and r["jobStatus"] == "failed"]
    assert len(failed_jobs) == 1, records
    assert [r for r in records if job_entry(r) == entry] == failed_jobs, records
    assert not jedi_may_retry(failed_jobs[0]), failed_jobs
    server_codes = {
        FailureCode("pilot", int(r["pilotErrorCode"] or 0), int(r["transExitCode"] or 0) or None)
        for r in failed_jobs
    }
    stored = parse_native_code(native_code)
    assert stored in server_codes, (native_code, server_codes)
    # The worker exited 40 (ExitCode.SIMULATION); the pilot sent it as transExitCode, and
    # the pilot's own code for the failure is non-zero.
    assert stored.subcode == 40 and stored.code != 0, native_code
    job = next(r for r in failed_jobs if int(r["pilotErrorCode"] or 0) == stored.code)
    info = describe(stored)
    assert info.known and info.name.startswith(PILOT[int(job["pilotErrorCode"])].name), info
    (record,) = [r for r in campaign_records(store, campaign_id) if r.exit_code != 0]
    assert (record.exit_code, record.failure_code.token) == (40, stored.token), record
    # Every non-zero error field of the server's record is in the attempt's log lines.
    reason = next(line for line in record.log_lines if line.startswith("panda: "))
    assert f"pilotErrorCode={job['pilotErrorCode']}" in reason, record.log_lines
    assert "transExitCode=40" in reason, record.log_lines
