"""Features of failed jobs: the record itself, its job's history, and its campaign's picture.

For each job whose last attempt failed, :func:`failure_features` returns one flat
``{name: value}`` mapping (stored with the recommendation, so a decision can later be
replayed as a training example exactly as the model saw it). Three groups:

- the attempt: code / category / source indicators, what the code says about a retry
  (transient, deterministic, generic, known, oversize), attempt number, memory and
  walltime used over requested, progress and projected need, log keywords;
- the job's history: failed attempts, distinct sites, repeats of the same code (anywhere
  and at this site), failures of the same category, whether memory / walltime were raised;
- the campaign (the CMS recovery panel's code x site matrix, reduced to what generalises
  to sites never seen in training): the site's failure rate, failures of this code at this
  site, its share of the code's failures, the code's rate at the other sites, the number of
  sites (with and without this code), the fraction of jobs the code touches, and how often
  retries of this code succeeded. A campaign without a single success gets the neutral
  prior failure rate (``PRIOR_FAILURE_RATE``) instead of 100%.

Site names are deliberately not features: a site that is broken in one campaign is healthy
in the next, and the rates above carry what the name would.

All campaign counts are computed with numpy group-bys over every record at once.

>>> records = [FailureRecord(campaign_id="c", job_index=i, site="A", exit_code=60 if i else 0)
...            for i in range(3)]
>>> rows = failure_features(records)
>>> len(rows), rows[0]["site_failure_rate"]
(2, 0.6666666666666666)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from smartbkg_prod.recovery.failures import FailureRecord, latest_failures
from smartbkg_prod.recovery.symptoms import keyword_groups

# A campaign seen only through its failures (a failures-only export, nothing in the store)
# gets this failure rate as a neutral prior: about the share of grid jobs that fail
# (~10-12% for ATLAS, Grigorieva & Grin, CDS 2742495), so that no site and no code looks
# worse than usual for lack of the successes.
PRIOR_FAILURE_RATE = 0.1

NUMERIC_FEATURES: tuple[str, ...] = (
    "attempt",
    "transient",
    "deterministic",
    "generic_code",
    "known_code",
    "oversize",
    "site_dependent",
    "preemption",
    "memory_ratio",
    "walltime_ratio",
    "progress",
    "projected_memory_ratio",
    "projected_walltime_ratio",
    "log10_events",
    "job_failed_attempts",
    "job_sites",
    "job_same_code",
    "job_same_code_site",
    "job_code_sites",
    "job_category_failures",
    "job_memory_raised",
    "job_walltime_raised",
    "site_attempts",
    "site_failure_rate",
    "site_code_failures",
    "site_code_share",
    "other_sites_code_rate",
    "other_sites_successes",
    "code_sites",
    "code_jobs",
    "code_job_fraction",
    "code_failed_job_share",
    "code_same_text_share",
    "category_job_fraction",
    "campaign_failure_rate",
    "campaign_sites",
    "no_successes",
    "code_retried",
    "code_retry_success",
    "sibling_walltime_ratio",
)


def _ids(values: Sequence[object]) -> np.ndarray:
    """Integer ids for arbitrary hashable values (strings, tuples)."""
    return np.unique(np.asarray([str(v) for v in values]), return_inverse=True)[1].astype(np.int64)


def _group(*columns: np.ndarray) -> np.ndarray:
    """One integer id per distinct combination of the integer columns."""
    stacked = np.stack(columns, axis=1)
    return np.unique(stacked, axis=0, return_inverse=True)[1].reshape(-1)


def _count(group: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For every record: how many masked records share its group."""
    counts = np.bincount(group, weights=mask.astype(float), minlength=group.max() + 1)
    return counts[group]


def _distinct(group: np.ndarray, value: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For every record: how many distinct ``value`` the masked records of its group have."""
    pairs = np.unique(np.stack([group[mask], value[mask]], axis=1), axis=0)
    per_group = (
        np.bincount(pairs[:, 0], minlength=group.max() + 1)
        if len(pairs)
        else np.zeros(group.max() + 1)
    )
    return per_group[group].astype(float)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(
        numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0
    )


def _raised(job: np.ndarray, request: np.ndarray) -> np.ndarray:
    """1 where a record's request is above the smallest request of its job's attempts."""
    smallest = np.full(job.max() + 1, np.inf)
    np.fmin.at(smallest, job, request)
    return (request > smallest[job]).astype(float)


def _sibling_walltime(campaign: np.ndarray, walltime: np.ndarray, done: np.ndarray) -> np.ndarray:
    """For every record: the median walltime of its campaign's successful attempts (nan
    where none says how long it took)."""
    known = done & ~np.isnan(walltime)
    medians = np.full(campaign.max() + 1, np.nan)
    for key in np.unique(campaign[known]):  # one median per campaign, not per record
        medians[key] = np.median(walltime[known & (campaign == key)])
    return medians[campaign]


def _text_key(record: FailureRecord) -> str:
    """A failure's first log line with its numbers blanked (job ids, hosts, times differ
    between jobs that fail the same way)."""
    first = record.log_lines[0] if record.log_lines else ""
    return re.sub(r"\d+", "#", first.strip().lower())[:160]


def _optional(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def failure_features(
    records: Sequence[FailureRecord], targets: Sequence[FailureRecord] | None = None
) -> list[dict[str, float]]:
    """Feature rows for ``targets`` (default: each job's last attempt, where it failed).

    ``records`` is every attempt known (successful ones too); the campaign picture comes from
    them. Rows follow the order of ``targets``.
    """
    records = list(records)
    targets = latest_failures(records) if targets is None else list(targets)
    if not targets:
        return []
    position = {(r.campaign_id, r.job_index, r.attempt): i for i, r in enumerate(records)}
    missing = [t for t in targets if (t.campaign_id, t.job_index, t.attempt) not in position]
    records = records + missing
    position.update(
        {
            (t.campaign_id, t.job_index, t.attempt): len(records) - len(missing) + i
            for i, t in enumerate(missing)
        }
    )
    rows = np.asarray([position[(t.campaign_id, t.job_index, t.attempt)] for t in targets])

    campaign = _ids([r.campaign_id for r in records])
    site = _ids([r.site for r in records])
    code = _ids([r.failure_code.token for r in records])
    category = _ids([r.category for r in records])
    job = _group(campaign, np.asarray([r.job_index for r in records], dtype=np.int64))
    attempt = np.asarray([r.attempt for r in records], dtype=float)
    failed = np.asarray([r.failed for r in records])
    everything = np.ones(len(records), dtype=bool)

    campaign_site = _group(campaign, site)
    campaign_code = _group(campaign, code)
    campaign_category = _group(campaign, category)
    site_failures = _count(campaign_site, failed)
    code_failures = _count(campaign_code, failed)
    site_code_failures = _count(_group(campaign, site, code), failed)
    campaign_failures = _count(campaign, failed)
    # Without a single success the denominators are unknown: estimate them from the
    # failures and the prior rate, so every site shows the prior, not 100%.
    no_successes = _count(campaign, ~failed) == 0
    scale = np.where(no_successes, 1.0 / PRIOR_FAILURE_RATE, 1.0)
    site_attempts = np.where(no_successes, site_failures * scale, _count(campaign_site, everything))
    campaign_attempts = np.where(
        no_successes, campaign_failures * scale, _count(campaign, everything)
    )
    campaign_jobs = _distinct(campaign, job, everything) * scale

    # The code's record over time: of the failed attempts with this code that were
    # retried, how many jobs later succeeded (a transient code shows it, a bug does not).
    last_success = np.full(job.max() + 1, -1.0)
    np.maximum.at(last_success, job[~failed], attempt[~failed])
    last_attempt = np.zeros(job.max() + 1)
    np.maximum.at(last_attempt, job, attempt)
    retried = failed & (last_attempt[job] > attempt)
    recovered = failed & (last_success[job] > attempt)
    code_retried = _count(campaign_code, retried)

    # How long the campaign's successful jobs took: a job that hit its limit with nothing
    # done while its siblings finish in a fraction of it hung; more time will not help.
    # A walltime kill without the time used recorded ran its whole request.
    walltime_used = _optional(
        [
            r.walltime_requested_s
            if r.walltime_used_s is None and r.failed and r.category == "walltime"
            else r.walltime_used_s
            for r in records
        ]
    )
    sibling_walltime = _sibling_walltime(campaign, walltime_used, ~failed)
    failed_jobs = _distinct(campaign, job, failed)

    # Did the job already get more memory (walltime) than on its first attempt?
    memory_request = _optional([r.memory_requested_mb for r in records])
    walltime_request = _optional([r.walltime_requested_s for r in records])

    numeric = {
        "attempt": attempt,
        "transient": np.asarray([r.info.transient for r in records], dtype=float),
        "deterministic": np.asarray([r.info.deterministic for r in records], dtype=float),
        "generic_code": np.asarray([r.info.generic for r in records], dtype=float),
        "known_code": np.asarray([r.info.known for r in records], dtype=float),
        "oversize": np.asarray([r.info.oversize for r in records], dtype=float),
        "site_dependent": np.asarray([r.info.site_dependent for r in records], dtype=float),
        "preemption": np.asarray([r.info.preemption for r in records], dtype=float),
        "memory_ratio": _optional([r.memory_ratio for r in records]),
        "walltime_ratio": _optional([r.walltime_ratio for r in records]),
        "progress": _optional([r.progress for r in records]),
        "projected_memory_ratio": _optional([r.projected_memory_ratio for r in records]),
        "projected_walltime_ratio": _optional([r.projected_walltime_ratio for r in records]),
        "log10_events": np.log10(_optional([r.n_events for r in records])),
        "job_failed_attempts": _count(job, failed),
        "job_sites": _distinct(job, site, failed),
        "job_same_code": _count(_group(job, code), failed),
        "job_same_code_site": _count(_group(job, code, site), failed),
        "job_code_sites": _distinct(_group(job, code), site, failed),
        "job_category_failures": _count(_group(job, category), failed),
        "job_memory_raised": _raised(job, memory_request),
        "job_walltime_raised": _raised(job, walltime_request),
        "site_attempts": site_attempts,
        "site_failure_rate": _ratio(site_failures, site_attempts),
        "site_code_failures": site_code_failures,
        "site_code_share": _ratio(site_code_failures, code_failures),
        "other_sites_code_rate": _ratio(
            code_failures - site_code_failures, campaign_attempts - site_attempts
        ),
        "other_sites_successes": _count(campaign, ~failed) - _count(campaign_site, ~failed),
        "code_sites": _distinct(campaign_code, site, failed),
        "code_jobs": _distinct(campaign_code, job, failed),
        "code_job_fraction": _ratio(_distinct(campaign_code, job, failed), campaign_jobs),
        "code_failed_job_share": _ratio(_distinct(campaign_code, job, failed), failed_jobs),
        "code_same_text_share": _ratio(
            _distinct(_group(campaign_code, _ids([_text_key(r) for r in records])), job, failed),
            _distinct(campaign_code, job, failed),
        ),
        "category_job_fraction": _ratio(_distinct(campaign_category, job, failed), campaign_jobs),
        "campaign_failure_rate": _ratio(campaign_failures, campaign_attempts),
        "campaign_sites": _distinct(campaign, site, everything),
        "no_successes": no_successes.astype(float),
        "code_retried": code_retried,
        "code_retry_success": np.where(
            code_retried > 0, _ratio(_count(campaign_code, recovered), code_retried), np.nan
        ),
        "sibling_walltime_ratio": np.where(
            sibling_walltime > 0,
            walltime_used / np.where(sibling_walltime > 0, sibling_walltime, 1),
            np.nan,
        ),
    }
    table = np.stack([numeric[name] for name in NUMERIC_FEATURES], axis=1)[rows]

    features = []
    for values, target in zip(table, targets, strict=True):
        row = {
            name: float(v)
            for name, v in zip(NUMERIC_FEATURES, values, strict=True)
            if not np.isnan(v)
        }
        failure_code = target.failure_code
        row[f"code={failure_code.token}"] = 1.0
        row[f"source={failure_code.source}"] = 1.0
        row[f"category={target.category}"] = 1.0
        for group in keyword_groups(target.log_lines):
            row[f"log={group}"] = 1.0
        features.append(row)
    return features


class CodeSiteMatrix(BaseModel):
    """Failed attempts per (failure code, site) of one campaign: the recovery panel's view."""

    codes: list[str]
    sites: list[str]
    failures: list[list[int]]  # rows: codes, columns: sites
    attempts_per_site: list[int]


def code_site_matrix(records: Sequence[FailureRecord]) -> CodeSiteMatrix:
    """Count failed attempts by code token and site (all records: pass one campaign's).

    >>> m = code_site_matrix([FailureRecord(campaign_id="c", job_index=0, site="A", exit_code=60)])
    >>> m.codes, m.sites, m.failures
    (['worker:60'], ['A'], [[1]])
    """
    sites, site_ids = np.unique(
        np.asarray([r.site for r in records], dtype=str), return_inverse=True
    )
    failed = np.asarray([r.failed for r in records], dtype=bool)
    tokens = np.asarray([r.failure_code.token for r in records], dtype=str)
    codes, code_ids = np.unique(tokens[failed], return_inverse=True)
    matrix = np.zeros((len(codes), len(sites)), dtype=int)
    np.add.at(matrix, (code_ids, site_ids[failed]), 1)
    return CodeSiteMatrix(
        codes=codes.tolist(),
        sites=sites.tolist(),
        failures=matrix.tolist(),
        attempts_per_site=np.bincount(site_ids, minlength=len(sites)).tolist(),
    )
