"""The embedded default backend: worker processes on this machine.

Each attempt is one ``smartbkg-prod worker --job FILE`` subprocess in its own process
group (so cancel kills the whole tree); stdout and stderr go to a log file next to the
job file.
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
                # Not started by this process (e.g. a submitter restarted): it is lost.
                states.append(
                    JobState(handle=handle, state="failed", native_code="lost", site="local")
                )
                continue
            returncode = process.poll()
            if returncode is None:
                states.append(JobState(handle=handle, state="running", site="local"))
                continue
            self._processes.pop(handle.backend_job_id, None)
            code, native = exit_status(returncode)
            states.append(finished_state(handle, code, native, site="local"))
        return states

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        for handle in handles:
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
