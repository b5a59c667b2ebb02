"""Slurm backend: rendering and state mapping offline, everything else on a real cluster."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_calls import QUERY_COMMANDS, counting_wrappers, read_calls
from sqlalchemy import select

from smartbkg_prod.backends import get_backend
from smartbkg_prod.backends.base import JobHandle, RetryChanges, apply_retry_changes
from smartbkg_prod.backends.slurm import (
    JobcompFile,
    SlurmBackend,
    tasks_from_records,
    tasks_from_squeue,
)
from smartbkg_prod.cli import main
from smartbkg_prod.plan import JobInput, plan_jobs, read_job_list_entry
from smartbkg_prod.recovery.records import list_recommendations
from smartbkg_prod.spec import Campaign, dump_campaign
from smartbkg_prod.store import Store
from smartbkg_prod.store.tables import AttemptRow, JobRow
from smartbkg_prod.submit import render_campaign, submit_campaign

pytest_plugins = ["slurm_fixture"]  # the real-cluster fixture `slurm_cluster`

# Lines as slurm-wlm 22.05 prints them (scontrol show job -o; jobcomp/filetxt), trimmed.
SCONTROL_PENDING = (
    "JobId=7 ArrayJobId=7 ArrayTaskId=1-3%2 ArrayTaskThrottle=2 JobName=t JobState=PENDING "
    "Reason=JobArrayTaskLimit ExitCode=0:0 NodeList= NumCPUs=1"
)
SCONTROL_RUNNING = (
    "JobId=8 ArrayJobId=7 ArrayTaskId=0 JobName=t JobState=RUNNING Reason=None "
    "ExitCode=0:0 NodeList=node12 BatchHost=node12"
)
JOBCOMP_KILLED = (
    "JobId=4 UserId=root(0) GroupId=root(0) Name=t.sh JobState=FAILED Partition=debug "
    "TimeLimit=5 NodeList=localhost NodeCnt=1 ProcCnt=1 WorkDir=/tmp ArrayJobId=1 "
    "ArrayTaskId=2 DerivedExitCode=0:0 ExitCode=0:9"
)


# squeue --array --states=all --Format=ArrayJobID:|,... as slurm-wlm 22.05 prints it: exit_code
# is the raw wait status (768 = exit 3, 9 = SIGKILL); a pending task has no batch host.
SQUEUE_OUTPUT = """1|0|COMPLETED|0|localhost|None|
1|2|FAILED|9|localhost|JobLaunchFailure|
1|1|FAILED|768|localhost|NonZeroExitCode|
2|0|PENDING|0|n/a|Resources|
1|4|RUNNING|0|localhost|None|
"""


def handle(backend_job_id: str) -> JobHandle:
    return JobHandle(
        campaign_id="c", job_index=0, attempt=1, backend="slurm", backend_job_id=backend_job_id
    )


def state_of(line: str, key=("1", 0)):
    task = tasks_from_records([line])[key]
    return task.to_state(handle(f"{key[0]}_{key[1]}"))


def record(state: str, exit_code: str = "0:0") -> str:
    return f"JobId=2 ArrayJobId=1 ArrayTaskId=0 JobState={state} ExitCode={exit_code} BatchHost=n1"


@pytest.mark.parametrize(
    ("slurm_state", "exit_code", "state", "code", "native"),
    [
        ("COMPLETED", "0:0", "done", 0, None),
        ("FAILED", "3:0", "failed", 3, "slurm:FAILED/3"),
        ("FAILED", "50:0", "failed", 50, "slurm:FAILED/50"),
        ("FAILED", "0:9", "failed", 137, "slurm:FAILED/137"),
        ("OUT_OF_MEMORY", "0:125", "failed", 253, "slurm:OUT_OF_MEMORY"),
        ("TIMEOUT", "0:15", "failed", 143, "slurm:TIMEOUT"),
        ("NODE_FAIL", "0:0", "failed", 0, "slurm:NODE_FAIL"),
        ("PREEMPTED", "0:15", "failed", 143, "slurm:PREEMPTED"),
        ("CANCELLED", "0:15", "cancelled", 143, "slurm:CANCELLED"),
        ("RUNNING", "0:0", "running", None, None),
        # Suspended or stopped jobs resume where they were: running, never cancelled.
        ("SUSPENDED", "0:0", "running", None, None),
        ("STOPPED", "0:0", "running", None, None),
        # Nothing in Slurm releases these: the driver removes them at once.
        ("REQUEUE_HOLD", "0:0", "held", None, "slurm:REQUEUE_HOLD"),
    ],
)
def test_slurm_states_and_exit_codes_map_to_job_states(slurm_state, exit_code, state, code, native):
    result = state_of(record(slurm_state, exit_code))
    assert (result.state, result.exit_code, result.native_code) == (state, code, native)
    assert result.site == "n1"


def test_pending_array_record_expands_to_each_task_with_its_reason():
    tasks = tasks_from_records([SCONTROL_PENDING, SCONTROL_RUNNING])
    assert sorted(tasks) == [("7", 0), ("7", 1), ("7", 2), ("7", 3)]
    pending = tasks[("7", 2)].to_state(handle("7_2"))
    assert pending.state == "pending" and pending.native_reason == "JobArrayTaskLimit"
    assert tasks[("7", 0)].to_state(handle("7_0")).site == "node12"


def test_jobcomp_line_of_a_killed_task_reads_as_sigkill():
    result = state_of(JOBCOMP_KILLED, ("1", 2))
    assert (result.state, result.exit_code, result.native_code) == (
        "failed",
        137,
        "slurm:FAILED/137",
    )


def test_squeue_lines_read_as_the_same_states_as_scontrol_records():
    tasks = tasks_from_squeue(SQUEUE_OUTPUT)
    assert sorted(tasks) == [("1", 0), ("1", 1), ("1", 2), ("1", 4), ("2", 0)]
    states = {key: task.to_state(handle(f"{key[0]}_{key[1]}")) for key, task in tasks.items()}
    assert [(s.state, s.exit_code, s.native_code) for s in states.values()] == [
        ("done", 0, None),
        ("failed", 137, "slurm:FAILED/137"),
        ("failed", 3, "slurm:FAILED/3"),
        ("pending", None, None),
        ("running", None, None),
    ]
    assert states[("2", 0)].native_reason == "Resources" and states[("2", 0)].site is None


def test_jobcomp_file_is_read_as_it_grows_and_reread_when_rotated(tmp_path):
    path = tmp_path / "jobcomp.txt"
    finished = JOBCOMP_KILLED.replace("ArrayTaskId=2", "ArrayTaskId=0").replace("0:9", "0:0")
    path.write_text(JOBCOMP_KILLED + "\n" + finished[:40])  # the second line is being written
    jobcomp = JobcompFile(path)
    jobcomp.watch(["1"])
    assert sorted(jobcomp.read()) == [("1", 2)]
    with open(path, "a") as handle:
        handle.write(
            finished[40:] + "\n" + JOBCOMP_KILLED.replace("ArrayJobId=1", "ArrayJobId=9") + "\n"
        )
    assert sorted(jobcomp.read()) == [("1", 0), ("1", 2)]  # array 9 is not watched
    jobcomp.watch(["9"])  # an array not just submitted: its lines may be behind us
    assert sorted(jobcomp.read()) == [("1", 0), ("1", 2), ("9", 2)]
    path.write_text(finished.replace("ArrayJobId=1", "ArrayJobId=9") + "\n")  # rotated
    assert jobcomp.read()[("9", 0)].job_state == "FAILED"


def test_native_codes_are_readable_by_the_recovery_taxonomy():
    from smartbkg_prod.recovery import taxonomy

    for native in ("slurm:FAILED/137", "slurm:OUT_OF_MEMORY", "slurm:TIMEOUT", "slurm:CANCELLED"):
        assert taxonomy.parse_native_code(native).source == "slurm"
    assert taxonomy.describe(taxonomy.parse_native_code("slurm:OUT_OF_MEMORY")).category == "memory"


@pytest.fixture
def grid_campaign(tmp_path: Path) -> Campaign:
    return Campaign(
        name="gridtest",
        process="bbbar_mixed",
        events=2500,
        events_per_job=1000,
        seed=3,
        resources={"cores": 2, "memory_mb": 3000, "walltime_s": 5400, "gpus": 1},
        backend={
            "name": "slurm",
            "max_parallel": 50,
            "sites": {"allowed": ["gpu"], "excluded": ["node7", "node9"]},
        },
        outputs={"directory": str(tmp_path / "out")},
    )


def test_render_writes_script_with_spec_resources_site_policy_and_throttle(grid_campaign, tmp_path):
    paths = render_campaign(grid_campaign, tmp_path / "dry", backend="slurm")
    script = (tmp_path / "dry" / "gridtest.sbatch").read_text()
    for option in (
        "--cpus-per-task=2",
        "--mem=3000M",
        "--time=1:30:00",
        "--gres=gpu:1",
        "--partition=gpu",
        "--exclude=node7,node9",
    ):
        assert f"#SBATCH {option}\n" in script
    assert (
        f'{sys.executable} -m smartbkg_prod.cli worker --job "$1" --index $SLURM_ARRAY_TASK_ID'
        in script
    )
    submit = (tmp_path / "dry" / "submit.sh").read_text()
    assert "sbatch --parsable --array=0-2%50 " in submit
    job_list = next(path for path in paths if path.suffix == ".jsonl")
    entries = [read_job_list_entry(job_list, i) for i in range(3)]
    assert [(e.job.first_event, e.job.n_events) for e in entries] == [
        (0, 1000),
        (1000, 1000),
        (2000, 500),
    ]
    assert [e.job for e in entries] == plan_jobs(grid_campaign)


def test_site_override_sets_the_resources_of_the_one_allowed_partition(grid_campaign, tmp_path):
    sites = grid_campaign.backend.sites.model_copy(
        update={
            "overrides": {"gpu": grid_campaign.resources.model_copy(update={"memory_mb": 8000})}
        }
    )
    campaign = grid_campaign.model_copy(
        update={"backend": grid_campaign.backend.model_copy(update={"sites": sites})}
    )
    SlurmBackend.from_campaign(campaign).render(campaign, job_inputs(campaign), tmp_path)
    assert "#SBATCH --mem=8000M\n" in (tmp_path / "gridtest.sbatch").read_text()


def test_large_campaigns_are_split_into_arrays_within_max_array_size(grid_campaign, tmp_path):
    backend = SlurmBackend(max_array_size=2)
    paths = backend.render(grid_campaign, job_inputs(grid_campaign), tmp_path)
    assert sorted(p.name for p in paths if p.suffix == ".jsonl") == [
        "gridtest.0000.jsonl",
        "gridtest.0001.jsonl",
    ]
    submit = (tmp_path / "submit.sh").read_text().splitlines()
    assert any("--array=0-1%50" in line and "0000.jsonl" in line for line in submit)
    assert any("--array=0-0%50" in line and "0001.jsonl" in line for line in submit)
    assert read_job_list_entry(tmp_path / "gridtest.0001.jsonl", 0).job.index == 2


def test_container_image_runs_the_worker_in_docker_with_the_output_mounted(grid_campaign, tmp_path):
    campaign = Campaign.model_validate(
        {
            **grid_campaign.model_dump(),
            "container": {"image": "smartbkg-worker:1", "runtime": "docker"},
        }
    )
    SlurmBackend.from_campaign(campaign).render(campaign, job_inputs(campaign), tmp_path)
    line = (tmp_path / "gridtest.sbatch").read_text().splitlines()[-1]
    out = str(tmp_path / "out")
    assert line.startswith("docker run --rm")
    assert f"-v {tmp_path}:{tmp_path}" in line and "--memory=3000m" in line and "--gpus 1" in line
    assert "-e SMARTBKG_INJECT_FAULT" in line
    assert line.endswith(
        'smartbkg-worker:1 python3 -m smartbkg_prod.cli worker --job "$1" --index $SLURM_ARRAY_TASK_ID'
    )
    assert out.startswith(str(tmp_path))


def test_apptainer_runs_the_image_with_binds_and_the_worker_environment(grid_campaign, tmp_path):
    campaign = Campaign.model_validate(
        {
            **grid_campaign.model_dump(),
            "container": {"image": "smartbkg-worker:1", "runtime": "docker"},
            "backend": {
                **grid_campaign.backend.model_dump(),
                "options": {"container_command": "apptainer"},
            },
        }
    )
    SlurmBackend.from_campaign(campaign).render(campaign, job_inputs(campaign), tmp_path)
    line = (tmp_path / "gridtest.sbatch").read_text().splitlines()[-1]
    assert line.startswith("apptainer exec --cleanenv")
    assert f"--bind {tmp_path}" in line
    assert '--env SMARTBKG_INJECT_FAULT="$SMARTBKG_INJECT_FAULT"' in line
    assert line.endswith(
        'docker://smartbkg-worker:1 python3 -m smartbkg_prod.cli worker --job "$1" --index $SLURM_ARRAY_TASK_ID'
    )


def test_cli_dry_run_renders_the_slurm_submission(grid_campaign, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(dump_campaign(grid_campaign))
    result = CliRunner().invoke(
        main, ["submit", str(spec), "--backend", "slurm", "--dry-run", str(tmp_path / "dry")]
    )
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "dry" / "gridtest.sbatch") in result.output.splitlines()
    assert (tmp_path / "dry" / "submit.sh").is_file()


def test_without_slurm_commands_submit_says_what_to_do(grid_campaign, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Exception, match="not found: run on a Slurm submit host"):
        SlurmBackend().submit(grid_campaign, job_inputs(grid_campaign))


def test_worker_runs_one_entry_of_a_job_list(tmp_path):
    campaign = Campaign(name="w", process="bbbar_mixed", events=30, events_per_job=10)
    inputs = job_inputs(campaign, tmp_path)
    SlurmBackend().render(campaign, inputs, tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartbkg_prod.cli",
            "worker",
            "--job",
            str(tmp_path / "w.0000.jsonl"),
            "--index",
            "7",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 11 and "has no entry 7" in result.stderr


def job_inputs(campaign: Campaign, output_dir: Path | None = None) -> list[JobInput]:
    out = str(output_dir or campaign.outputs.directory)
    return [
        JobInput(job=job, campaign=campaign, output_dir=out, backend="slurm")
        for job in plan_jobs(campaign)
    ]


# -- against the real cluster ---------------------------------------------------------------

FAKE_WORKER = """#!/bin/bash
# Stands in for python: `-m smartbkg_prod.cli worker --job LIST --index I` behaves by index.
index="${@: -1}"
case "$index" in
    0) exit 0 ;;
    1) exit 3 ;;
    2) kill -9 $$ ;;
    *) sleep 120 ;;
esac
"""


def fake_python(tmp_path: Path) -> str:
    """FAKE_WORKER as an executable file, the python of a SlurmBackend under test."""
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return str(fake)


def wait_until_finished(backend, handles, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        states = backend.poll(handles)
        if all(s.state in {"done", "failed", "cancelled"} for s in states):
            return states
        assert time.time() < deadline, [s.model_dump() for s in states]
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.slurm
def test_real_array_tasks_report_exit_codes_signals_and_cancellation(slurm_cluster, tmp_path):
    campaign = Campaign(
        name="plumbing",
        process="bbbar_mixed",
        events=40,
        events_per_job=10,
        resources={"memory_mb": 200, "walltime_s": 300},
    )
    backend = SlurmBackend(python=fake_python(tmp_path))
    handles = backend.submit(campaign, job_inputs(campaign, tmp_path))
    assert len({h.backend_job_id.split("_")[0] for h in handles}) == 1  # one array
    deadline = time.time() + 60
    while backend.poll(handles[3:])[0].state != "running":
        assert time.time() < deadline, slurm_cluster.logs()
        time.sleep(0.3)
    backend.cancel(handles[3:])
    states = wait_until_finished(backend, handles)
    assert [(s.state, s.exit_code, s.native_code) for s in states] == [
        ("done", 0, None),
        ("failed", 3, "slurm:FAILED/3"),
        ("failed", 137, "slurm:FAILED/137"),
        ("cancelled", 143, "slurm:CANCELLED"),
    ]
    assert all(s.site == "localhost" for s in states)


@pytest.mark.slow
@pytest.mark.slurm
def test_a_suspended_task_is_running(slurm_cluster, tmp_path):
    """scontrol suspend: the task resumes where it was, so it is running (was 'held', which
    the driver cancelled and counted as a failure)."""
    campaign = Campaign(name="suspend", process="bbbar_mixed", events=40, events_per_job=10)
    backend = SlurmBackend(python=fake_python(tmp_path))
    handle = backend.submit(campaign, job_inputs(campaign, tmp_path))[3]  # sleeps
    try:
        deadline = time.time() + 60
        while backend.poll([handle])[0].state != "running":
            assert time.time() < deadline, slurm_cluster.logs()
            time.sleep(0.3)
        command = ["scontrol", "suspend", handle.backend_job_id]
        suspend = subprocess.run(command, capture_output=True, text=True)
        assert suspend.returncode == 0, suspend.stderr
        command = ["scontrol", "show", "job", "-o", handle.backend_job_id]
        assert (
            "JobState=SUSPENDED" in subprocess.run(command, capture_output=True, text=True).stdout
        )
        (state,) = backend.poll([handle])
        assert (state.state, state.exit_code, state.native_code) == ("running", None, None)
    finally:
        backend.cancel([handle])


@pytest.mark.slow
@pytest.mark.slurm
def test_purged_arrays_are_read_from_the_jobcomp_file(slurm_cluster, tmp_path):
    campaign = Campaign(name="purged", process="bbbar_mixed", events=20, events_per_job=10)
    backend = SlurmBackend(python=fake_python(tmp_path))
    handles = backend.submit(campaign, job_inputs(campaign, tmp_path))
    wait_until_finished(backend, handles)
    # Fake: a controller that forgot the array (purged after MinJobAge, an hour on the test
    # cluster) shows squeue nothing for it.
    backend._squeue_tasks = lambda array_ids: {}
    states = backend.poll(handles)
    assert [(s.state, s.native_code) for s in states] == [
        ("done", None),
        ("failed", "slurm:FAILED/3"),
    ]


@pytest.mark.slow
@pytest.mark.slurm
def test_one_squeue_per_poll_covers_every_array_and_jobcomp_reads_ask_nothing(
    slurm_cluster, tmp_path, monkeypatch
):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{counting_wrappers(tmp_path / 'bin', log)}:{os.environ['PATH']}")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    campaign = Campaign(name="batched", process="bbbar_mixed", events=30, events_per_job=10)
    backend = SlurmBackend(python=str(fake))
    handles = [
        *backend.submit(campaign, job_inputs(campaign, tmp_path / "a")),
        *backend.submit(campaign, job_inputs(campaign, tmp_path / "b")),
    ]
    arrays = sorted({h.backend_job_id.split("_")[0] for h in handles})
    deadline = time.time() + 60
    while len(finished := backend.completions(handles)) < len(handles):
        assert time.time() < deadline, slurm_cluster.logs()
        time.sleep(0.3)
    # Until now: the two submissions, and not one query (slurm.conf names the jobcomp file).
    assert [call.command for call in read_calls(log)] == ["sbatch", "sbatch"]
    states = backend.poll(handles)
    queries = [call for call in read_calls(log) if call.command in QUERY_COMMANDS]
    assert [call.command for call in queries] == ["squeue"]
    assert f"--jobs={','.join(arrays)}" in queries[0].arguments
    expected = [("done", 0), ("failed", 3), ("failed", 137)] * 2
    assert [(s.state, s.exit_code) for s in states] == expected
    assert [(s.state, s.exit_code) for s in finished] == expected


@pytest.mark.slow
@pytest.mark.slurm
def test_default_policy_submits_one_array_and_notices_finished_jobs_between_queries(
    slurm_cluster, tmp_path, monkeypatch
):
    """The default Slurm cadence (one squeue per 30 s): a short campaign goes in as one
    array and is done from the jobcomp file, at most one squeue per elapsed interval."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{counting_wrappers(tmp_path / 'bin', log)}:{os.environ['PATH']}")
    campaign = Campaign(
        name="cadence",
        process="bbbar_generic",
        events=30,
        events_per_job=10,
        filter={"mode": "off"},
        resources={"memory_mb": 500, "walltime_s": 300},
        backend={"name": "slurm"},
        outputs={"directory": str(tmp_path / "out")},
    )
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    started = time.monotonic()
    status = submit_campaign(campaign, store=store)
    elapsed = time.monotonic() - started
    assert status.complete and status.events_generated == 30, slurm_cluster.logs()
    calls = read_calls(log)
    submissions = [call for call in calls if call.command == "sbatch"]
    assert len(submissions) == 1 and "--array=0-2 " in submissions[0].arguments
    queries = [call for call in calls if call.command in QUERY_COMMANDS]
    # Jitter draws each interval within 10 % of 30 s.
    assert len(queries) <= 1 + elapsed / (0.9 * SlurmBackend.poll_interval_s), queries
    assert all(call.command == "squeue" for call in queries)


@pytest.fixture
def slurm_campaign(tmp_path: Path) -> Campaign:
    return Campaign(
        name="slurmdemo",
        process="bbbar_mixed",
        events=600,
        events_per_job=200,
        seed=11,
        resources={"memory_mb": 2000, "walltime_s": 600},
        backend={"name": "slurm", "max_parallel": 3},
        outputs={"directory": str(tmp_path / "out")},
    )


@pytest.mark.slow
@pytest.mark.slurm
def test_campaign_through_slurm_matches_local_accounting_with_a_retried_kill(
    slurm_cluster, slurm_campaign, tmp_path, monkeypatch
):
    local_campaign = slurm_campaign.model_copy(
        update={
            "outputs": slurm_campaign.outputs.model_copy(
                update={"directory": str(tmp_path / "local")}
            )
        }
    )
    local = submit_campaign(
        local_campaign,
        store=Store(f"sqlite:///{tmp_path / 'local.db'}"),
        backend="local",
        poll_interval=0.1,
    )
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "kill@generate:job=1:attempt=1")
    store = Store(f"sqlite:///{tmp_path / 'slurm.db'}")
    status = submit_campaign(
        slurm_campaign, store=store, backend=get_backend("slurm", slurm_campaign), poll_interval=0.3
    )
    assert status.complete, slurm_cluster.logs()
    assert status.campaign_id == local.campaign_id
    assert status.failed_attempts == 1
    assert status.events_generated == 600
    for key in ("events_generated", "events_kept", "events_simulated", "events_skimmed"):
        assert getattr(status, key) == getattr(local, key), key
    reports = store.reports.of_campaign(slurm_campaign.campaign_id, successful_only=True)
    assert sorted((r.job_index, r.attempt) for r in reports) == [(0, 1), (1, 2), (2, 1)]
    assert all(r.backend == "slurm" and r.site == "localhost" for r in reports)
    assert all("_" in (r.backend_job_id or "") for r in reports)
    with store.session() as session:
        failed = session.execute(
            select(AttemptRow.exit_code, AttemptRow.native_code).where(
                AttemptRow.native_code.is_not(None)
            )
        ).all()
    assert [tuple(row) for row in failed] == [(137, "slurm:FAILED/137")]


@pytest.mark.slow
@pytest.mark.slurm
def test_retry_with_more_memory_reaches_sbatch(slurm_cluster, tmp_path):
    campaign = Campaign(
        name="retry",
        process="bbbar_mixed",
        events=10,
        events_per_job=10,
        resources={"memory_mb": 100},
    )
    backend = SlurmBackend(python=fake_python(tmp_path))
    (job_input,) = job_inputs(campaign, tmp_path)
    retry_input = job_input.model_copy(update={"attempt": 2})
    # What the driver submits for a job recovery gave more memory (CampaignRunner._launch).
    changed = apply_retry_changes(campaign, RetryChanges(memory_mb=300))
    (retried,) = backend.submit(changed, [retry_input])
    array_id = retried.backend_job_id.split("_")[0]
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", array_id], capture_output=True, text=True, env=os.environ
    ).stdout
    assert "MinMemoryNode=300M" in shown
    (state,) = wait_until_finished(backend, [retried])
    assert state.state == "done"


def test_retry_excludes_the_sites_recovery_names(grid_campaign):
    changed = apply_retry_changes(grid_campaign, RetryChanges(exclude_sites=["node3", "node7"]))
    options = SlurmBackend.from_campaign(changed).sbatch_options(changed, "log")
    assert "--exclude=node7,node9,node3" in options
    assert changed.campaign_id == grid_campaign.campaign_id


@pytest.mark.slow
@pytest.mark.slurm
def test_out_of_memory_job_completes_on_its_second_attempt_with_more_mem(
    slurm_cluster, tmp_path, monkeypatch
):
    """Issue 23: retry.policy auto on a real cluster. Job 1 needs ~110 MB of worker plus
    350 MB more than its 400 MB request: the cluster's cgroup (task/cgroup,
    ConstrainRAMSpace) kills it and Slurm says OUT_OF_MEMORY; where the machine gives
    slurmd no memory cgroup the worker's own check reports it (exit 50). Either way the
    driver resubmits it with 1.5x --mem, and it completes."""
    campaign = Campaign(
        name="slurmoom", process="bbbar_mixed", events=40, events_per_job=20, seed=13,
        resources={"memory_mb": 400, "walltime_s": 600}, backend={"name": "slurm"},
        outputs={"directory": str(tmp_path / "out")},
    )  # fmt: skip
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "alloc=350@simulate:job=1")
    store = Store(f"sqlite:///{tmp_path / 'oom.db'}")
    status = submit_campaign(campaign, store=store, poll_interval=0.3)
    assert status.complete and status.events_generated == 40, slurm_cluster.logs()
    with store.session() as session:
        attempts = session.execute(
            select(AttemptRow.attempt, AttemptRow.memory_mb, AttemptRow.native_code)
            .join(JobRow, JobRow.id == AttemptRow.job_id)
            .where(JobRow.job_index == 1)
            .order_by(AttemptRow.attempt)
        ).all()
    enforced = (slurm_cluster.directory / "cgroup.conf").is_file()
    first_code = "slurm:OUT_OF_MEMORY" if enforced else None  # else the worker's exit 50
    assert [tuple(a) for a in attempts] == [(1, 400, first_code), (2, 600, None)]
    (raised,) = list_recommendations(store, campaign_id=campaign.campaign_id)
    assert raised.decision.operator == "policy:auto" and raised.status == "applied"
