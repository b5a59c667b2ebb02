"""Cost of the control-sample filter check in the monitor, for a large campaign.

Builds a sample-mode campaign with a 10% control sample whose reports each carry a
:class:`~smartbkg_prod.filter.summary.FilterMonitor` (made by ``job_monitor`` from 1,000-event
jobs with realistic variable ranges), ingests them into SQLite, then times

- the report size with and without the filter monitor;
- ``campaign_figures`` cold (every job's monitor read and added), cached (campaign
  unchanged), and after one more report arrives (a live campaign's refresh).

    nice python benchmarks/bench_filter_check.py --out benchmarks/results/filter_check.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import machine, write_results

from smartbkg_prod.filter.control import job_monitor, monitor_edges
from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign, SkimConfig
from smartbkg_prod.store import Store

EVENTS_PER_JOB = 1000
CONTROL_FRACTION = 0.1
T0 = 1_700_000_000.0


def job_report(campaign: Campaign, job, rng: np.random.Generator) -> JobReport:
    """One successful sample-mode attempt of ``job`` with a filter monitor."""
    n = EVENTS_PER_JOB
    p = np.clip(rng.beta(0.5, 3.0, n), 0.02, 1.0)
    kept = rng.random(n) < p
    control = rng.random(n) < CONTROL_FRACTION
    simulated = kept | control
    passed = (rng.random(n) < 0.03)[simulated]
    m = int(simulated.sum())
    variables = {
        "mbc": rng.uniform(5.23, 5.29, m),
        "delta_e": rng.normal(0, 0.08, m),
        "best_mode": rng.integers(0, 48, m).astype(float),
        "n_candidates": rng.integers(1, 8, m).astype(float),
        "n_tracks": rng.poisson(10, m).astype(float),
        "n_photons": rng.poisson(12, m).astype(float),
        "n_mc_particles": rng.poisson(60, m).astype(float),
        "n_charged_final": 2.0 * rng.poisson(5, m),
        "p_max_charged": rng.gamma(4, 0.4, m),
        "p_sum_charged": rng.normal(8, 1.5, m),
    }
    weights = np.where(kept, 1 / p, 0.0)[simulated]
    monitor = job_monitor(
        variables,
        monitor_edges(campaign.skim),
        passed=passed,
        kept=kept[simulated],
        control=control[simulated],
        weights=weights,
        keep_probability=p[simulated],
        control_fraction=CONTROL_FRACTION,
        sample_mode=True,
    )
    return JobReport.for_job(
        job,
        campaign.name,
        1,
        started_at=T0 + job.index,
        finished_at=T0 + job.index + 60,
        wall_seconds=60.0,
        cpu_seconds=55.0,
        stage_seconds={"generate": 0.1, "filter": 0.05, "simulate": 5.0, "skim": 0.1},
        events_generated=n,
        events_kept=int(kept.sum()),
        events_simulated=m,
        events_skimmed=int((passed & kept[simulated]).sum()),
        sum_weights_kept=float(weights.sum()),
        sum_weights_skimmed=float(weights[passed].sum()),
        sum_weights_squared_skimmed=float(np.square(weights[passed]).sum()),
        filter_mode="sample",
        exit_code=0,
        error_class="success",
        filter_monitor=monitor,
    )


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        campaign = Campaign(
            name="bench-control",
            process="bbbar_generic",
            events=(args.jobs + 1) * EVENTS_PER_JOB,
            events_per_job=EVENTS_PER_JOB,
            seed=5,
            filter={
                "mode": "sample",
                "model": str(directory / "model.pt"),
                "control_fraction": CONTROL_FRACTION,
            },
            skim=SkimConfig(),
            outputs={"directory": str(directory / "out")},
        )
        jobs = plan_jobs(campaign)
        rng = np.random.default_rng(1)
        reports = [job_report(campaign, job, rng) for job in jobs[: args.jobs]]
        store = Store(f"sqlite:///{directory / 'bench.db'}")
        store.campaigns.register(campaign, jobs, directory / "out")
        ingest_seconds, _ = timed(lambda: ingest_reports(store, reports))
        with_monitor = len(reports[0].model_dump_json())
        without = len(reports[0].model_copy(update={"filter_monitor": None}).model_dump_json())
        cold, figures = timed(lambda: campaign_figures(store, campaign.campaign_id))
        cached, _ = timed(lambda: campaign_figures(store, campaign.campaign_id))
        ingest_reports(store, [job_report(campaign, jobs[args.jobs], rng)])
        refresh, refreshed = timed(lambda: campaign_figures(store, campaign.campaign_id))
        check = refreshed.filter_check
        document = {
            "benchmark": "monitor filter check (control sample) on a large campaign",
            "command": f"nice python benchmarks/bench_filter_check.py --jobs {args.jobs}",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "jobs": args.jobs,
            "report_bytes_with_filter_monitor": with_monitor,
            "report_bytes_without": without,
            "ingest_seconds": ingest_seconds,
            "figures_cold_seconds": cold,
            "figures_cached_seconds": cached,
            "figures_after_one_more_report_seconds": refresh,
            "control_events": check.control_events,
            "control_skimmed": check.control_skimmed,
            "jobs_in_check_after_refresh": check.control_events
            > figures.filter_check.control_events,
        }
    write_results(document, args.out)


if __name__ == "__main__":
    main()
