"""Slurm: one ``sbatch --array`` per launched batch, polled with one ``squeue`` per poll.

A batch of attempts becomes one job list (JSON lines, see :func:`~smartbkg_prod.plan.write_job_list`)
and one array whose task ``i`` runs ``smartbkg-prod worker --job LIST --index i`` — bare,
with the submitter's own Python, or inside the spec's container image (docker, or
apptainer with ``backend.options.container_command: apptainer``). Resources come from the
spec (``--cpus-per-task``, ``--mem``, ``--time``, ``--gres=gpu:N``). Site policy: a Slurm
"site" is a partition for ``sites.allowed`` (``--partition``) and a node for
``sites.excluded`` (``--exclude``), because recovery excludes the node an attempt failed on.

A poll is one ``squeue --array --states=all --jobs=A,B,...`` over every array of the
campaign in flight (default every 30 s, ``SlurmBackend.poll_interval_s``). Finished tasks
are read from the ``jobcomp/filetxt`` file where the submit host can read it (the file's
new lines every 2 s, no load on slurmctld), so they are noticed within seconds, and tasks
already purged from the controller (older than ``MinJobAge``) are found there too; without
a readable file, squeue shows a finished task for ``MinJobAge`` (300 s by default), longer
than one poll interval. ``sacct`` is not used: it needs slurmdbd. States map to
:class:`~smartbkg_prod.backends.base.JobState` with ``native_code`` ``slurm:STATE`` or, for
``FAILED``, ``slurm:FAILED/STATUS`` where STATUS is the shell exit status (128 + signal
for a killed job), e.g. ``slurm:FAILED/137``, ``slurm:OUT_OF_MEMORY``, ``slurm:TIMEOUT``.

>>> parse_exit_code("0:9")
137
>>> list(expand_task_ids("0-3%2"))
[0, 1, 2, 3]
>>> squeue_exit_code("768"), squeue_exit_code("9")
('3:0', '0:9')
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smartbkg_prod.backends.base import (
    Backend,
    JobHandle,
    JobState,
    attempt_handle,
    site_resources,
    worker_command,
)
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.plan import JobInput, write_job_list
from smartbkg_prod.spec import Campaign, Resources

# Slurm's default MaxArraySize is 1001 (task ids 0..1000); larger batches become
# several arrays.
DEFAULT_MAX_ARRAY_SIZE = 1000

# squeue's fields (``--Format``) as our poll reads them, one task per line; the reason,
# free text, comes last.
SQUEUE_FIELDS = ("ArrayJobID", "ArrayTaskID", "State", "exit_code", "BatchHost", "Reason")
SQUEUE_SEPARATOR = "|"
# Where slurm.conf is when SLURM_CONF does not say (Debian's and the upstream default).
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"

# Worker environment that must reach a containerised worker (job id, site, fault drills).
_FORWARDED_ENV = ("SMARTBKG_BACKEND_JOB_ID", "SMARTBKG_SITE", "SMARTBKG_INJECT_FAULT")

# scontrol JobState -> our state. Terminal states not listed here are failures.
_STATE = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_FED": "pending",
    "RESIZING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "STAGE_OUT": "running",
    "SIGNALING": "running",
    # Suspended (scontrol suspend, gang scheduling, preemption by suspension) or stopped
    # (SIGSTOP): the job resumes where it was; it is running, not failed.
    "SUSPENDED": "running",
    "STOPPED": "running",
    # Nothing in Slurm releases these by itself: the driver removes them at once.
    "REQUEUE_HOLD": "held",
    "SPECIAL_EXIT": "held",
    "RESV_DEL_HOLD": "held",
    "COMPLETED": "done",
    "CANCELLED": "cancelled",
    # Failures, each with its own native code (slurm.schedmd.com/squeue.html, JOB STATE CODES):
    "FAILED": "failed",
    "OUT_OF_MEMORY": "failed",
    "TIMEOUT": "failed",
    "NODE_FAIL": "failed",
    "PREEMPTED": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
}


# Holds of a pending job, by squeue's reason (slurm.schedmd.com/job_reason_codes.html):
# a person's hold (`scontrol hold` by the job's user, `sbatch --hold`) waits for them to
# release or cancel it; an administrator's hold and a launch failure that Slurm requeued
# held are released by nothing the driver can count on: the attempt is removed at once
# and counted as failed (native code slurm:HELD/<reason>), and the retry policy decides.
USER_HOLD = "JobHeldUser"
REMOVED_HOLDS = ("JobHeldAdmin", "launch failed requeued held")


def hold_of(reason: str) -> str | None:
    """The hold a pending task's reason names, or None.

    >>> hold_of("JobHeldAdmin"), hold_of("launch failed requeued held"), hold_of("Resources")
    ('JobHeldAdmin', 'launch failed requeued held', None)
    """
    for hold in (USER_HOLD, *REMOVED_HOLDS):
        if hold.lower() in reason.lower():
            return hold
    return None


def parse_exit_code(value: str) -> int:
    """Slurm's ``ExitCode=STATUS:SIGNAL`` as a shell exit status (128 + signal if killed)."""
    status, _, signal = value.partition(":")
    signal_number = int(signal or 0)
    return 128 + signal_number if signal_number else int(status or 0)


def expand_task_ids(spec: str) -> Iterator[int]:
    """Task ids of a (pending) array record: ``0-3%2``, ``1,4,7-9`` or ``5``."""
    for part in spec.split("%", 1)[0].split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        yield from range(int(first), int(last or first) + 1)


def squeue_exit_code(value: str) -> str:
    """squeue's ``exit_code`` (the raw wait status) as ``STATUS:SIGNAL`` like scontrol's."""
    raw = int(value) if value.isdigit() else 0
    return f"{raw >> 8}:{raw & 0x7F}"


def parse_record(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` or jobcomp line as ``{key: value}``.

    Values never contain spaces except ``Command``/``WorkDir`` paths, which we do not read.
    """
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


@dataclass(frozen=True)
class SlurmTask:
    """What Slurm says about one array task."""

    array_id: str
    task_id: int
    job_state: str
    exit_code: str = "0:0"
    reason: str = ""
    node: str | None = None

    def to_state(self, handle: JobHandle) -> JobState:
        slurm_state = self.job_state.split()[0].rstrip("+")
        state = _STATE.get(slurm_state, "failed")
        exit_status = parse_exit_code(self.exit_code)
        native, exit_code, release_by = None, None, None
        hold = hold_of(self.reason) if state in {"pending", "held"} else None
        if hold is not None:
            state, native = "held", f"slurm:HELD/{hold.replace(' ', '_')}"
            release_by = math.inf if hold == USER_HOLD else None
        elif state == "held":
            native = f"slurm:{slurm_state}"
        if state in {"done", "failed", "cancelled"}:
            exit_code = exit_status
            if slurm_state == "COMPLETED" and exit_status != 0:
                state = "failed"
            if state == "failed":
                native = f"slurm:{slurm_state}"
                if slurm_state in {"FAILED", "COMPLETED"}:
                    native = f"slurm:FAILED/{exit_status}"
            elif state == "cancelled":
                native = "slurm:CANCELLED"
        reason = "" if self.reason in {"None", "(null)"} else self.reason
        return JobState(
            handle=handle,
            state=state,
            exit_code=exit_code,
            native_code=native,
            native_reason=reason,
            site=self.node or handle.site,
            release_by=release_by,
        )


def tasks_from_records(lines: Sequence[str]) -> dict[tuple[str, int], SlurmTask]:
    """``(array id, task id) -> task`` from scontrol or jobcomp lines (non-array jobs skipped)."""
    tasks = {}
    for line in lines:
        record = parse_record(line)
        array_id, task_spec = record.get("ArrayJobId"), record.get("ArrayTaskId")
        if not array_id or not task_spec:
            continue
        node = record.get("BatchHost") or record.get("NodeList") or None
        for task_id in expand_task_ids(task_spec):
            tasks[(array_id, task_id)] = SlurmTask(
                array_id=array_id,
                task_id=task_id,
                job_state=record.get("JobState", "PENDING"),
                exit_code=record.get("ExitCode", "0:0"),
                reason=record.get("Reason", ""),
                node=None if node in {"(null)", ""} else node,
            )
    return tasks


def tasks_from_squeue(output: str) -> dict[tuple[str, int], SlurmTask]:
    """``(array id, task id) -> task`` from squeue lines of ``SQUEUE_FIELDS``."""
    tasks = {}
    for line in output.splitlines():
        line = line.rstrip().removesuffix(SQUEUE_SEPARATOR)  # every field ends with it
        values = [value.strip() for value in line.split(SQUEUE_SEPARATOR, len(SQUEUE_FIELDS) - 1)]
        if len(values) != len(SQUEUE_FIELDS) or not values[1][:1].isdigit():
            continue  # not an array task (ArrayTaskID N/A)
        array_id, task_spec, state, exit_code, host, reason = values
        for task_id in expand_task_ids(task_spec):
            tasks[(array_id, task_id)] = SlurmTask(
                array_id=array_id,
                task_id=task_id,
                job_state=state,
                exit_code=squeue_exit_code(exit_code),
                reason=reason,
                node=None if host in {"n/a", "(null)", ""} else host,
            )
    return tasks


class JobcompFile:
    """Slurm's ``jobcomp/filetxt`` file, read as it grows: the finished tasks of the arrays
    we watch. Only new complete lines are read each time; a file rotated or truncated
    under us is read again from its start."""

    def __init__(self, path: Path):
        self.path = path
        self.arrays: set[str] = set()
        self.tasks: dict[tuple[str, int], SlurmTask] = {}
        self._offset = 0
        self._inode: int | None = None

    def watch(self, array_ids: Iterable[str], submitted: bool = False) -> None:
        """Keep the records of ``array_ids`` from now on; arrays not ``submitted`` just
        now may have lines already read past, so the file is read again from its start."""
        new = set(array_ids) - self.arrays
        self.arrays |= new
        if new and not submitted:
            self._offset = 0

    def read(self) -> dict[tuple[str, int], SlurmTask]:
        """Every task of the watched arrays the file records so far (the last line wins)."""
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._inode, self._offset = stat.st_ino, 0
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return self.tasks
        complete = chunk.rfind(b"\n") + 1  # a line being written waits for the next read
        self._offset += complete
        lines = chunk[:complete].decode(errors="replace").splitlines()
        for key, task in tasks_from_records(lines).items():
            if key[0] in self.arrays:
                self.tasks[key] = task
        return self.tasks


def _walltime(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class SlurmBackend(Backend):
    """Job arrays on a Slurm cluster reachable with the ``sbatch``/``scontrol`` commands.

    ``env`` is added to the environment of every Slurm command (e.g. ``SLURM_CONF``); jobs
    inherit the submitter's environment (sbatch's default ``--export=ALL``).
    """

    name = "slurm"
    # One squeue per 30 s per campaign; the jobcomp file (a file read) every 2 s.
    poll_interval_s = 30.0
    completion_interval_s = 2.0
    throttles_submissions = True  # --array=0-N%max_parallel
    remote = True

    def __init__(
        self,
        partition: str | None = None,
        account: str | None = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
        container_command: str = "docker",
        max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
    ):
        if container_command not in {"docker", "apptainer"}:
            raise SubmitError(
                f"slurm: container_command {container_command!r} is not supported (allowed: docker, apptainer)"
            )
        self.partition = partition
        self.account = account
        self.python = python
        self.env = env or {}
        self.container_command = container_command
        self.max_array_size = max_array_size
        self._jobcomp: JobcompFile | None = None
        self._jobcomp_looked_up = False

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> SlurmBackend:
        options = campaign.backend.options
        return cls(
            partition=campaign.backend.queue,
            account=options.get("account"),
            python=options.get("python"),
            container_command=options.get("container_command", "docker"),
            max_array_size=int(options.get("max_array_size", DEFAULT_MAX_ARRAY_SIZE)),
        )

    # -- what is submitted -------------------------------------------------------------

    def partitions(self, campaign: Campaign) -> list[str]:
        allowed = campaign.backend.sites.allowed
        return list(allowed) if allowed else [self.partition] if self.partition else []

    def resources(self, campaign: Campaign) -> Resources:
        partitions = self.partitions(campaign)
        return site_resources(campaign, partitions[0] if len(partitions) == 1 else None)

    def sbatch_options(self, campaign: Campaign, log_pattern: str) -> list[str]:
        """``#SBATCH`` options of a campaign's arrays (array range given at submission)."""
        resources = self.resources(campaign)
        options = [
            f"--job-name={campaign.name}",
            f"--cpus-per-task={resources.cores}",
            f"--mem={resources.memory_mb}M",
            f"--time={_walltime(resources.walltime_s)}",
            f"--output={log_pattern}",
            # The driver owns retries: Slurm must not rerun a task itself (after a node
            # failure or preemption) behind the attempt it belongs to.
            "--no-requeue",
        ]
        if resources.gpus:
            options.append(f"--gres=gpu:{resources.gpus}")
        if self.partitions(campaign):
            options.append(f"--partition={','.join(self.partitions(campaign))}")
        if campaign.backend.sites.excluded:
            options.append(f"--exclude={','.join(campaign.backend.sites.excluded)}")
        if self.account:
            options.append(f"--account={self.account}")
        return options

    def payload_command(self, campaign: Campaign, job_list: str, mounts: Sequence[str]) -> str:
        """The shell command an array task runs; ``$1`` is the job list."""
        index = "$SLURM_ARRAY_TASK_ID"
        image = campaign.container.image
        if campaign.container.runtime != "docker" or not image:
            # The submitter's interpreter: the cluster shares its file system and environment.
            return _shell(worker_command(job_list, self.python or sys.executable, index))
        resources = self.resources(campaign)
        inner = worker_command(job_list, "python3", index)
        if self.container_command == "apptainer":
            binds = [arg for path in mounts for arg in ("--bind", path)]
            passed = [arg for name in _FORWARDED_ENV for arg in ("--env", f'{name}="${name}"')]
            return _shell(
                [
                    "apptainer",
                    "exec",
                    "--cleanenv",
                    *binds,
                    *passed,
                    "--env",
                    f"SMARTBKG_IMAGE={image}",
                    f"docker://{image}",
                    *inner,
                ]
            )
        volumes = [arg for path in mounts for arg in ("-v", f"{path}:{path}")]
        forwarded = [arg for name in _FORWARDED_ENV for arg in ("-e", name)]
        docker = [
            "docker",
            "run",
            "--rm",
            "--network=none",
            f"--cpus={resources.cores}",
            f"--memory={resources.memory_mb}m",
            *(["--gpus", str(resources.gpus)] if resources.gpus else []),
            *volumes,
            *forwarded,
            "-e",
            f"SMARTBKG_IMAGE={image}",
            image,
            *inner,
        ]
        return _shell(docker)

    def batch_script(self, campaign: Campaign, log_pattern: str, mounts: Sequence[str]) -> str:
        """The sbatch script; its one argument is the job list of the array."""
        lines = ["#!/bin/bash"]
        lines += [f"#SBATCH {option}" for option in self.sbatch_options(campaign, log_pattern)]
        lines += [
            "# smartbkg-prod array task: entry $SLURM_ARRAY_TASK_ID of the job list in $1",
            "set -euo pipefail",
            'export SMARTBKG_BACKEND_JOB_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
            'export SMARTBKG_SITE="${SLURMD_NODENAME:-$(hostname)}"',
            self.payload_command(campaign, '"$1"', mounts),
        ]
        return "\n".join(lines) + "\n"

    def _chunks(self, jobs: Sequence[JobInput]) -> list[Sequence[JobInput]]:
        size = max(1, self.max_array_size)
        return [jobs[start : start + size] for start in range(0, len(jobs), size)]

    def _array_option(self, campaign: Campaign, count: int) -> str:
        throttle = campaign.backend.max_parallel
        return f"--array=0-{count - 1}" + (f"%{throttle}" if throttle else "")

    def _write_batch(
        self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path, stem: str
    ) -> tuple[Path, list[Path]]:
        """The script and one job list per array chunk, written into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        lists = [
            write_job_list(directory / f"{stem}.{number:04d}.jsonl", chunk, campaign)
            for number, chunk in enumerate(self._chunks(jobs))
        ]
        mounts = sorted({str(directory), *(job.output_dir for job in jobs)})
        script = directory / f"{stem}.sbatch"
        script.write_text(self.batch_script(campaign, str(directory / f"{stem}.%A_%a.log"), mounts))
        return script, lists

    # -- the interface -------------------------------------------------------------------

    def submit(self, campaign: Campaign, jobs: Sequence[JobInput]) -> list[JobHandle]:
        if not jobs:
            return []
        directory = Path(jobs[0].output_dir) / "jobs" / "slurm"
        stem = f"{campaign.name}.{uuid.uuid4().hex[:10]}"
        script, lists = self._write_batch(campaign, jobs, directory, stem)
        handles: list[JobHandle] = []
        arrays: list[str] = []
        try:
            for chunk, job_list in zip(self._chunks(jobs), lists, strict=True):
                output = self._run(
                    [
                        "sbatch",
                        "--parsable",
                        self._array_option(campaign, len(chunk)),
                        str(script),
                        str(job_list),
                    ]
                )
                array_id = output.strip().split(";")[0]
                if not array_id.isdigit():
                    raise SubmitError(
                        f"slurm: sbatch printed {output.strip()!r}, expected a job id"
                    )
                arrays.append(array_id)
                self._watch_jobcomp([array_id], submitted=True)
                handles += [
                    attempt_handle(job_input, self.name, f"{array_id}_{task_id}")
                    for task_id, job_input in enumerate(chunk)
                ]
        except SubmitError:
            # All or nothing: a refused batch is no attempt at all (the driver withdraws
            # them), so arrays already accepted must not run behind its back.
            if arrays:
                self._run(["scancel", *arrays], check=False)
            raise
        return handles

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        """One squeue over every array of ``handles``; tasks it no longer shows (purged
        from the controller) are taken from the jobcomp file."""
        wanted = {handle.backend_job_id: _task_key(handle) for handle in handles}
        arrays = sorted({array_id for array_id, _ in wanted.values()})
        tasks = self._squeue_tasks(arrays) if arrays else {}
        if any(key not in tasks for key in wanted.values()):
            for key, task in self._jobcomp_tasks(arrays).items():
                tasks.setdefault(key, task)
        states = []
        for handle in handles:
            task = tasks.get(wanted[handle.backend_job_id])
            if task is None:
                states.append(
                    JobState(
                        handle=handle,
                        state="lost",
                        native_reason="job unknown to slurmctld and absent from the jobcomp file",
                    )
                )
            else:
                states.append(task.to_state(handle))
        return states

    def completions(self, handles: Sequence[JobHandle]) -> list[JobState]:
        """Finished tasks from the jobcomp file's new lines: no request to slurmctld."""
        wanted = {handle.backend_job_id: _task_key(handle) for handle in handles}
        tasks = self._jobcomp_tasks(sorted({array_id for array_id, _ in wanted.values()}))
        states = []
        for handle in handles:
            task = tasks.get(wanted[handle.backend_job_id])
            if task is not None:
                state = task.to_state(handle)
                if state.state in {"done", "failed", "cancelled"}:
                    states.append(state)
        return states

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        ids = [handle.backend_job_id for handle in handles]
        for start in range(0, len(ids), 500):
            self._run(["scancel", *ids[start : start + 500]])

    def render(self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path) -> list[Path]:
        """The sbatch script, its job lists and ``submit.sh`` with one sbatch per array."""
        script, lists = self._write_batch(campaign, jobs, Path(directory), campaign.name)
        submit = Path(directory) / "submit.sh"
        lines = ["#!/bin/sh", "# Submit every array of the campaign (review, then run).", "set -e"]
        for chunk, job_list in zip(self._chunks(jobs), lists, strict=True):
            command = [
                "sbatch",
                "--parsable",
                self._array_option(campaign, len(chunk)),
                str(script),
                str(job_list),
            ]
            lines.append(shlex.join(command))
        submit.write_text("\n".join(lines) + "\n")
        submit.chmod(0o755)
        return [script, submit, *lists]

    # -- talking to Slurm ----------------------------------------------------------------

    def _run(self, command: list[str], check: bool = True) -> str:
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
                timeout=120,
            )
        except FileNotFoundError:
            raise SubmitError(
                f"slurm: {command[0]!r} not found: run on a Slurm submit host "
                "(or start a test cluster: bash scripts/start-slurm-test-cluster.sh)"
            ) from None
        except subprocess.TimeoutExpired:
            raise SubmitError(f"slurm: {command[0]} did not answer within 120 s") from None
        if check and result.returncode != 0:
            raise SubmitError(f"slurm: {shlex.join(command[:3])} failed: {result.stderr.strip()}")
        return result.stdout

    def _squeue_tasks(self, array_ids: Sequence[str]) -> dict[tuple[str, int], SlurmTask]:
        """Every task of ``array_ids`` the controller still knows, from one squeue."""
        command = [
            "squeue",
            "--noheader",
            "--array",
            "--states=all",
            f"--jobs={','.join(array_ids)}",
            "--Format=" + ",".join(f"{name}:{SQUEUE_SEPARATOR}" for name in SQUEUE_FIELDS),
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60
            )
        except (FileNotFoundError, subprocess.TimeoutExpired) as error:
            raise SubmitError(f"slurm: cannot poll with squeue: {error}") from None
        if result.returncode != 0:
            # Every array purged from the controller: squeue refuses the list.
            if "Invalid job id" in result.stderr:
                return {}
            raise SubmitError(f"slurm: squeue failed: {result.stderr.strip()}")
        return tasks_from_squeue(result.stdout)

    def _watch_jobcomp(self, array_ids: Iterable[str], submitted: bool = False) -> None:
        jobcomp = self._jobcomp_file()
        if jobcomp is not None:
            jobcomp.watch(array_ids, submitted=submitted)

    def _jobcomp_tasks(self, array_ids: Sequence[str]) -> dict[tuple[str, int], SlurmTask]:
        jobcomp = self._jobcomp_file()
        if jobcomp is None:
            return {}
        jobcomp.watch(array_ids)
        return jobcomp.read()

    def _jobcomp_file(self) -> JobcompFile | None:
        """The cluster's jobcomp/filetxt file, looked up once: in slurm.conf when the submit
        host has it (no request to slurmctld), else with one ``scontrol show config``."""
        if not self._jobcomp_looked_up:
            self._jobcomp_looked_up = True
            environ = {**os.environ, **self.env}
            config = read_slurm_conf(Path(environ.get("SLURM_CONF", DEFAULT_SLURM_CONF)))
            if "JobCompType" not in config:
                config = parse_config(self._run(["scontrol", "show", "config"]))
            if config.get("JobCompType") == "jobcomp/filetxt" and config.get("JobCompLoc"):
                self._jobcomp = JobcompFile(Path(config["JobCompLoc"]))
        return self._jobcomp


def _task_key(handle: JobHandle) -> tuple[str, int]:
    array_id, _, task_id = handle.backend_job_id.partition("_")
    return array_id, int(task_id)


def read_slurm_conf(path: Path) -> dict[str, str]:
    """The ``Key=Value`` lines of a slurm.conf (keys as Slurm spells them in
    ``scontrol show config``), or {} when the file cannot be read (configless sites)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    spelled = {key.lower(): key for key in ("JobCompType", "JobCompLoc")}
    config = {}
    for line in text.splitlines():
        key, sep, value = line.split("#", 1)[0].partition("=")
        if sep and key.strip().lower() in spelled:
            config[spelled[key.strip().lower()]] = value.strip()
    return config


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as ``{key: value}``."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


_SHELL_VARIABLE = re.compile(r'^(\w+=)?("\$\w+"|\$\w+)$')


def _shell(command: Sequence[str]) -> str:
    """Quote a command for bash, leaving ``$VAR`` and ``"$1"`` words to the shell."""
    return " ".join(word if _SHELL_VARIABLE.match(word) else shlex.quote(word) for word in command)
