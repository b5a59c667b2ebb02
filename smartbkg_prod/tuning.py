"""``filter.tune: auto`` in a running campaign: the choice from its pilot jobs' reports.

The filter library (:mod:`smartbkg_prod.filter.tune`) does the arithmetic; this module
reads the store: each pilot job's first successful report (its q histograms, control
sample and stage times), pools them, and records the choice with the campaign
(``provenance["filter_tuning"]``), where every later attempt, resume and page reads it.

>>> is_tuned_job(job_index=5, pilot_jobs=4), is_tuned_job(job_index=3, pilot_jobs=4)
(True, False)
"""

from __future__ import annotations

import logging
import time

from smartbkg_prod.filter.control import add_monitors, filter_check
from smartbkg_prod.filter.speedup import (
    REFERENCE_GENERATION_MS,
    REFERENCE_SIMULATION_MS,
    StageCosts,
)
from smartbkg_prod.filter.tune import FilterTuning, TuneHistograms, choose_tuning
from smartbkg_prod.plan import JobFilterTuning
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

log = logging.getLogger("smartbkg_prod.tuning")

PROVENANCE_KEY = "filter_tuning"


def is_tuned_job(job_index: int, pilot_jobs: int) -> bool:
    """Jobs from ``pilot_jobs`` on run with the tuned values; the pilot jobs never do."""
    return job_index >= pilot_jobs


def recorded_tuning(store: Store, campaign_id: str) -> FilterTuning | None:
    """The choice recorded with the campaign (None before it is made)."""
    row = store.campaigns.get(campaign_id)
    block = (row.provenance or {}).get(PROVENANCE_KEY) if row is not None else None
    return FilterTuning.model_validate(block) if block else None


def job_tuning(tuning: FilterTuning) -> JobFilterTuning:
    return JobFilterTuning(scale=tuning.scale, p_min=tuning.p_min)


def _costs(reports: list[JobReport], costs_name: str) -> StageCosts | None:
    """Per-event stage costs pooled over ``reports`` (ms), or None without any."""
    generated = sum(report.events_generated for report in reports)
    simulated = sum(report.events_simulated for report in reports)
    if generated <= 0 or simulated <= 0:
        return None

    def total(stage: str) -> float:
        return sum(report.stage_seconds.get(stage, 0.0) for report in reports)

    filter_ms = 1e3 * total("filter") / generated
    if costs_name == "reference":
        return StageCosts(REFERENCE_GENERATION_MS, filter_ms, REFERENCE_SIMULATION_MS)
    return StageCosts(
        1e3 * total("generate") / generated,
        filter_ms,
        1e3 * (total("simulate") + total("skim")) / simulated,
    )


def tune_campaign(store: Store, campaign: Campaign, model_scale: float) -> FilterTuning:
    """Choose (k, p_min) from the pilot jobs' first successful reports and record it."""
    config = campaign.filter
    pilot_jobs = config.tune_pilot_jobs
    first: dict[int, JobReport] = {}
    for report in store.reports.of_campaign(campaign.campaign_id, successful_only=True):
        if not is_tuned_job(report.job_index, pilot_jobs):
            first.setdefault(report.job_index, report)
    reports = [report for _index, report in sorted(first.items())]
    monitors = [report.filter_monitor for report in reports if report.filter_monitor]
    histograms = TuneHistograms.total(
        monitor.tune_histograms for monitor in monitors if monitor.tune_histograms
    )
    costs = _costs(reports, config.tune_costs)
    sites: dict[str, list[JobReport]] = {}
    for report in reports:
        sites.setdefault(report.site, []).append(report)
    site_costs = {
        site: cost
        for site, site_reports in sites.items()
        if (cost := _costs(site_reports, config.tune_costs)) is not None
    }
    monitor = add_monitors(monitors)
    biased = bool(
        monitor is not None and costs is not None and filter_check(monitor, "sample", costs).biased
    )
    tuning = choose_tuning(
        histograms,
        costs,
        site_costs if len(site_costs) > 1 else {},
        p_min_floor=config.p_min,
        model_scale=model_scale,
        model_p_min=config.p_min,
        costs_name=config.tune_costs,
        first_tuned_job=pilot_jobs,
        pilot_jobs_succeeded=len(reports),
        biased=biased,
    )
    tuning.tuned_at = time.time()
    store.campaigns.update_provenance(campaign.campaign_id, {PROVENANCE_KEY: tuning.model_dump()})
    log.info(
        "filter.tune: auto: k %.4g, p_min %g (%s; expected speedup %s at %s costs, model's "
        "values %s) from %d pilot jobs",
        tuning.scale,
        tuning.p_min,
        "tuned" if tuning.tuned else tuning.note,
        "-" if tuning.expected_speedup is None else f"{tuning.expected_speedup:.3g}",
        tuning.costs,
        "-" if tuning.model_expected_speedup is None else f"{tuning.model_expected_speedup:.3g}",
        len(reports),
    )
    return tuning
