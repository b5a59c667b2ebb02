"""Run a campaign to completion on a backend, with retries, resume and exact accounting.

The driver is engine-agnostic: it asks a :class:`~smartbkg_prod.backends.base.Backend` to
submit attempts and polls them; the worker's report (a file in the campaign's output
directory) is the source of truth for what an attempt produced. Re-running on the same
spec resumes: done jobs are kept, everything else runs again with the same seeds.
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
from smartbkg_prod.plan import Job, JobInput, campaign_output_dir, plan_jobs
from smartbkg_prod.redact import redact
from smartbkg_prod.report import JobReport, OutputFile, ReportError, read_report
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import CANCELLED, DONE, LEASE_RENEW_S, PENDING, CampaignStatus, Store
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


class CampaignRunner:
    """Drives one campaign on one backend until every job is done or out of attempts."""

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
        self.jobs = {job.index: job for job in plan_jobs(campaign)}
        # Recovery may have split jobs (new indices, parent cancelled) and set per-job
        # resources / excluded sites for the next attempts.
        self.jobs.update(store.campaigns.split_jobs(campaign.campaign_id))
        self.max_parallel = (
            max_parallel or max_parallel_jobs(campaign, backend) or max(1, len(self.jobs))
        )
        self.overrides = store.campaigns.job_overrides(campaign.campaign_id)
        self.tries: Counter[int] = Counter()
        self.inflight: dict[int, tuple[JobInput, JobHandle]] = {}
        # filter.tune: auto: jobs from tune_pilot_jobs on wait for the choice the pilot
        # jobs' reports give (recorded with the campaign; a resume reuses it).
        self.pilot_jobs = (
            campaign.filter.tune_pilot_jobs if campaign.filter.tune == "auto" else None
        )
        self.tuning = None
        if self.pilot_jobs is not None:
            from smartbkg_prod.tuning import recorded_tuning

            self.tuning = recorded_tuning(store, campaign.campaign_id)
        self._waiting_holds: set[tuple[int, int]] = set()

    def run(self) -> CampaignStatus:
        """Drive the campaign; refused while another submitter drives it."""
        campaign_id = self.campaign.campaign_id
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.store.leases.acquire(campaign_id, holder)
        try:
            return self._drive(holder)
        finally:
            try:
                self.store.leases.release(campaign_id, holder)
            except StoreError as error:
                log.warning("could not release the campaign's driver lease: %s", error)

    def _drive(self, holder: str) -> CampaignStatus:
        campaign_id = self.campaign.campaign_id
        renewed = time.monotonic()
        self._close_stale_attempts()
        if self.verify_outputs != "none":
            self._reopen_damaged_outputs()
        states = self.store.campaigns.job_states(campaign_id)
        todo = deque(
            index for index in sorted(self.jobs) if states.get(index) not in (DONE, CANCELLED)
        )
        done_events = sum(
            self.jobs[i].n_events for i, s in states.items() if s == DONE and i in self.jobs
        )
        bar = _Progress(total=self.campaign.events, enabled=self.progress)
        bar.advance(done_events, 0)
        failed = 0
        try:
            while todo or self.inflight:
                self._tune_when_pilot_done(todo)
                batch, waiting = [], []
                while todo and len(self.inflight) + len(batch) < self.max_parallel:
                    index = todo.popleft()
                    if self._waits_for_tuning(index):
                        waiting.append(index)
                    else:
                        batch.append(self.jobs[index])
                todo.extendleft(reversed(waiting))
                if batch:
                    self._launch(batch)
                if not self.inflight:
                    break
                now = time.monotonic()
                wake = min(self.schedule.arm(now), renewed + LEASE_RENEW_S)
                time.sleep(max(0.0, wake - now))
                now = time.monotonic()
                if now - renewed >= LEASE_RENEW_S:
                    self.store.leases.renew(campaign_id, holder)
                    renewed = now
                due = self.schedule.due(now)
                if due == "query":
                    states = self._poll()
                elif due == "completions":
                    # The engine's own record of finished jobs: no scheduler load.
                    states = self.backend.completions(self._handles())
                else:
                    continue
                for state in states:
                    if state.state not in {"done", "failed", "cancelled", "held"}:
                        continue
                    index = state.handle.job_index
                    # An engine may announce a finished attempt twice (or one we no longer
                    # wait for): only the attempt in flight is ingested, once.
                    current = self.inflight.get(index)
                    if current is None or current[0].attempt != state.handle.attempt:
                        continue
                    if state.state == "held":
                        if not self._give_up_hold(state):
                            continue
                        self.backend.cancel([state.handle])
                    succeeded = self._finish(index, state)
                    if succeeded:
                        bar.advance(self.jobs[index].n_events, failed)
                        continue
                    failed += 1
                    bar.advance(0, failed)
                    if self.tries[index] < self.campaign.retry.max_attempts:
                        log.warning("job %d attempt failed; retrying with the same seed", index)
                        todo.append(index)
        except BaseException:
            # Interrupted (Ctrl-C, submitter killed politely): stop workers, leave the
            # attempts open so the next `submit` closes them and resumes.
            try:
                self.backend.cancel([handle for _, handle in self.inflight.values()])
            except Exception as error:  # noqa: BLE001 - keep the original error
                log.warning("could not cancel the attempts in flight: %s", error)
            raise
        finally:
            bar.close()
        return self.store.campaigns.status(campaign_id)

    def _handles(self) -> list[JobHandle]:
        return [handle for _, handle in self.inflight.values()]

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

    def _give_up_hold(self, state: JobState) -> bool:
        """Whether a held attempt is removed now (and counted as a failure).

        An attempt the engine's own policy will release (``release_by``, e.g. HTCondor's
        ``periodic_release`` of transient holds) is left alone until that time has passed;
        one that nothing releases (a permanent hold code, released attempts run out, an
        engine with no automatic release) would wait for a person: the driver's retry
        policy decides instead, at once."""
        if state.release_by is None or time.time() > state.release_by:
            return True
        key = (state.handle.job_index, state.handle.attempt)
        if key not in self._waiting_holds:
            self._waiting_holds.add(key)
            log.warning(
                "job %d attempt %d held (%s); the engine releases it by %s, waiting",
                state.handle.job_index,
                state.handle.attempt,
                state.native_code or state.native_reason,
                time.strftime("%H:%M:%S", time.localtime(state.release_by)),
            )
        return False

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

        Jobs that recovery gave other resources or excluded sites go in their own submission,
        with the campaign as their next attempt sees it."""
        plain = [job for job in jobs if job.index not in self.overrides]
        if plain:
            self._submit(self.campaign, plain)
        for job in jobs:
            if job.index in self.overrides:
                self._submit(apply_retry_changes(self.campaign, self.overrides[job.index]), [job])

    def _submit(self, campaign: Campaign, jobs: list[Job]) -> None:
        campaign_id = self.campaign.campaign_id
        resources = campaign.resources
        before = self.store.campaigns.job_states(campaign_id)
        job_inputs = []
        for job in jobs:
            attempt = self.store.attempts.start(
                job,
                self.backend.name,
                memory_mb=resources.memory_mb,
                walltime_s=resources.walltime_s,
            )
            self.tries[job.index] += 1
            job_inputs.append(
                JobInput(
                    job=job,
                    campaign=campaign,
                    attempt=attempt,
                    output_dir=str(self.output_dir),
                    backend=self.backend.name,
                    filter_tuning=self._job_tuning(job.index),
                )
            )
        try:
            handles = self.backend.submit(campaign, job_inputs)
        except SubmitError as error:
            # The engine refused the batch or could not be reached: nothing runs, so no
            # attempt was made. The jobs go back to what they were, with the engine's words.
            message = " ".join(redact(str(error)).split())
            for job_input in job_inputs:
                index = job_input.job.index
                self.store.attempts.withdraw(
                    campaign_id,
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
        self.store.attempts.clear_refusals(campaign_id, [job.index for job in jobs])
        for job_input, handle in zip(job_inputs, handles, strict=True):
            self.store.attempts.set_backend_job_id(
                campaign_id,
                job_input.job.index,
                job_input.attempt,
                handle.backend_job_id,
            )
            self.inflight[job_input.job.index] = (job_input, handle)

    def _finish(self, index: int, state: JobState) -> bool:
        """Ingest a finished attempt; True if the job is now done."""
        job_input, _handle = self.inflight.pop(index)
        job = self.jobs[index]
        if state.state != "done" and state.native_reason:
            # The engine's reason (a pilot's diagnostics, a hold reason) is kept where the
            # monitor keeps backend states; recovery reads it as a log line.
            record_backend_states(self.store, [state.record()])
        final = self.tries[index] >= self.campaign.retry.max_attempts
        report = self._read_report(job_input)
        if report is not None:
            problem = validate_report(report, job, self.output_dir) if report.succeeded else None
            if problem is None:
                # The engine's code (a pilot's error code, a Slurm state) beside the
                # worker's exit code.
                native = None if report.succeeded else state.native_code
                self.store.reports.record(report, final=final, native_code=native)
                return report.succeeded
            log.warning("job %d attempt %d: %s", index, job_input.attempt, problem)
            code, error_class = int(ExitCode.OUTPUT_VALIDATION), "output_validation"
        else:
            code = state.exit_code if state.exit_code not in (None, 0) else int(ExitCode.UNEXPECTED)
            error_class = "lost_report" if state.exit_code in (None, 0) else _error_class(code)
        self.store.attempts.finish(
            job.campaign_id,
            index,
            job_input.attempt,
            code,
            error_class,
            final=final,
            native_code=state.native_code,
            site=state.site,
        )
        return False

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

    def _close_stale_attempts(self) -> None:
        """Attempts left running by an earlier submitter that died: ingest or close them."""
        campaign_id = self.campaign.campaign_id
        for index, attempts in self.store.attempts.running(campaign_id).items():
            for attempt in attempts:
                job_input = JobInput(
                    job=self.jobs[index],
                    campaign=self.campaign,
                    attempt=attempt,
                    output_dir=str(self.output_dir),
                    backend=self.backend.name,
                )
                report = self._read_report(job_input)
                if (
                    report is not None
                    and validate_report(report, self.jobs[index], self.output_dir) is None
                ):
                    self.store.reports.record(report)
                else:
                    self.store.attempts.finish(
                        campaign_id, index, attempt, int(ExitCode.UNEXPECTED), "lost", final=False
                    )


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
) -> CampaignStatus:
    """Register ``campaign`` (idempotent) and run whatever of it is not done yet.

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
