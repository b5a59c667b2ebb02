"""Run a campaign to completion on a backend, with retries, resume and exact accounting.

The driver is engine-agnostic: it asks a :class:`~smartbkg_prod.backends.base.Backend` to
submit attempts and for their states, and moves each attempt through its lifecycle
(:mod:`smartbkg_prod.lifecycle`); the worker's report (a file in the campaign's output
directory) is the source of truth for what an attempt produced. Re-running on the same
spec resumes: attempts the engine still runs are followed again, done jobs are kept, and
everything else runs again with the same seeds.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from smartbkg_prod.backends import get_backend
from smartbkg_prod.backends.base import Backend, JobHandle, JobState, apply_retry_changes
from smartbkg_prod.backends.polling import PollSchedule
from smartbkg_prod.errors import StoreError, SubmitError, SubmitRefused
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.files import sha256_file
from smartbkg_prod.lifecycle import (
    Action,
    AttemptView,
    FailedAttempt,
    NextStep,
    Observation,
    Phase,
    RetryDecider,
    observe,
    removed,
    submitted,
)
from smartbkg_prod.lifecycle import next_step as default_next_step
from smartbkg_prod.plan import Job, JobInput, campaign_output_dir, plan_jobs
from smartbkg_prod.redact import redact
from smartbkg_prod.report import JobReport, OutputFile, ReportError, read_report
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import CANCELLED, DONE, LEASE_RENEW_S, PENDING, CampaignStatus, Store
from smartbkg_prod.store.engine import EngineAttempt
from smartbkg_prod.store.ingest import record_backend_states

log = logging.getLogger("smartbkg_prod.submit")

# A poll that fails this many times in a row (with exponential backoff between tries,
# backends.polling) stops the driver with a SubmitError.
DEFAULT_POLL_RETRIES = 6


@dataclass
class _Progress:
    """A one-line progress bar on stderr with events/s (tqdm when interactive)."""

    total: int
    enabled: bool
    done: int = 0
    started: float = field(default_factory=time.time)
    _bar: object = None

    def __post_init__(self) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, unit="ev", unit_scale=True, file=sys.stderr, dynamic_ncols=True
            )

    def advance(self, events: int, failed: int) -> None:
        self.done += events
        if self._bar is not None:
            self._bar.update(events)
            self._bar.set_postfix(failed=failed, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def max_parallel_jobs(campaign: Campaign, backend: Backend | None = None) -> int | None:
    """Jobs the driver keeps in flight at once; None for all of them at once: when the
    engine throttles them itself (``backend.max_parallel`` running at a time), or when a
    remote engine's scheduler decides and the spec sets no limit."""
    if backend is not None and backend.throttles_submissions:
        return None
    if campaign.backend.max_parallel:
        return campaign.backend.max_parallel
    if backend is not None and backend.remote:
        return None
    return max(1, (os.cpu_count() or 1) // campaign.resources.cores)


# How `submit` checks the outputs of jobs already done when it resumes a campaign:
# "size" (default: existence and size, cheap), "sha256" (reads every file), "none".
VerifyOutputs = Literal["none", "size", "sha256"]


def output_problem(
    output: OutputFile, check: VerifyOutputs = "sha256", base: Path | None = None
) -> str | None:
    """Why an output file does not match its report, or None if it does.

    A relative path (a worker that ran in an engine's scratch directory, its outputs
    transferred back) is taken from ``base``, the campaign's output directory.
    """
    path = Path(output.path)
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        return f"output {path} is missing"
    size = path.stat().st_size
    if size != output.size_bytes:
        return f"output {path} has {size} bytes, its report says {output.size_bytes}"
    if check == "sha256" and sha256_file(path) != output.sha256:
        return f"output {path} fails its checksum"
    return None


def validate_report(report: JobReport, job: Job, base: Path | None = None) -> str | None:
    """Why a 'successful' report cannot be trusted, or None if it can."""
    if (
        report.job_index != job.index
        or report.first_event != job.first_event
        or report.n_events != job.n_events
    ):
        return "report describes another job or event range"
    if report.events_generated != job.n_events:
        return f"report says {report.events_generated} events generated, job has {job.n_events}"
    for output in report.outputs:
        problem = output_problem(output, base=base)
        if problem:
            return problem
    return None


@dataclass
class InFlight:
    """An attempt the engine has: its input, its handle, where it is in its lifecycle, and
    the engine's own ids seen for it (PandaIDs)."""

    job_input: JobInput
    handle: JobHandle
    view: AttemptView
    engine_ids: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[int, int]:
        return self.handle.job_index, self.handle.attempt


class CampaignRunner:
    """Drives one campaign on one backend until every job is done or out of attempts.

    The loop asks the backend for events (:meth:`_events`) and applies the attempt
    lifecycle's transitions to them (:meth:`_apply`, :mod:`smartbkg_prod.lifecycle`). What
    follows a failed attempt is the campaign's ``retry.policy``'s: under ``blind``
    :func:`smartbkg_prod.lifecycle.next_step`'s (the same job again while attempts last);
    under ``auto`` (the default) and ``review`` recovery's, taken once the attempt is stored
    (:meth:`_after_failures`: it reads the attempt's report and the campaign's record). A
    ``next_step`` given here (same signature as the lifecycle's) decides instead, under
    any policy. A resumed driver first follows again the attempts an
    earlier one left on the engine (:meth:`_resume`)."""

    def __init__(
        self,
        campaign: Campaign,
        store: Store,
        backend: Backend,
        output_dir: Path,
        max_parallel: int | None = None,
        progress: bool = False,
        poll_interval: float | None = None,
        poll_retries: int = DEFAULT_POLL_RETRIES,
        verify_outputs: VerifyOutputs = "size",
        next_step: RetryDecider | None = None,
    ):
        self.campaign = campaign
        self.store = store
        self.backend = backend
        self.output_dir = output_dir
        self.progress = progress
        # The engine's cadence, unless the command line or the spec sets one.
        self.schedule = PollSchedule(
            backend.poll_policy(poll_interval or campaign.backend.poll_interval_s)
        )
        self.poll_retries = max(1, poll_retries)
        self.verify_outputs = verify_outputs
        self.next_step = next_step
        self.jobs = {job.index: job for job in plan_jobs(campaign)}
        # Recovery may have split jobs (new indices, parent cancelled) and set per-job
        # resources / excluded sites for the next attempts.
        self.jobs.update(store.campaigns.split_jobs(campaign.campaign_id))
        self.max_parallel = (
            max_parallel or max_parallel_jobs(campaign, backend) or max(1, len(self.jobs))
        )
        self.overrides = store.campaigns.job_overrides(campaign.campaign_id)
        # Attempts of each job this submit has made or adopted (the retry budget).
        self.tries: Counter[int] = Counter()
        self.inflight: dict[int, InFlight] = {}
        self.failed = 0
        self.bar = _Progress(total=campaign.events, enabled=False)
        self._holder = ""
        self._renewed = 0.0
        # filter.tune: auto: jobs from tune_pilot_jobs on wait for the choice the pilot
        # jobs' reports give (recorded with the campaign; a resume reuses it).
        self.pilot_jobs = (
            campaign.filter.tune_pilot_jobs if campaign.filter.tune == "auto" else None
        )
        self.tuning = None
        if self.pilot_jobs is not None:
            from smartbkg_prod.tuning import recorded_tuning

            self.tuning = recorded_tuning(store, campaign.campaign_id)

    def run(self) -> CampaignStatus:
        """Drive the campaign; refused while another submitter drives it."""
        campaign_id = self.campaign.campaign_id
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.store.leases.acquire(campaign_id, self._holder)
        self._renewed = time.monotonic()
        try:
            return self._drive()
        finally:
            try:
                self.store.leases.release(campaign_id, self._holder)
            except StoreError as error:
                log.warning("could not release the campaign's driver lease: %s", error)

    def _drive(self) -> CampaignStatus:
        """The loop: launch what may run, wait, ask the engine, apply what it says."""
        self._resume()
        if self.verify_outputs != "none":
            self._reopen_damaged_outputs()
        todo = self._todo()
        self.bar = _Progress(total=self.campaign.events, enabled=self.progress)
        self.bar.advance(self._done_events(), 0)
        try:
            while todo or self.inflight:
                self._launch_ready(todo)
                if not self.inflight:
                    break
                self._wait()
                for state in self._events():
                    self._apply(state, todo)
        except BaseException:
            # Interrupted (Ctrl-C, submitter killed politely): stop the attempts in flight;
            # the next `submit` closes them from their reports and resumes.
            self._cancel_inflight()
            raise
        finally:
            self.bar.close()
        return self.store.campaigns.status(self.campaign.campaign_id)

    def _todo(self) -> deque[int]:
        states = self.store.campaigns.job_states(self.campaign.campaign_id)
        return deque(
            index
            for index in sorted(self.jobs)
            if states.get(index) not in (DONE, CANCELLED) and index not in self.inflight
        )

    def _done_events(self) -> int:
        states = self.store.campaigns.job_states(self.campaign.campaign_id)
        return sum(self.jobs[i].n_events for i, s in states.items() if s == DONE and i in self.jobs)

    def _wait(self) -> None:
        """Sleep until the engine is due to be asked, renewing the driver's lease."""
        now = time.monotonic()
        wake = min(self.schedule.arm(now), self._renewed + LEASE_RENEW_S)
        time.sleep(max(0.0, wake - now))
        if time.monotonic() - self._renewed >= LEASE_RENEW_S:
            self.store.leases.renew(self.campaign.campaign_id, self._holder)
            self._renewed = time.monotonic()

    def _events(self) -> list[JobState]:
        """What the engine says now: a query, or its own record of finished jobs."""
        due = self.schedule.due(time.monotonic())
        if due == "query":
            return self._poll()
        if due == "completions":
            # The engine's own record of finished jobs: no scheduler load.
            return self.backend.completions(self._handles())
        return []

    def _after_failures(self, failures: dict[int, int]) -> list[int]:
        """The jobs to run next for failed attempts (job -> attempts used), as ``retry.policy`` says
        (:func:`~smartbkg_prod.recovery.retry_policy.after_failures`: ``auto`` applies the
        safe recovery actions itself, ``review`` leaves every failed job to an operator,
        ``blind`` retries with the same seed and resources)."""
        if not failures:
            return []
        from smartbkg_prod.recovery.retry_policy import after_failures

        campaign_id = self.campaign.campaign_id
        steps = after_failures(self.store, self.campaign, failures)
        # A decision may have given jobs other resources, excluded a site or split a job.
        self.overrides = self.store.campaigns.job_overrides(campaign_id)
        self.jobs.update(self.store.campaigns.split_jobs(campaign_id))
        run_next = []
        for applied in steps:
            step = applied.step
            log.warning(
                "job %d attempt %d failed: %s (retry.policy %s): %s",
                step.job_index,
                step.attempt,
                step.action.value if step.verdict == "retry" else f"{step.action.value} proposed",
                self.campaign.retry.policy,
                step.reason,
            )
            run_next += applied.run_next
        return run_next

    def _handles(self) -> list[JobHandle]:
        return [flight.handle for flight in self.inflight.values()]

    # -- transitions ------------------------------------------------------------------

    def _apply(self, state: JobState, todo: deque[int]) -> None:
        """Apply the lifecycle's transition for one thing the engine said."""
        flight = self.inflight.get(state.handle.job_index)
        # An engine may announce a finished attempt twice (or one we no longer wait
        # for): only the attempt in flight moves.
        if flight is None or flight.handle.attempt != state.handle.attempt:
            return
        seen = Observation(state=state.state, at=time.time(), release_by=state.release_by)
        step = observe(flight.view, seen, self.campaign.backend.pending_timeout_s)
        if step.action == Action.IGNORE:
            return
        moved_on, flight.view = step.attempt != flight.view, step.attempt
        if step.note:
            log.warning(
                "job %d attempt %d: %s (%s)",
                *flight.key,
                step.note,
                state.native_code or state.native_reason or state.state,
            )
        if step.action == Action.REMOVE and not self._remove(flight):
            return
        if step.action in (Action.REMOVE, Action.INGEST):
            self._end(flight, state, todo)
        elif moved_on or (state.engine_id and state.engine_id not in flight.engine_ids):
            self._record_phase(flight, step.note, state.engine_id)

    def _remove(self, flight: InFlight) -> bool:
        """Cancel a held attempt and check with the engine that it is gone."""
        left = self.backend.remove([flight.handle])
        if left:
            log.warning(
                "job %d attempt %d (%s) is still on the engine after cancelling it: "
                "not resubmitting it yet",
                *flight.key,
                flight.handle.backend_job_id,
            )
            return False
        flight.view = removed(flight.view, time.time())
        return True

    def _record_phase(self, flight: InFlight, note: str = "", engine_id: str | None = None) -> None:
        if engine_id:
            flight.engine_ids.add(engine_id)
        self.store.engine.set_phase(
            self.campaign.campaign_id,
            *flight.key,
            flight.view.phase.value,
            flight.view.since,
            note=note,
            engine_id=engine_id,
        )

    def _end(self, flight: InFlight, state: JobState, todo: deque[int]) -> None:
        """An attempt ended on the engine: ingest it, then the job is done or decided."""
        index = flight.handle.job_index
        del self.inflight[index]
        if state.state != "done" and state.native_reason:
            # The engine's reason (a pilot's diagnostics, a hold reason) is kept where the
            # monitor keeps backend states; recovery reads it as a log line.
            record_backend_states(self.store, [state.record()])
        self._record_phase(flight, engine_id=state.engine_id)
        decision = self._ingest(flight, state)
        if decision is None:
            self.bar.advance(self.jobs[index].n_events, self.failed)
            return
        self.failed += 1
        self.bar.advance(0, self.failed)
        if self.next_step is None and self.campaign.retry.policy != "blind":
            # retry.policy auto / review: recovery decides, on the attempt as stored.
            todo.extend(self._after_failures({index: self.tries[index]}))
            return
        if not decision.retry:
            log.warning("job %d failed: %s", index, decision.reason)
            return
        if decision.changes is not None:
            self.overrides[index] = decision.changes
        log.warning("job %d attempt %d failed; retrying (%s)", *flight.key, decision.reason)
        todo.append(index)

    def _ingest(self, flight: InFlight, state: JobState) -> NextStep | None:
        """Store what the attempt produced; None when it succeeded, else the decision on
        what follows (made before storing it: a job that will not be retried is stored as
        failed)."""
        job_input, job = flight.job_input, self.jobs[flight.handle.job_index]
        report = self._read_report(job_input)
        problem = None
        if report is not None and report.succeeded:
            problem = validate_report(report, job, self.output_dir)
            if problem is None:
                self.store.reports.record(report)
                return None
            log.warning("job %d attempt %d: %s", *flight.key, problem)
        if report is not None and problem is None:
            failure = self._failure(flight, report.exit_code, report.error_class, state)
            decision = self._decide(failure)
            self.store.reports.record(
                report, final=not decision.retry, native_code=state.native_code
            )
            return decision
        if problem is not None:
            code, error_class = int(ExitCode.OUTPUT_VALIDATION), "output_validation"
        else:
            code, error_class = _unreported(state)
        failure = self._failure(flight, code, error_class, state)
        decision = self._decide(failure)
        self.store.attempts.finish(
            job.campaign_id,
            job.index,
            job_input.attempt,
            code,
            error_class,
            final=not decision.retry,
            native_code=state.native_code,
            site=state.site,
        )
        return decision

    def _failure(
        self, flight: InFlight, exit_code: int, error_class: str, state: JobState
    ) -> FailedAttempt:
        resources = flight.job_input.campaign.resources
        return FailedAttempt(
            job_index=flight.handle.job_index,
            attempt=flight.handle.attempt,
            attempts_used=self.tries[flight.handle.job_index],
            exit_code=exit_code,
            error_class=error_class,
            native_code=state.native_code,
            site=state.site or flight.handle.site,
            memory_mb=resources.memory_mb,
            walltime_s=resources.walltime_s,
        )

    def _decide(self, failure: FailedAttempt) -> NextStep:
        return (self.next_step or default_next_step)(failure, self.campaign.retry)

    # -- launching ----------------------------------------------------------------------

    def _launch_ready(self, todo: deque[int]) -> None:
        """Launch as many waiting jobs as may be in flight (pilot jobs first under
        ``filter.tune: auto``: the others wait for the tuning)."""
        self._tune_when_pilot_done(todo)
        batch, waiting = [], []
        while todo and len(self.inflight) + len(batch) < self.max_parallel:
            index = todo.popleft()
            (waiting if self._waits_for_tuning(index) else batch).append(index)
        todo.extendleft(reversed(waiting))
        if batch:
            self._launch([self.jobs[index] for index in batch])

    def _waits_for_tuning(self, index: int) -> bool:
        from smartbkg_prod.tuning import is_tuned_job

        return (
            self.pilot_jobs is not None
            and self.tuning is None
            and is_tuned_job(index, self.pilot_jobs)
        )

    def _tune_when_pilot_done(self, todo: deque[int]) -> None:
        """Make the ``filter.tune: auto`` choice once no pilot job is waiting or running."""
        if self.pilot_jobs is None or self.tuning is not None:
            return
        from smartbkg_prod.tuning import is_tuned_job, tune_campaign

        if any(not is_tuned_job(index, self.pilot_jobs) for index in [*todo, *self.inflight]):
            return
        from smartbkg_prod.filter.artifact import load_card

        model_scale = load_card(self.campaign.filter.model).calibration.scale
        self.tuning = tune_campaign(self.store, self.campaign, model_scale)

    def _job_tuning(self, index: int):
        from smartbkg_prod.tuning import is_tuned_job, job_tuning

        if self.pilot_jobs is None or not is_tuned_job(index, self.pilot_jobs):
            return None
        return job_tuning(self.tuning)

    def _job_input(self, index: int, attempt: int, campaign: Campaign | None = None) -> JobInput:
        return JobInput(
            job=self.jobs[index],
            campaign=campaign or self.campaign,
            attempt=attempt,
            output_dir=str(self.output_dir),
            backend=self.backend.name,
            filter_tuning=self._job_tuning(index),
        )

    def _poll(self) -> list[JobState]:
        """The engine's states, from one batched query; the schedule sets the next one.

        A slow answer stretches the delay; a failing poll (engine unreachable, command
        timing out) is retried later with backoff, and only ``poll_retries`` failures in a
        row stop the driver."""
        handles = self._handles()
        started = time.monotonic()
        try:
            states = self.backend.poll(handles)
        except Exception as error:  # noqa: BLE001 - engines raise many types
            delay = self.schedule.failed(time.monotonic())
            if self.schedule.failures >= self.poll_retries:
                raise SubmitError(
                    f"backend {self.backend.name}: poll failed {self.schedule.failures} times "
                    f"in a row (last error: {error}); the {len(handles)} attempt(s) in flight "
                    "stay open: re-run submit to resume once the engine answers"
                ) from error
            log.warning("backend poll failed (%s); retrying in %.1f s", error, delay)
            return []
        answer_s = time.monotonic() - started
        delay = self.schedule.answered(time.monotonic(), answer_s)
        if self.schedule.slow_answers:
            log.warning(
                "backend %s answered in %.1f s: next poll in %.0f s",
                self.backend.name,
                answer_s,
                delay,
            )
        return states

    def _launch(self, jobs: list[Job]) -> None:
        """Open an attempt for each job and submit them together (one array on grid engines).

        Jobs that recovery (or the retry decision) gave other resources or excluded sites
        go in their own submission, with the campaign as their next attempt sees it."""
        plain = [job for job in jobs if job.index not in self.overrides]
        if plain:
            self._submit(self.campaign, plain)
        for job in jobs:
            if job.index in self.overrides:
                self._submit(apply_retry_changes(self.campaign, self.overrides[job.index]), [job])

    def _submit(self, campaign: Campaign, jobs: list[Job]) -> None:
        """Open the attempts (pending), hand them to the engine, store what it calls them."""
        before = self.store.campaigns.job_states(self.campaign.campaign_id)
        job_inputs = []
        for job in jobs:
            attempt = self.store.attempts.start(
                job,
                self.backend.name,
                memory_mb=campaign.resources.memory_mb,
                walltime_s=campaign.resources.walltime_s,
            )
            self.tries[job.index] += 1
            job_inputs.append(self._job_input(job.index, attempt, campaign))
        try:
            handles = self.backend.submit(campaign, job_inputs)
        except SubmitError as error:
            self._withdraw(job_inputs, before, error)
        self.store.attempts.clear_refusals(self.campaign.campaign_id, [job.index for job in jobs])
        now = time.time()
        identities = []
        for job_input, handle in zip(job_inputs, handles, strict=True):
            self.store.attempts.set_backend_job_id(
                self.campaign.campaign_id,
                job_input.job.index,
                job_input.attempt,
                handle.backend_job_id,
            )
            view = submitted(
                AttemptView(job_input.job.index, job_input.attempt, Phase.PENDING, now), now
            )
            self.inflight[job_input.job.index] = InFlight(job_input, handle, view)
            identities.append(handle.identity(view.phase.value, view.since))
        self.store.engine.record_submitted(identities)

    def _withdraw(self, job_inputs: list[JobInput], before: dict[int, str], error: SubmitError):
        """The engine refused the batch or could not be reached: nothing runs, so no
        attempt was made. The jobs go back to what they were, with the engine's words."""
        message = " ".join(redact(str(error)).split())
        for job_input in job_inputs:
            index = job_input.job.index
            self.store.attempts.withdraw(
                self.campaign.campaign_id,
                index,
                job_input.attempt,
                self.backend.name,
                message,
                state=before.get(index, PENDING),
            )
            self.tries[index] -= 1
        raise SubmitRefused(
            f"{message} ({len(job_inputs)} job(s) not submitted, no attempt used; "
            "re-run submit once the engine takes them)"
        ) from None

    # -- resume ---------------------------------------------------------------------------

    def _resume(self) -> None:
        """Attempts an earlier driver left open: those the engine may still run (their
        identity stored, or found by the backend's :meth:`~Backend.locate`, on this backend)
        are followed again; the others are ingested from their reports or closed as lost."""
        campaign_id = self.campaign.campaign_id
        known = {(a.job_index, a.attempt): a for a in self.store.engine.open(campaign_id)}
        adopted = []
        for index, numbers in self.store.attempts.running(campaign_id).items():
            for attempt in sorted(numbers):
                record = known.get((index, attempt))
                job_input = self._job_input(index, attempt)
                if record is None and attempt == max(numbers):
                    record = self._locate(job_input)
                if (
                    record is not None
                    and record.backend == self.backend.name
                    and attempt == max(numbers)
                ):
                    adopted.append((record, job_input))
                else:
                    self._close_unfollowed(job_input)
        if adopted:
            self._adopt(adopted)

    def _locate(self, job_input: JobInput) -> EngineAttempt | None:
        """An open attempt without stored identity (the earlier driver was killed between
        the engine taking it and the store write): asked of the engine by what names it,
        before it may be called lost. What the engine finds is stored now."""
        handle = self.backend.locate(job_input)
        if handle is None:
            return None
        index, attempt = job_input.job.index, job_input.attempt
        log.warning("found job %d attempt %d on %s by its name", index, attempt, self.backend.name)
        self.store.attempts.set_backend_job_id(
            self.campaign.campaign_id, index, attempt, handle.backend_job_id
        )
        record = handle.identity(Phase.SUBMITTED.value, time.time())
        self.store.engine.record_submitted([record])
        return record

    def _adopt(self, adopted: list[tuple[EngineAttempt, JobInput]]) -> None:
        pairs = []
        for record, job_input in adopted:
            handle = JobHandle.from_identity(record)
            view = AttemptView(
                record.job_index, record.attempt, Phase(record.phase), record.phase_since
            )
            self.inflight[record.job_index] = InFlight(
                job_input, handle, view, set(record.engine_ids)
            )
            self.tries[record.job_index] += 1
            pairs.append((handle, job_input))
        self.backend.adopt(pairs)
        log.warning(
            "following %d attempt(s) an earlier submitter left on %s", len(pairs), self.backend.name
        )

    def _close_unfollowed(self, job_input: JobInput) -> None:
        """An open attempt the engine cannot be asked about (no identity stored, another
        backend, an older attempt of the job): its report, or lost."""
        index, campaign_id = job_input.job.index, self.campaign.campaign_id
        report = self._read_report(job_input)
        if (
            report is not None
            and validate_report(report, self.jobs[index], self.output_dir) is None
        ):
            self.store.reports.record(report)
            phase = Phase.FINISHED
        else:
            self.store.attempts.finish(
                campaign_id, index, job_input.attempt, int(ExitCode.UNEXPECTED), "lost", final=False
            )
            phase = Phase.LOST
        self.store.engine.set_phase(campaign_id, index, job_input.attempt, phase.value, time.time())

    def _cancel_inflight(self) -> None:
        try:
            self.backend.cancel(self._handles())
        except Exception as error:  # noqa: BLE001 - keep the original error
            log.warning("could not cancel the attempts in flight: %s", error)
            return
        now = time.time()
        for flight in self.inflight.values():
            flight.view = removed(flight.view, now)
            try:
                self._record_phase(flight)
            except StoreError as error:
                log.warning(
                    "could not record job %d attempt %d as cancelled: %s", *flight.key, error
                )
                return

    # -- reports and outputs --------------------------------------------------------------

    @staticmethod
    def _read_report(job_input: JobInput) -> JobReport | None:
        try:
            return read_report(job_input.report_file)
        except ReportError as error:
            if job_input.report_file.exists():
                log.warning("%s", error)
            return None

    def _reopen_damaged_outputs(self) -> None:
        """Done jobs whose output went missing or was damaged since are produced again."""
        campaign_id = self.campaign.campaign_id
        for index, reports in self.store.reports.done_outputs(campaign_id).items():
            # The files must match one successful attempt's report (two attempts of a
            # job may both have succeeded; the file is whichever was moved in last).
            problems = [
                next(filter(None, (self._output_problem(output) for output in outputs)), None)
                for outputs in reports
            ]
            if problems and all(problems):
                log.warning("job %d is done but %s: producing it again", index, problems[-1])
                self.store.reports.invalidate_outputs(campaign_id, index)

    def _output_problem(self, output: dict) -> str | None:
        return output_problem(OutputFile.model_validate(output), self.verify_outputs)


def _unreported(state: JobState) -> tuple[int, str]:
    """Exit code and error class of an attempt that ended without a usable report."""
    if state.state == "lost":
        return int(ExitCode.UNEXPECTED), "lost"
    if state.exit_code in (None, 0):
        return int(ExitCode.UNEXPECTED), "lost_report"
    return state.exit_code, _error_class(state.exit_code)


def _error_class(code: int) -> str:
    if code > 128:
        return f"signal_{code - 128}"
    try:
        return ExitCode(code).name.lower()
    except ValueError:
        return f"exit_{code}"


def check_image_provenance(store: Store, campaign: Campaign, digest: str) -> None:
    """Record the campaign's image digest, or refuse a different one while jobs remain.

    The first submission stores ``image`` and ``image_digest`` in the campaign's
    provenance. A later submission (resume, retries) with another digest under the same
    image name would mix two images' outputs in one campaign: refused with SubmitError
    unless every job is already done.
    """
    row = store.campaigns.get(campaign.campaign_id)
    if row is None:
        raise SubmitError(
            f"campaign {campaign.campaign_id} is not registered: register it before checking its image"
        )
    recorded = (row.provenance or {}).get("image_digest")
    if recorded is None:
        store.campaigns.update_provenance(
            campaign.campaign_id, {"image": campaign.container.image, "image_digest": digest}
        )
        return
    if recorded == digest:
        return
    states = store.campaigns.job_states(campaign.campaign_id)
    if states and all(state == DONE for state in states.values()):
        return
    raise SubmitError(
        f"image {campaign.container.image!r} changed under campaign {campaign.campaign_id}: "
        f"recorded {recorded}, now {digest}. Restore the recorded image, or start a new campaign "
        "with a new tag (container.image) so its outputs are not mixed"
    )


def submit_campaign(
    campaign: Campaign,
    *,
    spec_path: str = "",
    db_url: str | None = None,
    store: Store | None = None,
    backend: Backend | str | None = None,
    max_parallel: int | None = None,
    progress: bool = False,
    base_dir: Path | None = None,
    poll_interval: float | None = None,
    poll_retries: int = DEFAULT_POLL_RETRIES,
    verify_outputs: VerifyOutputs = "size",
    next_step: RetryDecider | None = None,
) -> CampaignStatus:
    """Register ``campaign`` (idempotent) and run whatever of it is not done yet.
    ``next_step`` decides what follows a failed attempt (:mod:`smartbkg_prod.lifecycle`)
    instead of the campaign's ``retry.policy``.

    >>> # status = submit_campaign(load_campaign("job_specs/demo.yaml"), progress=True)
    """
    store = store or Store(db_url)
    if not isinstance(backend, Backend):
        backend = get_backend(backend or campaign.backend.name, campaign)
    if backend.name != campaign.backend.name:
        # The backend is not part of the campaign's identity: the same campaign may be
        # resumed elsewhere, and its record says where it runs now.
        campaign = campaign.model_copy(
            update={"backend": campaign.backend.model_copy(update={"name": backend.name})}
        )
    existing = store.campaigns.get(campaign.campaign_id)
    # A resumed campaign keeps the output directory it was registered with.
    output_dir = Path(existing.output_dir) if existing else campaign_output_dir(campaign, base_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    store.campaigns.register(campaign, plan_jobs(campaign), output_dir, spec_path=spec_path)
    image_digest = getattr(backend, "image_digest", None)
    if image_digest:
        # The image is part of the campaign's provenance: refuse one that changed under it.
        check_image_provenance(store, campaign, image_digest)
    runner = CampaignRunner(
        campaign,
        store,
        backend,
        output_dir,
        max_parallel=max_parallel,
        progress=progress,
        poll_interval=poll_interval,
        poll_retries=poll_retries,
        verify_outputs=verify_outputs,
        next_step=next_step,
    )
    return runner.run()


def render_campaign(
    campaign: Campaign, directory: Path, backend: Backend | str | None = None
) -> list[Path]:
    """Write the native submission of every job (attempt 1) into ``directory`` for review."""
    if not isinstance(backend, Backend):
        backend = get_backend(backend or campaign.backend.name, campaign)
    output_dir = campaign_output_dir(campaign)
    job_inputs = [
        JobInput(job=job, campaign=campaign, output_dir=str(output_dir), backend=backend.name)
        for job in plan_jobs(campaign)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    return backend.render(campaign, job_inputs, directory)
