"""A campaign with known figures, built from real JobReport objects (monitor tests).

Ten jobs of 1000 events with a cut filter, on three sites. Attempt history:

- jobs 0-7 succeed at their first attempt (T2_B, or T2_C for odd jobs), 300 kept,
  30 skimmed each, filter 0.5 s, generate 0.1 s, simulate 2 s, skim 0.1 s, wall 10 s,
  cpu 8 s;
- jobs 0 and 2 first fail out of memory (exit 50) at T2_A (so they succeed at attempt 2);
- job 8 fails stage-out (exit 60) at T2_C, with a log;
- job 9 is lost (killed, no report) through the store, like the driver does.
"""

from __future__ import annotations

from smartbkg_prod.plan import Job, plan_jobs
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

T0 = 1_700_000_000.0


def filtered_campaign(tmp_path) -> Campaign:
    return Campaign(
        name="monitored",
        process="bbbar_generic",
        events=10_000,
        events_per_job=1000,
        seed=11,
        filter={"mode": "cut", "model": str(tmp_path / "model.pt"), "threshold": 0.4},
        outputs={"directory": str(tmp_path / "out")},
    )


def make_report(
    job: Job, attempt: int, site: str, finished_at: float, exit_code: int = 0, **extra
) -> JobReport:
    ok = exit_code == 0
    values = dict(
        site=site,
        host=f"node-{job.index}.{site.lower()}",
        started_at=finished_at - 10,
        finished_at=finished_at,
        wall_seconds=10.0,
        cpu_seconds=8.0 if ok else 2.0,
        stage_seconds={"generate": 0.1, "filter": 0.5, "simulate": 2.0, "skim": 0.1} if ok else {},
        events_generated=job.n_events if ok else 0,
        events_kept=300 if ok else 0,
        events_simulated=300 if ok else 0,
        events_skimmed=30 if ok else 0,
        sum_weights_kept=300.0 if ok else 0.0,
        sum_weights_skimmed=30.0 if ok else 0.0,
        filter_mode="cut",
        exit_code=exit_code,
        error_class="success" if ok else {50: "out_of_memory", 60: "stage_out"}[exit_code],
    )
    values.update(extra)
    return JobReport.for_job(job, "monitored", attempt, **values)


def campaign_reports(jobs: list[Job]) -> list[JobReport]:
    """Every report of the campaign above, in the order a collector would see them."""
    reports = [
        make_report(
            jobs[0],
            1,
            "T2_A",
            T0 + 20,
            50,
            error_message="peak memory 2600 MB after simulate exceeds the requested 2000 MB",
            log_tail=[
                "INFO generated 1000 events",
                "ERROR peak memory 2600 MB after simulate\nexceeds the requested 2000 MB",
            ],
        ),
        make_report(
            jobs[2],
            1,
            "T2_A",
            T0 + 40,
            50,
            error_message="peak memory 2700 MB",
            log_tail=["ERROR peak memory 2700 MB"],
        ),
        make_report(
            jobs[8],
            1,
            "T2_C",
            T0 + 90,
            60,
            error_message="cannot write out.root: No space left on device",
            log_tail=[
                "INFO skim kept 30 of 300 events",
                "ERROR cannot write out.root: No space left on device",
            ],
        ),
    ]
    for job in jobs[:8]:
        attempt = 2 if job.index in (0, 2) else 1
        site = "T2_C" if job.index % 2 else "T2_B"
        reports.append(make_report(job, attempt, site, T0 + 100 + 100 * job.index))
    return reports


def lose_job_9(store: Store, jobs: list[Job]) -> None:
    """Job 9's attempt is killed without a report (the driver closes it)."""
    store.attempts.start(jobs[9], "local", site="T2_A")
    store.attempts.finish(
        jobs[9].campaign_id, 9, 1, 137, "signal_9", final=False, native_code="signal:9"
    )


def register(store: Store, campaign: Campaign, tmp_path) -> list[Job]:
    jobs = plan_jobs(campaign)
    store.campaigns.register(campaign, jobs, tmp_path / "out")
    return jobs


def populate(store: Store, tmp_path, **expectation: float) -> tuple[str, list[Job]]:
    """Register the campaign, collect its reports, lose job 9 and record the filter's
    expected rates (``pass_rate``, ``retention_kept``, ``retention_unfiltered``)."""
    from smartbkg_prod.monitor.collect import ingest_reports
    from smartbkg_prod.monitor.drift import set_filter_expectation

    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    ingest_reports(store, campaign_reports(jobs))
    lose_job_9(store, jobs)
    set_filter_expectation(store, campaign.campaign_id, **expectation)
    return campaign.campaign_id, jobs
