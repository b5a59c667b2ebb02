"""The machine-readable job report every worker attempt writes (JSON).

The report is the one record the monitor trusts: event counts, timings, resources,
exit code and outputs of one attempt of one job. Its key names are stable (schema
version 1); new keys may be added, none renamed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.files import write_text_atomic
from smartbkg_prod.filter.summary import FilterMonitor

if TYPE_CHECKING:
    from smartbkg_prod.plan import Job

SCHEMA_VERSION = 1
# Integers must fit the store's 64-bit columns; floats must be finite (SQLite stores NaN
# as NULL, and a report that cannot be stored must be rejected, not dropped).
INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX, le=INT64_MAX)]


class OutputFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    size_bytes: Count
    sha256: str
    events: Count


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    spec_sha256: str
    model_sha256: str | None = None
    image: str | None = None
    image_digest: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)


class JobReport(BaseModel):
    """One attempt of one job, as seen by the worker (or by a backend for a lost worker)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: Int64 = SCHEMA_VERSION
    campaign_id: str
    campaign_name: str
    job_index: Count
    attempt: Annotated[int, Field(ge=1, le=INT64_MAX)]
    first_event: Count
    n_events: Annotated[int, Field(gt=0, le=INT64_MAX)]
    seed: Int64
    backend: str = "local"
    backend_job_id: str | None = None
    site: str = "local"
    host: str = ""
    started_at: float = Field(description="unix time")
    finished_at: float = Field(description="unix time")
    wall_seconds: float = Field(ge=0)
    cpu_seconds: float = Field(ge=0)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    events_generated: Count = 0
    events_kept: Count = 0
    events_simulated: Count = 0
    events_skimmed: Count = 0
    sum_weights_kept: float = 0.0
    sum_weights_skimmed: float = 0.0
    sum_weights_squared_skimmed: float | None = Field(
        default=None, ge=0, description="Σw² of skimmed kept events (absent in older reports)"
    )
    filter_mode: str = "off"
    filter_monitor: FilterMonitor | None = None
    # The sample mode's (scale, p_min) chosen by ``filter.tune: auto`` that this attempt
    # ran with; None: the model's scale and the spec's p_min.
    filter_tuning: dict[str, float] | None = None
    peak_rss_mb: float = Field(default=0.0, ge=0)
    memory_requested_mb: Int64 | None = None
    walltime_requested_s: Int64 | None = None
    gpu: str | None = None
    exit_code: Int64
    error_class: str
    error_message: str = ""
    log_tail: list[str] = Field(default_factory=list)
    outputs: list[OutputFile] = Field(default_factory=list)
    provenance: Provenance | None = None

    @classmethod
    def for_job(cls, job: Job, campaign_name: str, attempt: int, **fields: Any) -> JobReport:
        """A report of ``attempt`` of ``job``: its identity (campaign, index, event range,
        seed) from the job, everything else from ``fields``."""
        return cls(
            campaign_id=job.campaign_id,
            campaign_name=campaign_name,
            job_index=job.index,
            attempt=attempt,
            first_event=job.first_event,
            n_events=job.n_events,
            seed=job.seed,
            **fields,
        )

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def write(self, path: Path) -> None:
        """Write atomically: a reader never sees half a report."""
        write_text_atomic(Path(path), self.model_dump_json(indent=2))


class ReportError(SmartBkgError):
    pass


def read_report(path: Path) -> JobReport:
    """Read and validate one report file; a clear error names the file and the field."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: not a readable JSON report ({error})") from None
    except RecursionError:
        raise ReportError(f"{path}: not a readable JSON report (nested too deeply)") from None
    return parse_report(data, str(path))


def parse_report(data: object, source: str) -> JobReport:
    try:
        return JobReport.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ReportError(
            f"{source}: {where}: {first['msg']} ({error.error_count()} problem(s) in the report)"
        ) from None
