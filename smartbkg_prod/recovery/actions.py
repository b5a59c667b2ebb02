"""Recovery actions, the concrete retry changes each implies, and the recommendation that
proposes one for a failed job.

>>> record = FailureRecord(campaign_id="c", job_index=3, site="T2_X", exit_code=50,
...                        memory_used_mb=2010, memory_requested_mb=2000)
>>> retry_changes(Action.RESUBMIT_MORE_MEMORY, record).memory_mb
3000
>>> retry_changes(Action.EXCLUDE_SITE, record).exclude_sites
['T2_X']
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from smartbkg_prod.backends.base import RetryChanges
from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.spec import Resources


class Action(StrEnum):
    RESUBMIT = "resubmit"
    RESUBMIT_MORE_MEMORY = "resubmit_more_memory"
    RESUBMIT_MORE_WALLTIME = "resubmit_more_walltime"
    EXCLUDE_SITE = "exclude_site"
    SPLIT_JOB = "split_job"
    KILL = "kill"  # the campaign's remaining jobs: only ever after an operator's accept

    @property
    def destructive(self) -> bool:
        return self is Action.KILL


ACTIONS: tuple[str, ...] = tuple(action.value for action in Action)

MEMORY_FACTOR = 1.5  # a plain memory raise; more when the job's progress projects more
MAX_MEMORY_FACTOR = 3.0  # beyond this, splitting the job is the better remedy
WALLTIME_FACTOR = 2.0
MAX_WALLTIME_FACTOR = 4.0
MAX_SPLIT = 16
# Defaults when neither the record nor the campaign says what was requested.
_DEFAULT = Resources()


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def retry_changes(
    action: Action,
    record: FailureRecord,
    memory_mb: int | None = None,
    walltime_s: int | None = None,
) -> RetryChanges:
    """The RetryChanges an action implies for ``record``'s job.

    ``memory_mb`` / ``walltime_s`` are the campaign's requests, used when the record does not
    carry them. Memory grows x1.5 (or to the projected need + 10%, up to x3), rounded up to
    100 MB; walltime x2 (or the projected need + 20%, up to x4), rounded up to a minute; a
    split uses enough parts for each to fit the current request.
    """
    action = Action(action)
    if action is Action.RESUBMIT_MORE_MEMORY:
        requested = record.memory_requested_mb or memory_mb or _DEFAULT.memory_mb
        factor = min(
            max(MEMORY_FACTOR, (record.projected_memory_ratio or 0) * 1.1), MAX_MEMORY_FACTOR
        )
        return RetryChanges(memory_mb=_round_up(requested * factor, 100))
    if action is Action.RESUBMIT_MORE_WALLTIME:
        requested = record.walltime_requested_s or walltime_s or _DEFAULT.walltime_s
        projected = (record.projected_walltime_ratio or 0) * 1.2
        factor = min(max(WALLTIME_FACTOR, projected), MAX_WALLTIME_FACTOR)
        return RetryChanges(walltime_s=_round_up(requested * factor, 60))
    if action is Action.EXCLUDE_SITE:
        return RetryChanges(exclude_sites=[record.site])
    if action is Action.SPLIT_JOB:
        need = max(record.projected_memory_ratio or 0, record.projected_walltime_ratio or 0)
        parts = min(max(2, math.ceil(need * 1.2)), MAX_SPLIT)
        if record.n_events is not None:
            parts = min(parts, record.n_events)
        return RetryChanges(split_into=max(parts, 2))
    return RetryChanges()


class Recommendation(BaseModel):
    """What to do about one failed job, why, and how sure we are."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    job_index: int
    attempt: int
    site: str
    failure_code: str  # token, e.g. "htcondor:34/102"
    failure_name: str
    category: str
    action: Action
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str
    changes: RetryChanges
    decided_by: str  # "rules" or "model:<digest>"
    features: dict[str, float] = Field(default_factory=dict, repr=False)
    record: FailureRecord = Field(repr=False)
