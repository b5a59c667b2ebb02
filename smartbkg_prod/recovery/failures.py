"""Failure records: one attempt of one job as recovery sees it.

A :class:`FailureRecord` is built from a worker's :class:`~smartbkg_prod.report.JobReport`,
from the store's attempt rows, or from a JSON-lines export (one JobReport per line, with an
optional ``native_code`` key holding the engine's code, e.g. ``"HoldReasonCode=34/102"``).
Successful attempts are read too: they give each site's failure rate.

Exports from real engines are read leniently (:func:`read_failure_export`): only
``job_index`` is required; unknown keys are ignored (text under a ``*reason*``, ``*diag*``
or ``*message*`` key is kept as a log line); a native code in an engine's own notation
(``slurm:CANCELLED by 0``, ``HoldReasonCode=26`` followed by the hold reason) is read with
its text; a line that cannot be read is skipped with a warning naming file and line.

>>> record = FailureRecord(campaign_id="c", job_index=0, attempt=1, site="T2_X", exit_code=50)
>>> record.failure_code.token, record.category
('worker:50', 'memory')
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.recovery.symptoms import diagnose, memory_from_text
from smartbkg_prod.recovery.taxonomy import (
    CodeInfo,
    FailureCode,
    Source,
    describe,
    exit_status_code,
    parse_native,
)
from smartbkg_prod.report import JobReport


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

    @model_validator(mode="before")
    @classmethod
    def _memory_stated_in_the_log(cls, data: Any) -> Any:
        """A hold reason or pilot diagnostic that states "used X of Y MB" fills the memory
        fields the export left out."""
        if not isinstance(data, dict) or (
            data.get("memory_used_mb") is not None and data.get("memory_requested_mb")
        ):
            return data
        stated = memory_from_text(data.get("log_lines") or [])
        if stated is None:
            return data
        used, limit = stated
        return {
            **data,
            "memory_used_mb": data.get("memory_used_mb")
            if data.get("memory_used_mb") is not None
            else used,
            "memory_requested_mb": data.get("memory_requested_mb") or limit,
        }

    @property
    def failed(self) -> bool:
        return self.exit_code != 0 or self.native_code is not None

    @property
    def failure_code(self) -> FailureCode:
        """The engine's code when there is one (it is more specific), else the exit status.

        An engine's bare ``exit:N`` with the worker's own exit status N says no more than
        the worker did: the worker's code (``worker:40``) is kept.
        """
        if self.native_source is not None and self.native_code is not None:
            native = FailureCode(self.native_source, self.native_code, self.native_subcode)
            if (
                native.source != Source.EXIT.value
                or native.code != self.exit_code
                or native.subcode
            ):
                return native
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

    @cached_property
    def info(self) -> CodeInfo:
        """The code's meaning, refined by the log text and resource use when the code
        names no cause (see :func:`~smartbkg_prod.recovery.symptoms.diagnose`)."""
        return diagnose(
            describe(self.failure_code), self.log_lines, self.memory_ratio, self.walltime_ratio
        )

    @property
    def category(self) -> str:
        return self.info.category.value

    @property
    def transient(self) -> bool:
        return self.info.transient


def _project(ratio: float | None, progress: float | None) -> float | None:
    if ratio is None:
        return None
    if not progress:
        return ratio
    # Cap: a job that died on its first event says little about the whole range.
    return min(ratio / max(progress, 0.05), 20.0)


class FailureExport(BaseModel):
    """What a JSON-lines export gave: the readable records and a warning per problem."""

    records: list[FailureRecord]
    warnings: list[str] = Field(default_factory=list)


# Keys of a JobReport line and what they become in a record, then the same quantity under
# the engines' own names (HTCondor job ClassAd, Slurm sacct, PanDA job record) with the
# unit a bare number has there. Strings may carry a unit ("5100M", "4G", "4000Mn").
# Everything else is ignored.
_NUMBERS: dict[str, tuple[tuple[str, str], ...]] = {
    "memory_used_mb": (
        ("peak_rss_mb", "m"), ("memory_used_mb", "m"), ("MemoryUsage", "m"),
        ("MaxRSS", "k"), ("maxRSS", "k"), ("maxPSS", "k"),
    ),
    "memory_requested_mb": (
        ("memory_requested_mb", "m"), ("RequestMemory", "m"), ("ReqMem", "m"),
        ("minRamCount", "m"),
    ),
    "walltime_used_s": (("wall_seconds", "s"), ("walltime_used_s", "s"),
                        ("RemoteWallClockTime", "s")),
    "walltime_requested_s": (("walltime_requested_s", "s"),),
    "n_events": (("n_events", "1"),),
    "events_processed": (("events_generated", "1"), ("events_processed", "1")),
    "finished_at": (("finished_at", "1"),),
}  # fmt: skip
_TEXT_KEY_PARTS = ("reason", "diag", "message")
# The exit status under our name, then Slurm's / HTCondor's and PanDA's payload exit code.
_EXIT_KEYS = ("exit_code", "ExitCode", "exeErrorCode", "transExitCode")
_ATTEMPT_KEYS = ("attempt", "attemptNr")
_TO_MB = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}
_WITH_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt])?(?:i?b)?[nc]?\s*$", re.IGNORECASE)


def _number(data: dict, keys: tuple[tuple[str, str], ...]) -> float | None:
    for key, unit in keys:
        value = data.get(key)
        if value is None or isinstance(value, bool) or value == "":
            continue
        if isinstance(value, str):
            match = _WITH_UNIT.match(value)
            if match is None:
                raise ValueError(f"{key}: {value!r} is not a number")
            number = float(match.group(1))
            scale = match.group(2) or (unit if unit in _TO_MB else None)
            return number * _TO_MB[scale.lower()] if scale and unit in _TO_MB else number
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: {value!r} is not a number") from None
        if number != number or number in (float("inf"), float("-inf")) or number < 0:
            raise ValueError(f"{key}: {value!r} is not a finite non-negative number")
        return number * _TO_MB[unit] if unit in _TO_MB else number
    return None


def _exit_status(value: object) -> int:
    """An exit status, also in sacct's ``exit:signal`` form (``0:9`` -> 137)."""
    if isinstance(value, str) and ":" in value:
        exit_status, signal = (int(part) for part in value.split(":", 1))
        return 128 + signal if signal else exit_status
    return int(value or 0)


def _lines(value: object) -> list[str]:
    if isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    if isinstance(value, list):
        return [str(item) for item in value if str(item).strip()]
    return []


def record_from_line(
    data: dict, source: str, warnings: list[str], attempt_offset: int = 0
) -> FailureRecord:
    """A record from one decoded export line (a JobReport, possibly partial or with
    extra keys); field problems that leave the line usable become ``warnings``.
    ``attempt_offset`` 1 reads an export that counts attempts from 0."""
    if data.get("job_index") is None:
        raise FailureRecordError(f"{source}: job_index is missing (which job is this?)")
    try:
        job_index = int(data["job_index"])
        if job_index < 0 or job_index != float(data["job_index"]):
            raise ValueError
    except (TypeError, ValueError):
        raise FailureRecordError(
            f"{source}: job_index: {data['job_index']!r} is not a job number (0, 1, ...)"
        ) from None
    fields: dict[str, Any] = {}
    for field, keys in _NUMBERS.items():
        try:
            fields[field] = _number(data, keys)
        except ValueError as error:
            fields[field] = None
            warnings.append(f"{source}: {error}: ignored")
    if fields["n_events"] is not None:
        fields["n_events"] = int(fields["n_events"]) or None
    if fields["events_processed"] is not None:
        fields["events_processed"] = int(fields["events_processed"])
    if not fields["memory_used_mb"]:
        fields["memory_used_mb"] = None  # a report's 0 means "not measured"
    for field in ("memory_requested_mb", "walltime_requested_s"):
        fields[field] = fields[field] or None
    logs = _lines(data.get("error_message")) + _lines(data.get("log_tail"))
    logs += [
        line
        for key, value in data.items()
        if key != "error_message" and any(part in key.lower() for part in _TEXT_KEY_PARTS)
        for line in _lines(value)
    ]
    native, exit_code = None, 0
    try:
        exit_code = _exit_status(next((data[k] for k in _EXIT_KEYS if k in data), 0))
        if data.get("ExitBySignal") is True and data.get("ExitSignal"):
            exit_code = 128 + int(data["ExitSignal"])  # HTCondor's job ClassAd
    except (TypeError, ValueError):
        warnings.append(f"{source}: exit_code: {data.get('exit_code')!r} is not a number: ignored")
    raw_native = data.get("native_code") or _native_from_engine_keys(data)
    if raw_native not in (None, ""):
        try:
            native, text = parse_native(str(raw_native))
            logs += [text] if text else []
            if native.code in (0, "COMPLETED"):
                native = None  # a success written as a native code
            elif native.source == "slurm" and native.subcode is None and exit_code:
                native = FailureCode("slurm", native.code, exit_code)  # FAILED + its status
        except ValueError as error:
            warnings.append(f"{source}: native_code: {error}; read as an unknown code")
            native = _unreadable_code(str(raw_native))
            logs.append(str(raw_native))
    attempt = _attempt_of(data)
    try:
        return FailureRecord(
            campaign_id=str(data.get("campaign_id") or data.get("campaign_name") or "unnamed"),
            job_index=job_index,
            attempt=int(attempt) + attempt_offset if attempt is not None else 1,
            site=str(data.get("site") or data.get("computingSite") or "local"),
            exit_code=exit_code,
            error_class=str(data.get("error_class") or ""),
            native_source=native.source if native else None,
            native_code=native.code if native else None,
            native_subcode=native.subcode if native else None,
            log_lines=logs,
            **fields,
        )
    except (ValidationError, TypeError, ValueError) as error:
        raise FailureRecordError(f"{source}: {_first_problem(error)}") from None


def _native_from_engine_keys(data: dict) -> str | None:
    """A native code from an engine's own keys when the line has no ``native_code``:
    HTCondor's HoldReasonCode (+ HoldReasonSubCode), PanDA's pilotErrorCode,
    jobDispatcherErrorCode, taskBufferErrorCode, Slurm's State."""
    hold = data.get("HoldReasonCode")
    if hold not in (None, "", 0, "0"):
        sub = data.get("HoldReasonSubCode")
        return f"HoldReasonCode={hold}" + (f"/{sub}" if sub not in (None, "") else "")
    for key, source in (
        ("pilotErrorCode", "pilot"),
        ("jobDispatcherErrorCode", "jobDispatcher"),
        ("taskBufferErrorCode", "taskBuffer"),
    ):
        if data.get(key) not in (None, "", 0, "0"):
            return f"{source}:{data[key]}"
    state = data.get("State")
    if isinstance(state, str) and state.strip() and not state.upper().startswith("COMPLETED"):
        return f"slurm:{state}"
    return None


def _unreadable_code(text: str) -> FailureCode:
    """A code no table knows, kept under its own name (``lsf:TERM_MEMLIMIT``)."""
    prefix, _, rest = text.strip().partition(":")
    if rest and prefix.isidentifier():
        return FailureCode(prefix.lower()[:16], rest.strip()[:40])
    return FailureCode("native", text.strip()[:40])


def _first_problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'record'}: {first['msg']}"
    return str(error)


def _attempt_of(data: dict) -> object:
    return next((data[k] for k in _ATTEMPT_KEYS if data.get(k) is not None), None)


def _decode(text: str, source: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FailureRecordError(
            f"{source}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except RecursionError:
        raise FailureRecordError(f"{source}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise FailureRecordError(
            f"{source}: expected a JSON object (a JobReport), got {type(data).__name__}"
        )
    return data


def read_failure_lines(lines: Iterable[str], name: str) -> FailureExport:
    """Read export lines; an unreadable line is skipped with a warning naming its number.

    Lines without an ``attempt`` count up per job in file order. Blank lines are skipped.
    """
    records, warnings = [], []
    decoded: list[tuple[str, dict]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        source = f"{name}:{number}"
        try:
            decoded.append((source, _decode(line, source)))
        except FailureRecordError as error:
            warnings.append(f"{error}: line skipped")
    # Some engines count attempts from 0 (the first try is attempt 0): shift the file.
    offset = int(any(_attempt_of(data) in (0, "0") for _, data in decoded))
    seen: dict[tuple[str, int], int] = {}
    for source, data in decoded:
        try:
            record = record_from_line(data, source, warnings, offset)
        except FailureRecordError as error:
            warnings.append(f"{error}: line skipped")
            continue
        key = (record.campaign_id, record.job_index)
        if _attempt_of(data) is None:
            record = record.model_copy(update={"attempt": seen.get(key, 0) + 1})
        seen[key] = max(seen.get(key, 0), record.attempt)
        records.append(record)
    return FailureExport(records=records, warnings=warnings)


def read_failure_export(path: str | Path) -> FailureExport:
    """Read a JSON-lines export file (see :func:`read_failure_lines`).

    Raises FailureRecordError when the file cannot be read or no line of it can.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FailureRecordError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FailureRecordError(f"{path}: cannot be read ({error})") from None
    export = read_failure_lines(lines, str(path))
    if not export.records and any(line.strip() for line in lines):
        first = export.warnings[0] if export.warnings else f"{path}: no readable line"
        raise FailureRecordError(f"no line of {path} could be read ({first})")
    return export


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
