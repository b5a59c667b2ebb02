"""Deterministic split of a campaign into jobs.

Job ``i`` covers events ``[first_event, first_event + n_events)`` and gets a seed derived
from (campaign seed, i), so a retry of job ``i`` regenerates exactly the same events.

>>> from smartbkg_prod.spec import Campaign
>>> c = Campaign(name="demo", process="bbbar_mixed", events=2500, events_per_job=1000)
>>> [(j.index, j.first_event, j.n_events) for j in plan_jobs(c)]
[(0, 0, 1000), (1, 1000, 1000), (2, 2000, 500)]
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from smartbkg_prod.files import PathText, write_text_atomic
from smartbkg_prod.physics.config import PYTHIA_MAX_SEED
from smartbkg_prod.spec import Campaign, safe_component


def job_seed(campaign_seed: int, index: int) -> int:
    """Seed for job ``index``: a hash, so neighbouring jobs get unrelated streams."""
    digest = hashlib.sha256(f"smartbkg:{campaign_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (PYTHIA_MAX_SEED - 1) + 1


class Job(BaseModel):
    """One unit of work: a contiguous event range of one campaign."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign_id: str
    index: int = Field(ge=0)
    first_event: int = Field(ge=0)
    n_events: int = Field(gt=0)
    seed: int = Field(ge=1, le=PYTHIA_MAX_SEED)
    # Event number at which this job's random stream starts. Equal to first_event except
    # for a job split by recovery: its parts share the parent's stream and skip ahead,
    # so they regenerate exactly the parent's events.
    stream_start: int | None = Field(default=None, ge=0)

    @property
    def events_to_skip(self) -> int:
        return 0 if self.stream_start is None else self.first_event - self.stream_start

    @property
    def name(self) -> str:
        return f"{self.campaign_id}.job{self.index:06d}"

    @property
    def last_event(self) -> int:
        """One past the last event of the range."""
        return self.first_event + self.n_events


class JobFilterTuning(BaseModel):
    """The sample mode's k and p_min that ``filter.tune: auto`` chose for a job (recorded
    with the campaign; every attempt of the job gets the same, so it makes the same events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(gt=0)
    p_min: float = Field(gt=0, le=1)


class RetryChanges(BaseModel):
    """What a recovery action changes for the next attempt of a job.

    Event range and seed never change, except through ``split_into``, which replaces the
    job's range by that many contiguous sub-ranges covering exactly the same events.
    """

    model_config = ConfigDict(extra="forbid")

    memory_mb: int | None = Field(default=None, gt=0)
    walltime_s: int | None = Field(default=None, gt=0)
    exclude_sites: list[str] = Field(default_factory=list)
    split_into: int | None = Field(default=None, ge=2)


# Besides its JobInput, environment a container runtime or a site sets for the worker,
# to describe where it runs.
ENV_IMAGE, ENV_IMAGE_DIGEST, ENV_SITE = "SMARTBKG_IMAGE", "SMARTBKG_IMAGE_DIGEST", "SMARTBKG_SITE"
ENV_BACKEND_JOB_ID = "SMARTBKG_BACKEND_JOB_ID"


class JobInput(BaseModel):
    """What the worker reads: the job, its campaign, the attempt and where to write.

    This is the ``--job JOB.json`` file; every backend writes the same content.
    """

    model_config = ConfigDict(extra="forbid")

    job: Job
    campaign: Campaign
    attempt: int = Field(default=1, ge=1)
    output_dir: PathText
    backend: str = "local"
    site: str = "local"
    filter_tuning: JobFilterTuning | None = None

    @property
    def output_file(self) -> Path:
        return Path(self.output_dir) / f"{safe_component(self.job.name)}.root"

    @property
    def report_file(self) -> Path:
        return (
            Path(self.output_dir)
            / f"{safe_component(self.job.name)}.attempt{self.attempt}.report.json"
        )


class _JobListHeader(BaseModel):
    """First line of a job list: what every job of the list shares."""

    model_config = ConfigDict(extra="forbid")

    campaign: Campaign
    output_dir: str
    backend: str = "local"
    site: str = "local"
    # The --index of the first entry: 0, or 1 where the engine counts from 1 (PanDA's
    # ${SEQNUMBER} starts at 1 + offset and JEDI reads no negative offset).
    first_index: int = Field(default=0, ge=0)


class _JobListEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: Job
    attempt: int = Field(default=1, ge=1)
    filter_tuning: JobFilterTuning | None = None


def write_job_list(
    path: str | Path,
    job_inputs: Sequence[JobInput],
    campaign: Campaign,
    output_dir: str | None = None,
    first_index: int = 0,
) -> Path:
    """Write many attempts as one JSON-lines file: a shared header, then one job per line.

    Line ``i + 1`` describes entry ``i``; ``smartbkg-prod worker --job FILE --index i`` runs
    it. Batch systems index arrays this way (Slurm array task id, PanDA sequence number),
    and one file of ~200 bytes per job replaces one 3 kB job file per job. The header
    carries ``campaign`` (the resources the batch was submitted with) and ``output_dir``
    (default: the jobs' own; grid engines pass ``"."``, the job's work directory), and
    ``first_index``, the index of entry 0 for engines that count from 1.

    >>> # write_job_list("jobs.jsonl", job_inputs, campaign)
    """
    path = Path(path)
    if not job_inputs:
        raise ValueError("a job list needs at least one job")
    first = job_inputs[0]
    header = _JobListHeader(
        campaign=campaign,
        output_dir=first.output_dir if output_dir is None else output_dir,
        backend=first.backend,
        site=first.site,
        first_index=first_index,
    )
    shared = (first.output_dir, first.backend, first.site)
    lines = [header.model_dump_json()]
    for job_input in job_inputs:
        if (job_input.output_dir, job_input.backend, job_input.site) != shared:
            raise ValueError("all jobs of a job list share output_dir, backend and site")
        # The line of a _JobListEntry, written without building one (100k-job campaigns).
        tuning = (
            ""
            if job_input.filter_tuning is None
            else f',"filter_tuning":{job_input.filter_tuning.model_dump_json()}'
        )
        lines.append(
            f'{{"job":{job_input.job.model_dump_json()},"attempt":{job_input.attempt}{tuning}}}'
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_job_list_entry(path: str | Path, index: int) -> JobInput:
    """Entry ``index`` of a job list written by :func:`write_job_list` (0-based, or
    counted from the list's ``first_index``).

    Raises ``IndexError`` when the list is shorter, ``FileNotFoundError``/``OSError`` when
    it is unreadable and ``pydantic.ValidationError`` when a line is invalid.
    """
    with open(path, encoding="utf-8") as lines:
        header_line = next(lines, None)
        if header_line is None:
            raise IndexError(f"job list {path} is empty")
        header = _JobListHeader.model_validate_json(header_line)
        position = index - header.first_index
        if position < 0:
            raise IndexError(f"job list {path} starts at index {header.first_index}, not {index}")
        entry_line = next(itertools.islice(lines, position, None), None)
    if entry_line is None:
        raise IndexError(f"job list {path} has no entry {index}")
    entry = _JobListEntry.model_validate_json(entry_line)
    fields = {name: value for name, value in dict(header).items() if name != "first_index"}
    return JobInput(
        job=entry.job, attempt=entry.attempt, filter_tuning=entry.filter_tuning, **fields
    )


def iter_jobs(campaign: Campaign) -> Iterator[Job]:
    """Yield the campaign's jobs lazily (a 100k-job campaign needs no big list)."""
    campaign_id = campaign.campaign_id
    for index in range(campaign.n_jobs):
        first = index * campaign.events_per_job
        yield Job(
            campaign_id=campaign_id,
            index=index,
            first_event=first,
            n_events=min(campaign.events_per_job, campaign.events - first),
            seed=job_seed(campaign.seed, index),
        )


def plan_jobs(campaign: Campaign) -> list[Job]:
    return list(iter_jobs(campaign))


def campaign_output_dir(campaign: Campaign, base: str | Path | None = None) -> Path:
    """Directory for a campaign's outputs: ``outputs.directory/campaign_id``.

    Relative ``outputs.directory`` is taken from ``base`` (the spec file's folder's
    working directory by default); the campaign id keeps campaigns apart.
    """
    root = Path(campaign.outputs.directory)
    if not root.is_absolute() and base is not None:
        root = Path(base) / root
    return (root / safe_component(campaign.campaign_id)).resolve()
