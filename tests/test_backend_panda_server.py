"""The PanDA backend against a real PanDA server: panda-server 1.0.4 with JEDI on
PostgreSQL 15 and the upstream schema, started by ``scripts/start-panda-test-stack.sh``
(see ``tests/panda_fixture.py``). The tasks are accepted by the real server, split by the
real JEDI and killed through the real API; states, codes and reasons are the
server's own replies.

These tests run the stack without pilots, so jobs stay queued (``activated``): what the
jobs do when a pilot runs them is in ``test_panda_campaign.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from unavailable import require_module

require_module("pandaclient")


from test_backend_panda import job_inputs  # noqa: E402

from smartbkg_prod.backends import panda as panda_backend  # noqa: E402
from smartbkg_prod.backends.panda import PandaBackend, job_entry  # noqa: E402
from smartbkg_prod.errors import SubmitError  # noqa: E402
from smartbkg_prod.spec import Campaign  # noqa: E402

pytestmark = [pytest.mark.panda, pytest.mark.slow]
pytest_plugins = ["panda_fixture"]  # the real-stack fixture `panda_stack`
ABORTED = {"toabort", "aborting", "aborted", "broken"}


def campaign(tmp_path: Path, queue: str, name: str) -> Campaign:
    return Campaign(
        name=name,
        process="bbbar_generic",
        events=900,
        events_per_job=300,
        seed=11,
        container={"image": "docker://registry.example/smartbkg-worker:3"},
        backend={"name": "panda", "queue": queue},
        retry={"max_attempts": 2},
        outputs={"directory": str(tmp_path / "out")},
    )


def task_jobs(task_id: int) -> list:
    """The task's jobs as the server describes them (JobSpec objects)."""
    from pandaclient import Client

    status, details = Client.getJediTaskDetails({"jediTaskID": task_id}, False, True)
    ids = (details or {}).get("PandaID") or [] if status == 0 else []  # not yet a JEDI task
    if not ids:
        return []
    status, specs = Client.getFullJobStatus(ids)
    assert status == 0, specs
    return [spec for spec in specs if spec is not None]


def task_status(task_id: int) -> str | None:
    from pandaclient import Client

    return Client.getTaskStatus(task_id)[1]


def submitted(stack, tmp_path, name):
    c = campaign(tmp_path, stack.queue, name)
    jobs = job_inputs(c)
    backend = PandaBackend.from_campaign(c)
    handles = backend.submit(c, jobs)
    task_id = int(handles[0].backend_job_id.split("/")[0])
    # JEDI refines the task, feeds the pseudo input and generates one job per entry.
    stack.wait_for(
        lambda: len(task_jobs(task_id)) == len(jobs) and task_status(task_id) == "running",
        180,
        "3 jobs generated, task running",
    )
    return c, jobs, backend, handles, task_id


def test_task_is_accepted_and_split_into_one_job_per_job_list_entry(panda_stack, tmp_path):
    from pandaclient import Client

    c, jobs, backend, handles, task_id = submitted(panda_stack, tmp_path, "pandareal")
    assert [h.backend_job_id for h in handles] == [f"{task_id}/{i}" for i in range(3)]
    # The server keeps the task parameters as sent; the sandbox is in its cache under
    # the base name the job parameters use (JEDI refuses the task otherwise).
    status, stored = Client.getTaskParamsMap(task_id)
    assert status == 0 and stored["nEvents"] == 3 and stored["site"] == panda_stack.queue
    assert stored["taskName"].startswith(f"user.{backend.nickname()}.smartbkg.{c.campaign_id}.")
    archive = next(p["value"][3:] for p in stored["jobParameters"] if p["value"].startswith("-a "))
    assert (panda_stack.directory / "cache" / archive).is_file()
    specs = task_jobs(task_id)
    assert sorted(job_entry({"jobParameters": s.jobParameters}) for s in specs) == [0, 1, 2]
    assert {s.computingSite for s in specs} == {panda_stack.queue}
    assert {s.jobStatus for s in specs} <= {"defined", "assigned", "activated"}
    states = backend.poll(handles)
    assert [s.state for s in states] == ["pending"] * 3
    assert {s.site for s in states} == {panda_stack.queue}
    backend.cancel(handles)  # no pilot of a later test should run them


def test_kill_cancels_every_job_with_the_servers_code_and_reason(panda_stack, tmp_path):

    _c, _jobs, backend, handles, task_id = submitted(panda_stack, tmp_path, "pandakill")
    backend.cancel(handles)
    states = panda_stack.wait_for(
        lambda: (s := backend.poll(handles)) and all(x.state == "cancelled" for x in s) and s,
        120,
        "every job cancelled",
    )
    # taskBufferErrorCode 100 is EC_Kill (pandaserver/taskbuffer/ErrorCode.py).
    assert {s.native_code for s in states} == {"taskBuffer:100"}
    assert all("kill" in s.native_reason for s in states)
    assert task_status(task_id) in ABORTED


def test_job_records_are_read_in_bounded_requests(panda_stack, tmp_path, monkeypatch):
    """A task's job records come in requests of at most JOB_STATUS_CHUNK ids (counted in
    the real server's access log)."""
    _c, _jobs, backend, handles, _task_id = submitted(panda_stack, tmp_path, "pandachunk")
    monkeypatch.setattr(panda_backend, "JOB_STATUS_CHUNK", 2)
    access = panda_stack.directory / "log" / "access.log"
    before = access.read_text().count("get_description_incl_archive")
    assert [s.state for s in backend.poll(handles)] == ["pending"] * 3
    after = panda_stack.wait_for(
        lambda: access.read_text().count("get_description_incl_archive") - before >= 2,
        10,
        "two job-record requests logged",
        every=0.5,
    )
    assert access.read_text().count("get_description_incl_archive") - before == 2, after
    backend.cancel(handles)


def test_status_of_an_unknown_task_is_an_error_naming_it(panda_stack, tmp_path):
    c = campaign(tmp_path, panda_stack.queue, "pandaunknown")
    backend = PandaBackend.from_campaign(c)
    submitted_handle = backend.submit(c, job_inputs(c)[:1])[0]
    handle = submitted_handle.model_copy(update={"backend_job_id": "987654/0"})
    with pytest.raises(SubmitError, match="cannot get the status of task 987654"):
        backend.poll([handle])
    backend.cancel([submitted_handle])
