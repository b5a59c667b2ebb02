"""Collection: report files and backend states, handed to the store's bulk ingestion
(:mod:`smartbkg_prod.store.ingest`, where its SQL lives), idempotently and in bulk.

>>> from smartbkg_prod.store import Store
>>> ingest_reports(Store("sqlite://"), []).stored
0
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import Field, ValidationError

from smartbkg_prod.backends.base import Backend, JobHandle, JobState
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.report import JobReport, ReportError, read_report
from smartbkg_prod.store import Store
from smartbkg_prod.store import ingest as store_ingest
from smartbkg_prod.store.ingest import IngestCounts

REPORT_SUFFIX = ".report.json"


class IngestResult(IngestCounts):
    """What one collection did: the store's counts, plus the files it could not read and
    the campaigns it registered from job files."""

    unreadable: list[str] = Field(default_factory=list)
    registered_campaigns: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def ingest_reports(
    store: Store, reports: Iterable[JobReport], final: bool | None = None
) -> IngestResult:
    """Store ``reports`` and move their jobs' states, in one transaction
    (:func:`smartbkg_prod.store.ingest.ingest_reports`), timed."""
    started = time.perf_counter()
    counts = store_ingest.ingest_reports(store, reports, final)
    return IngestResult(**counts.model_dump(), seconds=time.perf_counter() - started)


# -- report files ----------------------------------------------------------------------
def read_report_files(paths: Iterable[str | Path]) -> tuple[list[JobReport], list[str]]:
    """Parse report files; returns the reports and one error line per unreadable file."""
    reports, errors = [], []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                reports.append(JobReport.model_validate_json(handle.read()))
        except OSError as error:
            errors.append(f"{path}: unreadable ({error.strerror or error})")
        except ValidationError:
            # Read the bad file again the slow way: read_report's message names the field.
            try:
                read_report(Path(path))
            except ReportError as error:
                errors.append(str(error))
    return reports, errors


def find_report_files(directory: Path) -> list[str]:
    """Every ``*.report.json`` under ``directory`` (workers write them atomically), sorted.

    Walks with plain strings: pathlib's rglob and Path sorting cost more than reading the
    files at 10k reports.
    """
    found = [
        os.path.join(root, name)
        for root, _dirs, names in os.walk(directory)
        for name in names
        if name.endswith(REPORT_SUFFIX) and not name.startswith(".")
    ]
    return sorted(found)


def register_campaigns_from_job_files(
    store: Store, directory: Path, campaign_ids: set[str]
) -> list[str]:
    """Register campaigns unknown to ``store`` from the job files a submitter left in
    ``directory`` (``<output_dir>/jobs/*.json`` carry the full campaign spec)."""
    registered: list[str] = []
    missing = {cid for cid in campaign_ids if store.campaigns.get(cid) is None}
    if not missing:
        return registered
    for path in sorted(Path(directory).rglob("jobs/*.json")):
        if not missing:
            break
        try:
            job_input = JobInput.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            continue
        campaign_id = job_input.job.campaign_id
        # A job file written by another version of the spec schema may hash to another
        # id; registering it would create a campaign no report points to.
        if campaign_id in missing and job_input.campaign.campaign_id == campaign_id:
            store.campaigns.register(
                job_input.campaign, plan_jobs(job_input.campaign), Path(job_input.output_dir)
            )
            missing.discard(campaign_id)
            registered.append(campaign_id)
    return registered


def collect_directory(store: Store, directory: Path, final: bool | None = None) -> IngestResult:
    """Ingest every report file under ``directory``; safe to run again and again."""
    directory = Path(directory)
    started = time.perf_counter()
    reports, unreadable = read_report_files(find_report_files(directory))
    registered = register_campaigns_from_job_files(
        store, directory, {report.campaign_id for report in reports}
    )
    result = ingest_reports(store, reports, final=final)
    result.unreadable = unreadable
    result.registered_campaigns = registered
    result.seconds = time.perf_counter() - started
    return result


# -- backend states ----------------------------------------------------------------------
def ingest_backend_states(store: Store, states: Iterable[JobState]) -> int:
    """Record the latest state each backend reports per attempt (upsert); returns rows written."""
    return store_ingest.record_backend_states(store, (state.record() for state in states))


def poll_backend(store: Store, backend: Backend, handles: Sequence[JobHandle]) -> list[JobState]:
    """Ask ``backend`` for the state of ``handles`` and record what it says."""
    states = backend.poll(handles)
    ingest_backend_states(store, states)
    return states
