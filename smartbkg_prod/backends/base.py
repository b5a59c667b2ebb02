"""The one small interface every engine implements.

``submit(campaign, jobs) -> handles``, ``poll(handles) -> states``, ``cancel(handles)`` and
``render(campaign, jobs) -> native files``, plus ``completions(handles) -> states`` for an
engine that writes finished jobs down itself. Shared logic (job input files, worker command
line, resource resolution per site) lives here so an engine module only adds what is
native to it.

There is no engine-side ``retry``: the driver owns every retry (README, "Who retries").
Every attempt is a row in the store with its own number, job file and resources, and the
retry decision (:func:`smartbkg_prod.lifecycle.next_step`) or recovery's changes reach the
engine as a new submission. Native retries are off (Slurm ``--no-requeue``, PanDA
``maxAttempt = 1``, no HTCondor ``max_retries``); the one native step left inside an
attempt is HTCondor's release of a transient hold of a job that never started.

A resumed driver rebuilds handles from what the store kept at submission (the handle's
fields: ``backend_job_id``, ``site``, ``log``) and calls :meth:`Backend.adopt` so the
engine module follows them again; ``poll`` then says whether each is still queued,
running, held, finished, or ``lost`` (the engine does not know it any more).
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from smartbkg_prod.backends.polling import PollPolicy
from smartbkg_prod.files import write_text_atomic
from smartbkg_prod.plan import Job, JobInput, RetryChanges
from smartbkg_prod.spec import Campaign, Resources
from smartbkg_prod.store.engine import EngineAttempt
from smartbkg_prod.store.ingest import BackendStateRecord


class JobHandle(BaseModel):
    """A submitted attempt as the engine knows it."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    job_index: int
    attempt: int
    backend: str
    backend_job_id: str
    site: str | None = None
    # Where the engine writes this attempt down, when the handle alone does not say
    # (HTCondor: the cluster's job event log).
    log: str | None = None

    def identity(self, phase: str, since: float) -> EngineAttempt:
        """What the store keeps to find the attempt on the engine again (and its phase)."""
        return EngineAttempt(**self.model_dump(), phase=phase, phase_since=since)

    @classmethod
    def from_identity(cls, stored: EngineAttempt) -> JobHandle:
        """The handle of an attempt an earlier driver submitted, as the store kept it."""
        return cls.model_validate(stored.model_dump(include=set(cls.model_fields)))


class JobState(BaseModel):
    """An attempt's state as polled from the engine, with the engine's own code."""

    model_config = ConfigDict(extra="forbid")

    handle: JobHandle
    # pending | running | held | done | failed | cancelled | lost (the engine does not know
    # the attempt any more)
    state: str
    exit_code: int | None = None
    native_code: str | None = None  # e.g. "HoldReasonCode=34/102", "slurm:OUT_OF_MEMORY"
    native_reason: str = ""
    site: str | None = None
    # A held attempt the engine's own policy will release (HTCondor periodic_release):
    # the time (epoch s) by which it will have done so; math.inf for a hold a person placed
    # and releases (Slurm JobHeldUser). None: nothing releases it, the driver removes it at
    # once and counts a failure.
    release_by: float | None = None
    # The engine's own id of the job that ran the attempt, where it differs from the
    # handle's (a PandaID of a task entry).
    engine_id: str | None = None

    def record(self) -> BackendStateRecord:
        """The state as the store keeps it (``monitor_backend_states``)."""
        return BackendStateRecord(
            campaign_id=self.handle.campaign_id,
            job_index=self.handle.job_index,
            attempt=self.handle.attempt,
            backend=self.handle.backend,
            backend_job_id=self.handle.backend_job_id,
            state=self.state,
            exit_code=self.exit_code,
            native_code=self.native_code,
            native_reason=self.native_reason,
            site=self.site or self.handle.site,
        )


class Backend(ABC):
    """Base class for engines. Subclasses set ``name`` and implement the abstract methods."""

    name: str = "base"
    # The engine's default cadence (README, "Backends"): seconds between two queries of
    # the engine, and between two reads of its own record of finished jobs (None: none).
    poll_interval_s: ClassVar[float] = 0.2
    completion_interval_s: ClassVar[float | None] = None
    # True when the engine itself keeps at most backend.max_parallel of a submission
    # running (Slurm's array throttle, HTCondor's max_materialize): the driver then hands
    # it every job at once instead of trickling them in.
    throttles_submissions: ClassVar[bool] = False
    # True for an engine whose own scheduler decides how many jobs run (a cluster, the
    # grid): without backend.max_parallel it gets every job at once, since the submit
    # host's core count means nothing there.
    remote: ClassVar[bool] = False

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> Backend:
        """An instance configured from ``campaign.backend`` (engines override)."""
        return cls()

    @abstractmethod
    def submit(self, campaign: Campaign, jobs: Sequence[JobInput]) -> list[JobHandle]: ...

    @abstractmethod
    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]: ...

    @abstractmethod
    def cancel(self, handles: Sequence[JobHandle]) -> None: ...

    def adopt(self, attempts: Sequence[tuple[JobHandle, JobInput]]) -> None:
        """Follow attempts that an earlier driver submitted (handles rebuilt from the
        store, with each attempt's input): engines that keep per-attempt state in memory
        (an event log to read, a report to fetch) set it up again here."""
        return None

    def locate(self, job_input: JobInput) -> JobHandle | None:
        """The handle of an attempt whose identity never reached the store (the driver
        died between the engine taking it and the store write), found on the engine by what
        names the attempt deterministically; None where the engine cannot be asked so."""
        return None

    def remove(self, handles: Sequence[JobHandle], timeout_s: float = 60.0) -> list[JobHandle]:
        """Cancel ``handles`` and check with the engine that they are gone (ended, or
        unknown to it); returns those still there after ``timeout_s``."""
        if not handles:
            return []
        self.cancel(handles)
        deadline = time.monotonic() + timeout_s
        delay = 0.5
        left = list(handles)
        while left:
            states = {state.handle.backend_job_id: state for state in self.poll(left)}
            left = [
                handle
                for handle in left
                if states[handle.backend_job_id].state in {"pending", "running", "held"}
            ]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        return left

    def completions(self, handles: Sequence[JobHandle]) -> list[JobState]:
        """Final states of ``handles`` that the engine has already written down (Slurm's
        jobcomp file, HTCondor's job event log), read without asking the scheduler; the
        driver reads them every ``completion_interval_s``. Handles not found are left out."""
        return []

    def poll_policy(self, interval_s: float | None = None) -> PollPolicy:
        """The engine's cadence, with ``interval_s`` (spec or command line) if given."""
        return PollPolicy(
            interval_s=interval_s or self.poll_interval_s,
            completion_interval_s=self.completion_interval_s,
        )

    def render(self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path) -> list[Path]:
        """Write the native submission files into ``directory`` for review (dry run)."""
        raise NotImplementedError(f"backend {self.name!r} has no dry-run rendering")


def apply_changes(resources: Resources, changes: RetryChanges) -> Resources:
    update = {}
    if changes.memory_mb is not None:
        update["memory_mb"] = changes.memory_mb
    if changes.walltime_s is not None:
        update["walltime_s"] = changes.walltime_s
    return resources.model_copy(update=update)


def apply_retry_changes(campaign: Campaign, changes: RetryChanges) -> Campaign:
    """The campaign as the next attempt sees it: new resources, more excluded sites.

    Resources, backend and retry policy are outside the campaign id, so the id is kept.
    """
    excluded = list(campaign.backend.sites.excluded)
    excluded += [site for site in changes.exclude_sites if site not in excluded]
    sites = campaign.backend.sites.model_copy(update={"excluded": excluded})
    return campaign.model_copy(
        update={
            "resources": apply_changes(campaign.resources, changes),
            "backend": campaign.backend.model_copy(update={"sites": sites}),
        }
    )


def site_resources(campaign: Campaign, site: str | None = None) -> Resources:
    """Resources for jobs at ``site``: the site's override from the spec, else the default.

    Without ``site``, a campaign allowed on exactly one site gets that site's override.
    """
    allowed = campaign.backend.sites.allowed
    if site is None and len(allowed) == 1:
        site = allowed[0]
    if site is not None and site in campaign.backend.sites.overrides:
        return campaign.backend.sites.overrides[site]
    return campaign.resources


def exit_status(returncode: int) -> tuple[int, str | None]:
    """A process's return code (negative: killed by that signal) as a shell exit status
    (128 + signal) and a native code."""
    if returncode < 0:
        return 128 - returncode, f"signal:{-returncode}"
    return returncode, None


def finished_state(
    handle: JobHandle, exit_code: int, native_code: str | None, site: str | None, reason: str = ""
) -> JobState:
    """The state of an attempt whose process ended with ``exit_code``: done on 0."""
    return JobState(
        handle=handle,
        state="done" if exit_code == 0 else "failed",
        exit_code=exit_code,
        native_code=native_code,
        native_reason=reason,
        site=site,
    )


def attempt_handle(
    job_input: JobInput, backend: str, backend_job_id: str, site: str | None = None
) -> JobHandle:
    """The handle of a submitted attempt."""
    return JobHandle(
        campaign_id=job_input.job.campaign_id,
        job_index=job_input.job.index,
        attempt=job_input.attempt,
        backend=backend,
        backend_job_id=backend_job_id,
        site=site,
    )


def split_job(job: Job, parts: int) -> list[Job]:
    """Split a job's event range into ``parts`` contiguous ranges covering the same events.

    Sub-jobs keep the parent's seed offset scheme: the worker skips to ``first_event``
    within the parent's random stream, so no event is lost or produced twice.
    """
    parts = max(1, min(parts, job.n_events))
    base, extra = divmod(job.n_events, parts)
    stream_start = job.first_event if job.stream_start is None else job.stream_start
    jobs, first = [], job.first_event
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        jobs.append(
            job.model_copy(
                update={"first_event": first, "n_events": size, "stream_start": stream_start}
            )
        )
        first += size
    return jobs


def job_file_path(job_input: JobInput, directory: Path | None = None) -> Path:
    """Where an attempt's job file lives: ``<output_dir>/jobs/<job>.attemptN.json``."""
    directory = Path(job_input.output_dir) / "jobs" if directory is None else Path(directory)
    return directory / f"{job_input.job.name}.attempt{job_input.attempt}.json"


def write_job_file(job_input: JobInput, directory: Path | None = None) -> Path:
    """Write the worker's input file atomically and return its path."""
    path = job_file_path(job_input, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, job_input.model_dump_json(indent=1))
    return path


def worker_command(
    job_file: str, python: str | None = None, index: str | int | None = None
) -> list[str]:
    """The worker's command line, identical for every backend.

    ``index`` selects an entry of a job list (an int, or an engine placeholder such as
    ``$SLURM_ARRAY_TASK_ID`` that the engine fills in).
    """
    command = [python or sys.executable, "-m", "smartbkg_prod.cli", "worker", "--job", job_file]
    return command if index is None else [*command, "--index", str(index)]
