"""The embedded default backend: worker processes on this machine.

Each attempt is one ``smartbkg-prod worker --job FILE`` subprocess in its own process
group and session (so cancel kills the whole tree, and a worker outlives a killed
submitter); stdout and stderr go to a log file next to the job file. A resumed driver
adopts the workers an earlier one started by pid (:meth:`LocalBackend.adopt`): a pid
counts as the attempt's worker only while its command line names the attempt's job file
(so a reused pid is not mistaken for it); once it is gone the report says how it ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from smartbkg_prod.backends.base import (
    Backend,
    JobHandle,
    JobState,
    attempt_handle,
    exit_status,
    finished_state,
    job_file_path,
    worker_command,
    write_job_file,
)
from smartbkg_prod.plan import JobInput
from smartbkg_prod.spec import Campaign


class LocalBackend(Backend):
    """Runs attempts as local subprocesses."""

    name = "local"

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python
        self.env = env
        self._processes: dict[str, subprocess.Popen] = {}
        # pid -> job file of workers started by an earlier driver (not our children).
        self._adopted: dict[str, str] = {}

    def adopt(self, attempts: Sequence[tuple[JobHandle, JobInput]]) -> None:
        for handle, job_input in attempts:
            self._adopted[handle.backend_job_id] = str(job_file_path(job_input))

    def locate(self, job_input: JobInput) -> JobHandle | None:
        """A live worker of the attempt's job file (the process group leader our submit
        started), found in /proc."""
        job_file = str(job_file_path(job_input))
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and worker_running(int(entry.name), job_file, leader=True):
                return attempt_handle(job_input, self.name, entry.name, site="local")
        return None

    def submit(self, campaign: Campaign, jobs: Sequence[JobInput]) -> list[JobHandle]:
        handles = []
        for job_input in jobs:
            job_file = write_job_file(job_input)
            log_file = job_file.with_suffix(".log")
            with open(log_file, "ab") as log:
                process = subprocess.Popen(
                    worker_command(str(job_file), self.python),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **(self.env or {})},
                    start_new_session=True,
                )
            backend_id = str(process.pid)
            self._processes[backend_id] = process
            handles.append(attempt_handle(job_input, self.name, backend_id, site="local"))
        return handles

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        states = []
        for handle in handles:
            process = self._processes.get(handle.backend_job_id)
            if process is None:
                states.append(self._adopted_state(handle))
                continue
            returncode = process.poll()
            if returncode is None:
                states.append(JobState(handle=handle, state="running", site="local"))
                continue
            self._processes.pop(handle.backend_job_id, None)
            code, native = exit_status(returncode)
            states.append(finished_state(handle, code, native, site="local"))
        return states

    def _adopted_state(self, handle: JobHandle) -> JobState:
        """A worker an earlier driver started: running while its pid runs it; then its
        exit status went to that driver, and the report tells how it ended."""
        job_file = self._adopted.get(handle.backend_job_id)
        if job_file is None:
            return JobState(
                handle=handle, state="lost", native_reason="no worker of this driver", site="local"
            )
        if worker_running(int(handle.backend_job_id), job_file):
            return JobState(handle=handle, state="running", site="local")
        self._adopted.pop(handle.backend_job_id)
        return JobState(handle=handle, state="done", site="local")

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        for handle in handles:
            job_file = self._adopted.pop(handle.backend_job_id, None)
            if job_file is not None and worker_running(int(handle.backend_job_id), job_file):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(handle.backend_job_id), signal.SIGKILL)
            process = self._processes.pop(handle.backend_job_id, None)
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def render(self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path) -> list[Path]:
        """The job files and the exact commands the local backend would run."""
        directory.mkdir(parents=True, exist_ok=True)
        files = [write_job_file(job_input, directory) for job_input in jobs]
        script = directory / "run_local.sh"
        lines = ["#!/bin/sh", "set -e"]
        lines += [" ".join(worker_command(str(path), "python3")) for path in files]
        script.write_text("\n".join(lines) + "\n")
        return [*files, script]


def worker_running(pid: int, job_file: str, leader: bool = False) -> bool:
    """Whether ``pid`` is a live (not zombie) worker process of ``job_file`` (with
    ``leader``: the leader of its process group, as :meth:`LocalBackend.submit` starts it,
    not a child it forked)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # After the command name: state, ppid, process group, ...
    state, _, group = stat.rsplit(") ", 1)[-1].split()[:3]
    worker = [os.fsencode(arg) for arg in worker_command(job_file)[1:]]
    return _contains(cmdline, worker) and state != "Z" and (not leader or int(group) == pid)


def _contains(words: list[bytes], run: list[bytes]) -> bool:
    return any(words[i : i + len(run)] == run for i in range(len(words) - len(run) + 1))
