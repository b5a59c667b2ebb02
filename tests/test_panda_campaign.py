"""Campaigns through a real PanDA: ``smartbkg-prod submit --backend panda`` against
panda-server 1.0.4 + JEDI (``tests/panda_fixture.py``), with panda-pilot 3 pilots
(``scripts/panda_stack/pilot_pool.py``) running the real worker on this machine.

Reports reach the driver the way they do from a grid site: the pilot sends the worker's
jobReport.json with the job's final update, the server keeps it as the job's metadata,
the backend reads it from there; outputs come from the queue's storage endpoint, where
the pilot staged them out. Accounting is checked in the ROOT files themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from unavailable import require_module

require_module("pandaclient")

from panda_fixture import pilot_pool  # noqa: E402

pytestmark = [pytest.mark.panda, pytest.mark.slow]
pytest_plugins = ["panda_fixture"]  # the real-stack fixture `panda_stack`

REPO = Path(__file__).resolve().parents[1]
SPEC = """\
name: {name}
process: bbbar_generic
events: {events}
events_per_job: {per_job}
seed: 20261130
filter:
  mode: off
resources:
  cores: 1
  memory_mb: 2000
  walltime_s: 1800
container:
  image: docker://registry.example.org/smartbkg/worker:0.1.0-cpu
backend:
  name: panda
  queue: {queue}
  poll_interval_s: 3
retry:
  max_attempts: 2
outputs:
  directory: {output}
  format: root
"""


@pytest.fixture(scope="module")
def panda_pilots(panda_stack):
    """Two pilots at a time on the stack's queue while this module runs."""
    with pilot_pool(panda_stack):
        yield


def write_spec(tmp_path: Path, stack, name: str, events=600, per_job=200) -> Path:
    spec = tmp_path / f"{name}.yaml"
    text = SPEC.format(
        name=name, events=events, per_job=per_job, queue=stack.queue, output=tmp_path / "out"
    )
    spec.write_text(text)
    return spec


def cli(*args, tmp_path: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SMARTBKG_DB": f"sqlite:///{tmp_path}/store.db"}
    return subprocess.Popen(
        [sys.executable, "-m", "smartbkg_prod.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def status(tmp_path: Path) -> dict:
    done = cli("status", "--json", tmp_path=tmp_path)
    out, _ = done.communicate(timeout=120)
    assert done.returncode == 0, out
    (campaign,) = json.loads(out)
    return campaign


def events_in_outputs(output_dir: Path) -> list[int]:
    from smartbkg_prod.physics.rootio import read_output

    numbers = []
    for path in sorted(output_dir.rglob("*.root")):
        numbers.extend(int(n) for n in read_output(path).event_number)
    return sorted(numbers)


def test_campaign_runs_through_pilots_with_exact_accounting(panda_stack, panda_pilots, tmp_path):
    spec = write_spec(tmp_path, panda_stack, "pandae2e")
    started = time.monotonic()
    run = cli("submit", str(spec), "--backend", "panda", tmp_path=tmp_path)
    out, _ = run.communicate(timeout=1200)
    wall = time.monotonic() - started
    assert run.returncode == 0, f"{out}\n{panda_stack.logs()}"
    campaign = status(tmp_path)
    assert campaign["complete"] and campaign["jobs_by_state"]["done"] == 3, campaign
    assert campaign["events_generated"] == 600
    # Every event once, read back from the ROOT files the pilots staged out.
    assert events_in_outputs(tmp_path / "out") == list(range(600))
    print(f"3 x 200 events through PanDA in {wall:.0f} s")


def test_driver_killed_mid_campaign_follows_its_task_instead_of_submitting_again(
    panda_stack, panda_pilots, tmp_path
):
    """SIGKILL the driver once a first job is done, with the others still with PanDA, then
    `submit` again (issue 24): the new driver follows the task from what the store kept
    (jediTaskID/entry) instead of submitting the jobs again. One task for the one
    submission, one attempt per job, one successful PandaID per job in the server's own
    job table, and JEDI never retried (maxAttempt 1: the driver owns retries)."""
    from smartbkg_prod.backends.panda import job_entry
    from smartbkg_prod.store import Store

    # A name of its own: the stack's database outlives test sessions, and the check below
    # looks for every task of this campaign on the server.
    spec = write_spec(tmp_path, panda_stack, f"pandaresume-{uuid.uuid4().hex[:8]}")
    first = cli("submit", str(spec), "--backend", "panda", tmp_path=tmp_path)
    # SIGKILL once the first job has been ingested (its report read from the server).
    panda_stack.wait_for(
        lambda: (
            first.poll() is None
            and (tmp_path / "store.db").exists()
            and status(tmp_path)["jobs_by_state"]["done"] >= 1
        ),
        900,
        "a first job done",
        every=5,
    )
    first.kill()
    first.wait()
    left = status(tmp_path)["jobs_by_state"]["running"]
    second = cli("submit", str(spec), "--backend", "panda", tmp_path=tmp_path)
    out, _ = second.communicate(timeout=1200)
    assert second.returncode == 0, f"{out}\n{panda_stack.logs()}"
    campaign = status(tmp_path)
    assert campaign["complete"] and campaign["events_generated"] == 600, campaign
    assert events_in_outputs(tmp_path / "out") == list(range(600))
    ours = Store(f"sqlite:///{tmp_path}/store.db").engine.attempts(campaign["campaign_id"])
    assert [(a.job_index, a.attempt) for a in ours] == [(0, 1), (1, 1), (2, 1)], ours
    tasks = {int(a.backend_job_id.split("/")[0]) for a in ours}
    assert len(tasks) == 1 and campaign_tasks(campaign["campaign_id"], tasks) == tasks
    jobs = [job for task in tasks for job in all_jobs(task)]
    finished = [job_entry(job) for job in jobs if job["jobStatus"] == "finished"]
    assert sorted(finished) == [0, 1, 2], jobs
    assert len(jobs) == 3, [(j["PandaID"], j["jobStatus"], j["attemptNr"]) for j in jobs]
    print(f"{left} job(s) with PanDA when the driver was killed; followed, not resubmitted")


def campaign_tasks(campaign_id: str, near: set[int], margin: int = 5) -> set[int]:
    """The server's tasks whose parameters name ``campaign_id``, among the task ids around
    ``near`` (the test stack numbers tasks in order): a task the driver submitted but did
    not record would show up here."""
    from pandaclient import Client

    return {
        task_id
        for task_id in range(min(near) - margin, max(near) + margin + 1)
        if campaign_id in str(Client.getTaskParamsMap(task_id))
    }


def all_jobs(task_id: int) -> list[dict]:
    """The task's jobs in the server's job table, with any JEDI retried: the task's job
    list names only the latest job per entry, and a task's jobs lie between its first and
    its latest PandaID."""
    from pandaclient import Client
    from test_backend_panda_server import task_jobs

    ids = [int(job.PandaID) for job in task_jobs(task_id)]
    status, specs = Client.getFullJobStatus(list(range(min(ids), max(ids) + 1)))
    assert status == 0, specs
    return [
        {key: getattr(job, key, None) for key in job.__slots__}
        for job in specs
        if job is not None and int(job.jediTaskID) == task_id
    ]
