"""Prometheus exporter: a custom collector that reads the store at every scrape.

The store is the source of truth, so the exporter keeps no counters of its own: each
scrape computes :func:`~smartbkg_prod.monitor.figures.campaign_figures` for every campaign
and exposes them. Event and attempt counts are monotonic (events are counted once per
job, attempts are never deleted), so they are exposed as counters and Grafana and alert
rules may take ``rate()`` of them. ``METRICS`` lists every family served; the Grafana
dashboard and the alert rules in ``monitoring/`` may only use those.

>>> from smartbkg_prod.store import Store
>>> b"smartbkg_monitor_campaigns" in exposition(Store("sqlite://"))
True
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smartbkg_prod.monitor.figures import CampaignFigures, all_campaign_figures
from smartbkg_prod.store import Store

PREFIX = "smartbkg"
EVENT_STAGES = ("generated", "kept", "simulated", "skimmed")

# name -> (type, help). Counters are exposed with the ``_total`` suffix.
METRICS: dict[str, tuple[str, str]] = {
    "smartbkg_campaign_info": ("gauge", "Campaign identity (value 1)."),
    "smartbkg_campaign_jobs": ("gauge", "Jobs by state."),
    "smartbkg_campaign_jobs_planned": ("gauge", "Jobs planned."),
    "smartbkg_campaign_complete": ("gauge", "1 when every job is done."),
    "smartbkg_campaign_events_requested": ("gauge", "Events requested."),
    "smartbkg_campaign_events": (
        "counter",
        "Events by stage, once per job (first successful attempt).",
    ),
    "smartbkg_campaign_attempts": ("counter", "Finished attempts by site and result."),
    "smartbkg_campaign_failures": ("counter", "Failed attempts by site and exit/error code."),
    "smartbkg_campaign_attempts_running": ("gauge", "Attempts in flight."),
    "smartbkg_campaign_attempts_held": ("gauge", "Attempts held by the batch system."),
    "smartbkg_campaign_throughput_events_per_second": ("gauge", "Events/s in the moving window."),
    "smartbkg_campaign_throughput_jobs_per_hour": ("gauge", "Jobs/h in the moving window."),
    "smartbkg_campaign_eta_seconds": ("gauge", "Seconds to completion at the windowed rate."),
    "smartbkg_campaign_last_report_timestamp_seconds": ("gauge", "Unix time of the last report."),
    "smartbkg_campaign_stalled": (
        "gauge",
        "1 when incomplete and silent longer than the stall limit.",
    ),
    "smartbkg_campaign_cpu_seconds": ("counter", "CPU seconds of all attempts with a report."),
    "smartbkg_campaign_wall_seconds": ("counter", "Wall seconds of all attempts with a report."),
    "smartbkg_campaign_cpu_efficiency": ("gauge", "CPU seconds / (wall seconds x cores per job)."),
    "smartbkg_campaign_filter_pass_rate": ("gauge", "events_kept / events_generated."),
    "smartbkg_campaign_skim_retention": ("gauge", "events_skimmed / events_kept."),
    "smartbkg_campaign_filter_seconds_per_event": ("gauge", "Measured NN filter cost t_NN."),
    "smartbkg_campaign_filter_speedup": (
        "gauge",
        "Effective filter speedup (reference or measured costs).",
    ),
    "smartbkg_campaign_filter_drift_expected": ("gauge", "Rate the filter model expects."),
    "smartbkg_campaign_filter_drift_observed": ("gauge", "Rate observed in this campaign."),
    "smartbkg_campaign_filter_drift_p_value": (
        "gauge",
        "Binomial two-sided p-value, observed vs expected.",
    ),
    "smartbkg_campaign_filter_drift_alarm": ("gauge", "1 when the deviation is significant."),
    "smartbkg_campaign_filter_control_speedup": (
        "gauge",
        "Effective filter speedup at reference costs measured on the control sample.",
    ),
    "smartbkg_campaign_filter_control_keep_rate": (
        "gauge",
        "Filter keep rate of control events the skim passed / failed.",
    ),
    "smartbkg_campaign_filter_bias_normalization_pull": (
        "gauge",
        "(sum of weights - control estimate) / sigma, skimmed events.",
    ),
    "smartbkg_campaign_filter_bias_p_value": (
        "gauge",
        "Control vs weighted chi2 p-value per monitored variable.",
    ),
    "smartbkg_campaign_filter_bias_kl": (
        "gauge",
        "Control vs weighted KL divergence per monitored variable.",
    ),
    "smartbkg_campaign_filter_bias_alarm": ("gauge", "1 when the control sample shows bias."),
    "smartbkg_campaign_filter_tuned": (
        "gauge",
        "filter.tune: auto: 1 when (k, p_min) were tuned, 0 when the model's were kept.",
    ),
    "smartbkg_campaign_filter_tuned_scale": ("gauge", "Sample mode k chosen by filter.tune."),
    "smartbkg_campaign_filter_tuned_p_min": ("gauge", "Sample mode p_min chosen by filter.tune."),
    "smartbkg_campaign_filter_tuned_speedup": (
        "gauge",
        "Effective speedup at the tuning's costs: expected from the pilot jobs, in situ on "
        "all jobs (tuned and model values), measured on the control sample.",
    ),
    "smartbkg_site_cpu_efficiency": ("gauge", "CPU efficiency per campaign and site."),
    "smartbkg_monitor_campaigns": ("gauge", "Campaigns in the store."),
    "smartbkg_monitor_scrape_duration_seconds": ("gauge", "Time to compute this scrape."),
}


def exposed_names() -> set[str]:
    """Every sample name this exporter can emit (counters with ``_total``)."""
    names = set()
    for name, (kind, _help) in METRICS.items():
        names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


class StoreCollector(Collector):
    """Collects campaign figures from a :class:`Store` at scrape time."""

    def __init__(self, store: Store, **figure_options):
        self.store = store
        self.figure_options = figure_options

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from running a (database) collection.
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        figures = all_campaign_figures(self.store, **self.figure_options)
        families = {name: _family(name) for name in METRICS}
        for campaign in figures:
            _add_campaign(families, campaign)
        families["smartbkg_monitor_campaigns"].add_metric([], len(figures))
        families["smartbkg_monitor_scrape_duration_seconds"].add_metric(
            [], time.perf_counter() - started
        )
        yield from families.values()


_LABELS = {
    "smartbkg_campaign_info": ["campaign", "name", "backend", "filter_mode"],
    "smartbkg_campaign_jobs": ["campaign", "state"],
    "smartbkg_campaign_events": ["campaign", "stage"],
    "smartbkg_campaign_attempts": ["campaign", "site", "result"],
    "smartbkg_campaign_failures": ["campaign", "site", "exit_code", "error_class"],
    "smartbkg_campaign_filter_speedup": ["campaign", "costs"],
    "smartbkg_campaign_filter_drift_expected": ["campaign", "quantity"],
    "smartbkg_campaign_filter_drift_observed": ["campaign", "quantity"],
    "smartbkg_campaign_filter_drift_p_value": ["campaign", "quantity"],
    "smartbkg_campaign_filter_drift_alarm": ["campaign", "quantity"],
    "smartbkg_campaign_filter_control_keep_rate": ["campaign", "skim"],
    "smartbkg_campaign_filter_bias_p_value": ["campaign", "variable"],
    "smartbkg_campaign_filter_bias_kl": ["campaign", "variable"],
    "smartbkg_site_cpu_efficiency": ["campaign", "site"],
    "smartbkg_campaign_filter_tuned_speedup": ["campaign", "estimate"],
    "smartbkg_monitor_campaigns": [],
    "smartbkg_monitor_scrape_duration_seconds": [],
}


def _family(name: str) -> Metric:
    kind, documentation = METRICS[name]
    labels = _LABELS.get(name, ["campaign"])
    if kind == "counter":
        return CounterMetricFamily(name, documentation, labels=labels)
    return GaugeMetricFamily(name, documentation, labels=labels)


def _add_campaign(families: dict[str, Metric], figures: CampaignFigures) -> None:
    status, cid = figures.status, figures.campaign_id

    def gauge(name: str, value: float | None, *labels: str) -> None:
        if value is not None:
            families[name].add_metric([cid, *labels], float(value))

    families["smartbkg_campaign_info"].add_metric(
        [cid, status.name, status.backend, figures.filter_mode], 1.0
    )
    for state, count in status.jobs_by_state.items():
        gauge("smartbkg_campaign_jobs", count, state)
    gauge("smartbkg_campaign_jobs_planned", status.jobs_total)
    gauge("smartbkg_campaign_complete", 1.0 if status.complete else 0.0)
    gauge("smartbkg_campaign_events_requested", status.events_requested)
    for stage in EVENT_STAGES:
        gauge("smartbkg_campaign_events", getattr(status, f"events_{stage}"), stage)
    for site in figures.sites:
        gauge("smartbkg_campaign_attempts", site.succeeded, site.site, "succeeded")
        gauge("smartbkg_campaign_attempts", site.failed, site.site, "failed")
        gauge("smartbkg_site_cpu_efficiency", site.cpu_efficiency, site.site)
    for cell in figures.failure_matrix:
        gauge(
            "smartbkg_campaign_failures",
            cell.count,
            cell.site,
            "" if cell.exit_code is None else str(cell.exit_code),
            cell.error_class,
        )
    gauge("smartbkg_campaign_attempts_running", figures.attempts_running)
    gauge("smartbkg_campaign_attempts_held", figures.attempts_held)
    gauge("smartbkg_campaign_throughput_events_per_second", figures.throughput_events_per_s)
    gauge("smartbkg_campaign_throughput_jobs_per_hour", figures.throughput_jobs_per_h)
    gauge("smartbkg_campaign_eta_seconds", figures.eta_seconds)
    gauge("smartbkg_campaign_last_report_timestamp_seconds", figures.last_report_at)
    gauge("smartbkg_campaign_stalled", 1.0 if figures.stalled else 0.0)
    gauge("smartbkg_campaign_cpu_seconds", sum(site.cpu_seconds for site in figures.sites))
    gauge("smartbkg_campaign_wall_seconds", sum(site.wall_seconds for site in figures.sites))
    gauge("smartbkg_campaign_cpu_efficiency", figures.cpu_efficiency)
    gauge("smartbkg_campaign_filter_pass_rate", figures.filter_pass_rate)
    gauge("smartbkg_campaign_skim_retention", figures.skim_retention)
    gauge("smartbkg_campaign_filter_seconds_per_event", figures.filter_seconds_per_event)
    for speedup in figures.speedups:
        gauge("smartbkg_campaign_filter_speedup", speedup.value, speedup.costs)
    for check in figures.drift.checks:
        gauge("smartbkg_campaign_filter_drift_expected", check.expected, check.quantity)
        gauge("smartbkg_campaign_filter_drift_observed", check.observed, check.quantity)
        gauge("smartbkg_campaign_filter_drift_p_value", check.p_value, check.quantity)
        gauge("smartbkg_campaign_filter_drift_alarm", 1.0 if check.alarm else 0.0, check.quantity)
    control = figures.filter_check
    if control is not None:
        gauge("smartbkg_campaign_filter_control_speedup", control.speedup)
        gauge("smartbkg_campaign_filter_control_keep_rate", control.keep_rate_passing, "passed")
        gauge("smartbkg_campaign_filter_control_keep_rate", control.keep_rate_failing, "failed")
        gauge("smartbkg_campaign_filter_bias_normalization_pull", control.normalization_pull)
        gauge("smartbkg_campaign_filter_bias_alarm", 1.0 if control.biased else 0.0)
        for variable in control.variables:
            gauge("smartbkg_campaign_filter_bias_p_value", variable.p_value, variable.variable)
            gauge("smartbkg_campaign_filter_bias_kl", variable.kl_divergence, variable.variable)
    tuned = figures.filter_tuning
    if tuned is not None:
        gauge("smartbkg_campaign_filter_tuned", 1.0 if tuned.tuning.tuned else 0.0)
        gauge("smartbkg_campaign_filter_tuned_scale", tuned.tuning.scale)
        gauge("smartbkg_campaign_filter_tuned_p_min", tuned.tuning.p_min)
        for estimate, value in (
            ("pilot_expected", tuned.tuning.expected_speedup),
            ("in_situ", tuned.in_situ_speedup),
            ("in_situ_model_values", tuned.in_situ_model_speedup),
            ("control_sample", tuned.control_speedup),
        ):
            gauge("smartbkg_campaign_filter_tuned_speedup", value, estimate)


def registry_for(store: Store, **figure_options) -> CollectorRegistry:
    """A registry holding only the store collector (no process metrics: one per scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, **figure_options))
    return registry


def exposition(store: Store, registry: CollectorRegistry | None = None) -> bytes:
    """The ``/metrics`` body in the Prometheus text format."""
    return generate_latest(registry or registry_for(store))
