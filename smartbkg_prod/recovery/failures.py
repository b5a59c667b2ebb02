"""Failure records: one attempt of one job as recovery sees it.

A :class:`FailureRecord` is built from a worker's :class:`~smartbkg_prod.report.JobReport`,
from the store's attempt rows, or from a JSON-lines export (one JobReport per line, with an
optional ``native_code`` key holding the engine's code, e.g. ``"HoldReasonCode=34/102"``).
Successful attempts are read too: they give each site's failure rate.

>>> record = FailureRecord(campaign_id="c", job_index=0, attempt=1, site="T2_X", exit_code=50)
>>> record.failure_code.token, record.category
('worker:50', 'memory')
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.recovery.taxonomy import (
    FailureCode,
    describe,
    exit_status_code,
    parse_native_code,
)
from smartbkg_prod.report import JobReport, ReportError, parse_report


class FailureRecordError(SmartBkgError):
    """A failure record (or a line of a JSON-lines export) is unreadable."""


class FailureRecord(BaseModel):
    """One attempt: where it ran, how it ended, and what it used against what it asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign_id: str
    job_index: int = Field(ge=0)
    attempt: int = Field(default=1, ge=1)
    site: str = "local"
    exit_code: int = 0
    error_class: str = ""
    native_source: str | None = None
    native_code: int | str | None = None
    native_subcode: int | None = None
    memory_used_mb: float | None = Field(default=None, ge=0)
    memory_requested_mb: float | None = Field(default=None, gt=0)
    walltime_used_s: float | None = Field(default=None, ge=0)
    walltime_requested_s: float | None = Field(default=None, gt=0)
    n_events: int | None = Field(default=None, gt=0)
    events_processed: int | None = Field(default=None, ge=0)
    log_lines: list[str] = Field(default_factory=list)
    finished_at: float | None = None

    @property
    def failed(self) -> bool:
        return self.exit_code != 0 or self.native_code is not None

    @property
    def failure_code(self) -> FailureCode:
        """The engine's code when there is one (it is more specific), else the exit status."""
        if self.native_source is not None and self.native_code is not None:
            return FailureCode(self.native_source, self.native_code, self.native_subcode)
        return exit_status_code(self.exit_code)

    @property
    def progress(self) -> float | None:
        """Fraction of the job's events processed when it stopped (None when unknown)."""
        if self.n_events is None or self.events_processed is None:
            return None
        return min(self.events_processed / self.n_events, 1.0)

    @property
    def memory_ratio(self) -> float | None:
        """Peak memory over requested memory."""
        if self.memory_used_mb is None or not self.memory_requested_mb:
            return None
        return self.memory_used_mb / self.memory_requested_mb

    @property
    def walltime_ratio(self) -> float | None:
        if self.walltime_used_s is None or not self.walltime_requested_s:
            return None
        return self.walltime_used_s / self.walltime_requested_s

    @property
    def projected_memory_ratio(self) -> float | None:
        """Memory the whole job would need, over the request, extrapolated from its progress.

        A job killed at the limit after 40% of its events projects to 2.5x its request.
        """
        return _project(self.memory_ratio, self.progress)

    @property
    def projected_walltime_ratio(self) -> float | None:
        return _project(self.walltime_ratio, self.progress)

    @property
    def category(self) -> str:
        return describe(self.failure_code).category.value

    @property
    def transient(self) -> bool:
        return describe(self.failure_code).transient

    @classmethod
    def from_report(cls, report: JobReport, native_code: str | None = None) -> FailureRecord:
        """A record from a worker report, with the engine's code if the backend saw one."""
        native = parse_native_code(native_code) if native_code else None
        logs = (
            [report.error_message, *report.log_tail]
            if report.error_message
            else list(report.log_tail)
        )
        return cls(
            campaign_id=report.campaign_id,
            job_index=report.job_index,
            attempt=report.attempt,
            site=report.site,
            exit_code=report.exit_code,
            error_class=report.error_class,
            native_source=native.source if native else None,
            native_code=native.code if native else None,
            native_subcode=native.subcode if native else None,
            memory_used_mb=report.peak_rss_mb or None,
            memory_requested_mb=report.memory_requested_mb,
            walltime_used_s=report.wall_seconds,
            walltime_requested_s=report.walltime_requested_s,
            n_events=report.n_events,
            events_processed=report.events_generated,
            log_lines=logs,
            finished_at=report.finished_at,
        )


def _project(ratio: float | None, progress: float | None) -> float | None:
    if ratio is None:
        return None
    if not progress:
        return ratio
    # Cap: a job that died on its first event says little about the whole range.
    return min(ratio / max(progress, 0.05), 20.0)


def parse_failure_line(text: str, source: str) -> FailureRecord:
    """One JSON-lines entry: a JobReport with an optional ``native_code`` key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FailureRecordError(
            f"{source}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    if not isinstance(data, dict):
        raise FailureRecordError(
            f"{source}: expected a JSON object (a JobReport), got {type(data).__name__}"
        )
    native_code = data.pop("native_code", None)
    try:
        report = parse_report(data, source)
    except ReportError as error:
        raise FailureRecordError(str(error)) from None
    try:
        return FailureRecord.from_report(report, native_code)
    except ValueError as error:
        raise FailureRecordError(f"{source}: native_code: {error}") from None


def read_failure_records(path: str | Path) -> list[FailureRecord]:
    """Read a JSON-lines export; an unreadable line raises an error naming file and line.

    Blank lines are skipped. Successful attempts are kept (they give site failure rates).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FailureRecordError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FailureRecordError(f"{path}: cannot be read ({error})") from None
    return [
        parse_failure_line(line, f"{path}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def write_failure_lines(reports: Iterable[tuple[JobReport, str | None]], path: str | Path) -> None:
    """Write (report, native code) pairs as the JSON-lines export ``read_failure_records`` reads."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for report, native_code in reports:
            data = report.model_dump(mode="json")
            if native_code:
                data["native_code"] = native_code
            handle.write(json.dumps(data) + "\n")


def latest_failures(records: Iterable[FailureRecord]) -> list[FailureRecord]:
    """Each job's last attempt, for the jobs whose last attempt failed (what needs an action)."""
    last: dict[tuple[str, int], FailureRecord] = {}
    for record in records:
        key = (record.campaign_id, record.job_index)
        if key not in last or record.attempt >= last[key].attempt:
            last[key] = record
    return [record for record in last.values() if record.failed]
