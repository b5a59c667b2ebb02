"""Campaign figures: what operators watch, per campaign, per site and over time.

Everything is computed with aggregate SQL over the store (a campaign with 10k reports costs
a few queries, not 10k objects). Event counts come from each job's first successful
attempt, exactly as ``store.campaigns.status``
(:meth:`~smartbkg_prod.store.campaigns.Campaigns.status`) counts them; resources (CPU,
wall time, failures) from every attempt.

Definitions:

- throughput: events generated (jobs done) by first successful attempts finishing in the
  moving window ``[now - window_s, now]`` (clipped to the campaign's start), per second
  (per hour); the time series bins the same counts;
- ETA: events still to produce / windowed throughput (``None`` when nothing finished in
  the window: a stalled campaign has no honest ETA);
- CPU efficiency: Σ cpu_seconds / (Σ wall_seconds × resources.cores) over all attempts
  with a report;
- filter pass rate: events_kept / events_generated; skim retention: events_skimmed /
  events_kept (control-only events are simulated but not in the skimmed sample);
- effective filter speedup (ARCHITECTURE.md), with t_NN measured from
  ``stage_seconds["filter"]`` (latest 1,000 successful attempts) and t_g, t_s the Belle II
  reference costs (and, side by side, the measured ones): hard cut ``S = ε1 (t_g + t_s) / (t_g + t_NN + t_s p_keep)`` with
  ``ε1 = p_keep r_kept / r`` (r = the model's unfiltered retention), sampling
  ``S = (t_g + t_s) / (⟨1/p⟩_pass (t_g + t_NN + t_s ⟨p⟩_all))`` with ``⟨p⟩_all = p_keep``
  and ``⟨1/p⟩_pass`` estimated by Σw²_skimmed / Σw_skimmed (each kept event stands for
  w passing ones); for reports from before Σw² was recorded, Σw / N, a lower bound of
  ⟨1/p⟩_pass (Jensen), makes the figure an upper bound; the ideal
  ``S_max = (t_g + t_s) / (t_g + t_NN + r t_s)`` is given for scale;
- the filter check (:mod:`smartbkg_prod.filter.control`), for campaigns with a control
  sample: the filter's keep rates and effective speedup measured on unfiltered events, and
  per monitored variable the control vs weighted distributions, KL divergence and χ²
  p-value.

>>> from smartbkg_prod.store import Store
>>> all_campaign_figures(Store("sqlite://"))
[]
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, fields

from pydantic import BaseModel, Field

from smartbkg_prod.errors import StoreError
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.filter.control import FilterCheck, filter_check
from smartbkg_prod.filter.speedup import (
    REFERENCE_GENERATION_MS,
    REFERENCE_SIMULATION_MS,
    StageCosts,
    cut_speedup_from_keep,
    max_speedup,
    sampling_speedup_from_means,
)
from smartbkg_prod.filter.summary import FilterMonitor
from smartbkg_prod.filter.tune import FilterTuning, TuneHistograms, expected_speedup
from smartbkg_prod.monitor.drift import DriftReport, campaign_expectation, check_drift
from smartbkg_prod.redact import redact
from smartbkg_prod.store import DONE, FAILED, RUNNING, CampaignStatus, Store
from smartbkg_prod.store.figures import (
    CampaignRows,
    ControlSums,
    data_version,
    latest_failure_bodies,
    load_campaign_rows,
)
from smartbkg_prod.tuning import PROVENANCE_KEY as TUNING_KEY

DEFAULT_WINDOW_S = 3600.0
DEFAULT_STALL_AFTER_S = 1800.0
_NICE_BINS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
_MAX_BINS = 60
SMOOTH_BINS = 5
_EXCERPT_LINES = 4


class SiteFigures(BaseModel):
    site: str
    attempts: int
    succeeded: int
    failed: int
    failure_rate: float | None
    events_generated: int
    cpu_seconds: float
    wall_seconds: float
    cpu_efficiency: float | None


class FailureCell(BaseModel):
    """One cell of the failure matrix: failed attempts with this code at this site."""

    code: str  # "50 out_of_memory"
    exit_code: int | None
    error_class: str
    site: str
    count: int


class FailureReason(BaseModel):
    code: str
    exit_code: int | None
    error_class: str
    description: str
    count: int
    sites: list[str]
    last_seen: float | None
    message: str
    log_excerpt: list[str]


class FailureEntry(BaseModel):
    job_index: int
    attempt: int
    site: str
    code: str
    finished_at: float | None
    message: str
    log_excerpt: list[str]


class ThroughputPoint(BaseModel):
    start: float
    end: float
    events: int
    jobs: int
    events_per_s: float
    jobs_per_h: float
    moving_events_per_s: float  # over the last SMOOTH_BINS bins (a moving window)
    moving_jobs_per_h: float


class Speedup(BaseModel):
    costs: str  # "reference" (t_g, t_s of Belle II) | "measured" (this campaign's stages)
    t_g_ms: float | None
    t_nn_ms: float | None
    t_s_ms: float | None
    value: float | None
    ideal: float | None
    note: str = ""


class TuningFigures(BaseModel):
    """``filter.tune: auto``: the recorded choice and how it does in the whole campaign.

    ``in_situ_speedup``: the effective speedup of the chosen (k, p_min) at the tuning's
    costs on every job's q histograms (⟨p⟩ from all generated events, ⟨1/p⟩_pass from the
    skimmed control events); ``control_speedup``: the control sample's measured speedup of
    what the jobs ran (pilot jobs included) at the same costs."""

    tuning: FilterTuning
    in_situ_speedup: float | None = None
    in_situ_model_speedup: float | None = None  # the model's values on the same events
    control_speedup: float | None = None


class CampaignFigures(BaseModel):
    """Everything the web page, ``/metrics`` and ``status --watch`` show for one campaign."""

    status: CampaignStatus
    filter_mode: str
    created_at: float
    computed_at: float
    window_s: float
    throughput_events_per_s: float
    throughput_jobs_per_h: float
    average_events_per_s: float | None
    eta_seconds: float | None
    last_report_at: float | None
    stalled: bool
    events_remaining: int
    cpu_efficiency: float | None
    filter_pass_rate: float | None
    filter_pass_rate_error: float | None
    skim_retention: float | None
    skim_retention_error: float | None
    filter_seconds_per_event: float | None
    speedups: list[Speedup]
    attempts_succeeded: int
    attempts_failed: int
    attempts_running: int
    attempts_held: int
    sites: list[SiteFigures]
    failure_matrix: list[FailureCell]
    top_failures: list[FailureReason]
    recent_failures: list[FailureEntry]
    series: list[ThroughputPoint] = Field(default_factory=list)
    bin_seconds: float
    drift: DriftReport
    filter_check: FilterCheck | None = None  # from the control sample, when there is one
    filter_tuning: TuningFigures | None = None  # filter.tune: auto, once chosen

    @property
    def campaign_id(self) -> str:
        return self.status.campaign_id


def _fraction(numerator: float, denominator: float) -> tuple[float | None, float | None]:
    if not denominator:
        return None, None
    value = numerator / denominator
    return value, math.sqrt(max(value * (1 - value), 0.0) / denominator)


def failure_code(exit_code: int | None, error_class: str | None) -> str:
    return f"{'-' if exit_code is None else exit_code} {error_class or 'unknown'}"


def describe_code(exit_code: int | None, error_class: str | None) -> str:
    try:
        return ExitCode(exit_code).description
    except ValueError:
        if exit_code is not None and exit_code > 128:
            return f"killed by signal {exit_code - 128}"
    except TypeError:
        pass
    return error_class or "unknown failure"


def _excerpt(body: dict | None) -> tuple[str, list[str]]:
    """The error message and the last log lines of a report body (multi-line records split)."""
    if not isinstance(body, dict):
        return "", []
    # Reports from elsewhere (or from older workers) may carry credentials: never show them.
    lines: list[str] = []
    for record in body.get("log_tail") or []:
        lines.extend(redact(str(record)).splitlines())
    return redact(str(body.get("error_message") or "")), lines[-_EXCERPT_LINES:]


def bin_width(span_s: float) -> float:
    """A readable bin width giving at most ~60 bins over ``span_s``."""
    for width in _NICE_BINS_S:
        if span_s / width <= _MAX_BINS:
            return float(width)
    return float(math.ceil(span_s / _MAX_BINS))


@dataclass(frozen=True)
class _CampaignData(CampaignRows):
    """The store's rows of a campaign with its failure summary (cached while the campaign
    is unchanged)."""

    failures: tuple


def _load(
    store: Store, campaign_id: str, recent: int, control_sums: ControlSums | None = None
) -> _CampaignData:
    rows = load_campaign_rows(store, campaign_id, recent, control_sums)
    return _CampaignData(
        **{field.name: getattr(rows, field.name) for field in fields(rows)},
        failures=_failures(store, campaign_id, rows, recent),
    )


class _FiguresCache:
    """Per-store cache of :class:`_CampaignData`, checked against
    :func:`~smartbkg_prod.store.figures.data_version`: an idle
    or finished campaign costs five small queries per page or scrape instead of a scan of
    all its reports (JSON timings included)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[tuple, _CampaignData]] = {}
        self._lock = threading.Lock()
        self.control_sums = ControlSums()

    def data(self, store: Store, campaign_id: str, recent: int) -> _CampaignData:
        version = data_version(store, campaign_id)
        key = (campaign_id, recent)
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        data = _load(store, campaign_id, recent, self.control_sums)
        with self._lock:
            self._entries[key] = (version, data)
        return data


_CACHES: weakref.WeakKeyDictionary[Store, _FiguresCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_for(store: Store) -> _FiguresCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = _FiguresCache()
        return cache


def campaign_figures(
    store: Store,
    campaign_id: str,
    now: float | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    stall_after_s: float = DEFAULT_STALL_AFTER_S,
    reference_generation_ms: float = REFERENCE_GENERATION_MS,
    reference_simulation_ms: float = REFERENCE_SIMULATION_MS,
    recent: int = 10,
    cached: bool = True,
) -> CampaignFigures:
    """All figures of one campaign at time ``now`` (default: the current time).

    ``cached`` reuses the database part of the last computation while the campaign is
    unchanged (see :class:`_FiguresCache`); time-dependent figures are always recomputed.
    """
    now = time.time() if now is None else now
    if store.campaigns.get(campaign_id) is None:
        raise StoreError(f"no campaign {campaign_id!r} in {store.url}")
    data = (
        _cache_for(store).data(store, campaign_id, recent)
        if cached
        else _load(store, campaign_id, recent)
    )
    status, spec, provenance, created_at = data.status, data.spec, data.provenance, data.created_at
    finished, costs, site_rows = data.finished, data.costs, data.site_rows
    attempt_rows, held, failures = data.attempt_rows, data.held, data.failures
    start = min((row[4] for row in site_rows), default=None)
    last_report_at = max((row[5] for row in site_rows), default=None)
    site_events: dict[str, int] = {}
    for _finished_at, events, site in finished:
        site_events[site] = site_events.get(site, 0) + events
    # Moving window, clipped to the campaign's first start so a young campaign's rate is
    # not diluted by time before it ran.
    window_start = max(now - window_s, start if start is not None else now)
    window_length = max(now - window_start, 1e-9)
    in_window = [(t, n) for t, n, _site in finished if window_start <= t <= now]
    throughput = sum(n for _, n in in_window) / window_length if in_window else 0.0
    jobs_per_h = 3600.0 * len(in_window) / window_length if in_window else 0.0
    remaining = max(status.events_requested - status.events_generated, 0)
    eta = 0.0 if status.complete else (remaining / throughput if throughput > 0 else None)
    stalled = (
        not status.complete
        and status.jobs_by_state.get("failed", 0) + status.jobs_by_state.get(DONE, 0)
        < status.jobs_total
        and (now - (last_report_at if last_report_at is not None else created_at)) > stall_after_s
    )
    average = (
        status.events_generated / (last_report_at - start)
        if start is not None and last_report_at is not None and last_report_at > start
        else None
    )

    # A live campaign's plot runs to now (a gap shows a stall); a long-silent one's ends
    # at its last report, or its history would shrink into one bin.
    quiet = last_report_at is not None and now - last_report_at > max(window_s, stall_after_s)
    series, width = _series(finished, start, last_report_at if quiet else now)
    pass_rate, pass_rate_error = _fraction(status.events_kept, status.events_generated)
    retention, retention_error = _fraction(status.events_skimmed, status.events_kept)
    (
        generate_s,
        filter_s,
        simulate_s,
        skim_s,
        reports_with_filter,
        cost_generated,
        cost_simulated,
    ) = costs
    filter_mode = str((spec.get("filter") or {}).get("mode", "off"))
    expectation = campaign_expectation(provenance, spec)
    drift = check_drift(
        expectation if filter_mode != "off" else None,
        status.events_generated,
        status.events_kept,
        status.events_skimmed,
    )
    if filter_mode == "off":
        drift.note = "filter off: nothing to drift"
    t_nn_ms = 1000.0 * filter_s / cost_generated if cost_generated and reports_with_filter else None
    measured = (
        1000.0 * generate_s / cost_generated if cost_generated else None,
        1000.0 * (simulate_s + skim_s) / cost_simulated if cost_simulated else None,
    )
    retention_unfiltered = expectation.retention_unfiltered if expectation else None
    sum_w2, jobs_with_sum_w2 = data.sum_weights_squared
    sum_weights_squared = sum_w2 if jobs_with_sum_w2 == status.jobs_by_state.get(DONE, 0) else None
    check = (
        filter_check(
            data.filter_monitor,
            filter_mode,
            StageCosts(reference_generation_ms, t_nn_ms or 0.0, reference_simulation_ms),
        )
        if data.filter_monitor is not None and filter_mode != "off"
        else None
    )
    if check is not None and None not in measured and t_nn_ms is not None:
        # The control sample at the stage costs this campaign measured: what the filter
        # is worth with whatever generation and simulation are plugged in.
        measured_costs = StageCosts(measured[0], t_nn_ms, measured[1])
        check.measured_costs_ms = measured_costs.to_dict()
        check.measured_speedup = check.speedup_at(filter_mode, measured_costs)
    speedups = [
        effective_speedup(
            costs_name,
            filter_mode,
            t_g_ms,
            t_nn_ms,
            t_s_ms,
            pass_rate,
            retention,
            status,
            retention_unfiltered,
            sum_weights_squared,
        )
        for costs_name, t_g_ms, t_s_ms in (
            ("reference", reference_generation_ms, reference_simulation_ms),
            ("measured", *measured),
        )
    ]
    tuning = _tuning_figures(provenance, data.filter_monitor)
    cores = _cores(spec)
    sites = _site_figures(site_rows, site_events, attempt_rows, cores)
    by_state: dict[str, int] = {}
    for _site, state, _code, _cls, count, _last in attempt_rows:
        by_state[state] = by_state.get(state, 0) + count
    cpu = sum(row[2] for row in site_rows)
    wall = sum(row[3] for row in site_rows)
    return CampaignFigures(
        status=status,
        filter_mode=filter_mode,
        created_at=created_at,
        computed_at=now,
        window_s=window_s,
        throughput_events_per_s=throughput,
        throughput_jobs_per_h=jobs_per_h,
        average_events_per_s=average,
        eta_seconds=eta,
        last_report_at=last_report_at,
        stalled=stalled,
        events_remaining=remaining,
        cpu_efficiency=cpu / (wall * cores) if wall > 0 else None,
        filter_pass_rate=pass_rate,
        filter_pass_rate_error=pass_rate_error,
        skim_retention=retention,
        skim_retention_error=retention_error,
        filter_seconds_per_event=t_nn_ms / 1000.0 if t_nn_ms is not None else None,
        speedups=speedups,
        attempts_succeeded=by_state.get(DONE, 0),
        attempts_failed=by_state.get(FAILED, 0),
        attempts_running=by_state.get(RUNNING, 0),
        attempts_held=int(held or 0),
        sites=sites,
        failure_matrix=failures[0],
        top_failures=failures[1],
        recent_failures=failures[2],
        series=series,
        bin_seconds=width,
        drift=drift,
        filter_check=check,
        filter_tuning=tuning,
    )


def _tuning_figures(provenance: dict, monitor: FilterMonitor | None) -> TuningFigures | None:
    block = provenance.get(TUNING_KEY)
    if not block:
        return None
    tuning = FilterTuning.model_validate(block)
    figures = TuningFigures(tuning=tuning)
    if monitor is None or not tuning.costs_ms:
        return figures
    costs = StageCosts(**tuning.costs_ms)
    if monitor.tune_histograms:
        histograms = TuneHistograms.model_validate(monitor.tune_histograms)
        figures.in_situ_speedup = expected_speedup(histograms, tuning.scale, tuning.p_min, costs)
        figures.in_situ_model_speedup = expected_speedup(
            histograms, tuning.model_scale, tuning.model_p_min, costs
        )
    figures.control_speedup = filter_check(monitor, "sample", costs).speedup
    return figures


def effective_speedup(
    costs: str,
    filter_mode: str,
    t_g_ms: float | None,
    t_nn_ms: float | None,
    t_s_ms: float | None,
    pass_rate: float | None,
    retention_kept: float | None,
    status: CampaignStatus,
    retention_unfiltered: float | None,
    sum_weights_squared: float | None = None,
) -> Speedup:
    """The effective speedup of this campaign's filter (see the module docstring).

    ``sum_weights_squared`` (Σw² of the skimmed events, when every job reports it) gives
    ``⟨1/p⟩_pass = Σw²/Σw``; without it Σw/N, a lower bound, makes the figure an upper bound.
    """
    speedup = Speedup(
        costs=costs, t_g_ms=t_g_ms, t_nn_ms=t_nn_ms, t_s_ms=t_s_ms, value=None, ideal=None
    )
    if filter_mode == "off":
        speedup.value, speedup.note = 1.0, "filter off"
        return speedup
    if t_g_ms is None or t_s_ms is None or t_nn_ms is None or pass_rate is None:
        speedup.note = "no successful filtered job yet"
        return speedup
    stage_costs = StageCosts(t_g_ms, t_nn_ms, t_s_ms)
    if retention_unfiltered:
        speedup.ideal = max_speedup(retention_unfiltered, stage_costs)
    if filter_mode == "sample":
        if not status.events_skimmed:
            speedup.note = "no skimmed event yet: <1/p>_pass unknown"
            return speedup
        # Weights are ≥ 1, so Σw² ≥ Σw: anything else is not a usable Σw².
        if (
            sum_weights_squared is not None
            and 0 < status.sum_weights_skimmed <= sum_weights_squared
        ):
            mean_inverse_p = sum_weights_squared / status.sum_weights_skimmed
        else:
            mean_inverse_p = status.sum_weights_skimmed / status.events_skimmed
            speedup.note = (
                "upper bound: <1/p>_pass from sum of weights (some reports carry no sum of w^2)"
            )
        speedup.value = sampling_speedup_from_means(mean_inverse_p, pass_rate, stage_costs)
        return speedup
    if retention_unfiltered is None or retention_kept is None:
        speedup.note = "needs the model's unfiltered skim retention (expected_retention_unfiltered)"
        return speedup
    keep_pass = (
        min(pass_rate * retention_kept / retention_unfiltered, 1.0) if retention_unfiltered else 0.0
    )
    speedup.value = cut_speedup_from_keep(keep_pass, pass_rate, stage_costs)
    return speedup


def _series(
    finished: list[tuple[float, int, str]], start: float | None, end: float
) -> tuple[list[ThroughputPoint], float]:
    if not finished or start is None:
        return [], float(_NICE_BINS_S[0])
    width = bin_width(max(end - start, 1.0))
    n_bins = int((end - start) // width) + 1
    events = [0] * n_bins
    jobs = [0] * n_bins
    for finished_at, n, _site in finished:
        index = min(max(int((finished_at - start) // width), 0), n_bins - 1)
        events[index] += n
        jobs[index] += 1
    points = []
    for i in range(n_bins):
        first = max(0, i - SMOOTH_BINS + 1)
        span = (i - first + 1) * width
        points.append(
            ThroughputPoint(
                start=start + i * width,
                end=start + (i + 1) * width,
                events=events[i],
                jobs=jobs[i],
                events_per_s=events[i] / width,
                jobs_per_h=3600.0 * jobs[i] / width,
                moving_events_per_s=sum(events[first : i + 1]) / span,
                moving_jobs_per_h=3600.0 * sum(jobs[first : i + 1]) / span,
            )
        )
    return points, width


def _cores(spec: dict) -> int:
    # A job using n cores has n x wall seconds of CPU to fill.
    try:
        return max(int(spec.get("resources", {}).get("cores", 1)), 1)
    except (AttributeError, TypeError, ValueError):
        return 1


def _site_figures(site_rows, site_events, attempt_rows, cores: int) -> list[SiteFigures]:
    attempts: dict[str, dict[str, int]] = {}
    for site, state, _code, _cls, count, _last in attempt_rows:
        per_state = attempts.setdefault(site, {})
        per_state[state] = per_state.get(state, 0) + count
    resources = {site: (count, cpu, wall) for site, count, cpu, wall, _first, _last in site_rows}
    figures = []
    for site in sorted(set(attempts) | set(resources)):
        per_state = attempts.get(site, {})
        succeeded, failed = per_state.get(DONE, 0), per_state.get(FAILED, 0)
        _count, cpu, wall = resources.get(site, (0, 0.0, 0.0))
        figures.append(
            SiteFigures(
                site=site,
                attempts=sum(per_state.values()),
                succeeded=succeeded,
                failed=failed,
                failure_rate=failed / (succeeded + failed) if succeeded + failed else None,
                events_generated=int(site_events.get(site) or 0),
                cpu_seconds=float(cpu),
                wall_seconds=float(wall),
                cpu_efficiency=float(cpu) / (float(wall) * cores) if wall else None,
            )
        )
    return figures


def _failures(store: Store, campaign_id: str, rows: CampaignRows, recent: int):
    """Failure matrix (from attempts: reports and lost attempts alike), top reasons with a
    log excerpt from the latest report of that code, and the most recent failures."""
    matrix, reasons = [], {}
    for site, state, exit_code, error_class, count, last in rows.attempt_rows:
        if state != FAILED:
            continue
        code = failure_code(exit_code, error_class)
        matrix.append(
            FailureCell(
                code=code,
                exit_code=exit_code,
                error_class=error_class or "unknown",
                site=site,
                count=count,
            )
        )
        reason = reasons.setdefault(
            code,
            FailureReason(
                code=code,
                exit_code=exit_code,
                error_class=error_class or "unknown",
                description=describe_code(exit_code, error_class),
                count=0,
                sites=[],
                last_seen=None,
                message="",
                log_excerpt=[],
            ),
        )
        reason.count += count
        reason.sites = sorted({*reason.sites, site})
        if last is not None:
            reason.last_seen = max(reason.last_seen or last, last)
    matrix.sort(key=lambda cell: (cell.code, cell.site))
    top = sorted(reasons.values(), key=lambda r: (-r.count, r.code))[:5]
    bodies = latest_failure_bodies(
        store, campaign_id, [(reason.exit_code, reason.error_class) for reason in top]
    )
    for reason, body in zip(top, bodies, strict=True):
        reason.message, reason.log_excerpt = _excerpt(body)
        if body is None:
            reason.message = "no report: the attempt was lost or killed before it could write one"

    entries = [_failure_entry(*row) for row in rows.failed_reports]
    entries += [
        _failure_entry(*row[:6], None, f"no report{f' (engine code {row[6]})' if row[6] else ''}")
        for row in rows.lost_attempts
    ]
    entries.sort(key=lambda entry: -(entry.finished_at or 0.0))
    return matrix, top, entries[:recent]


def _failure_entry(
    job_index: int,
    attempt: int,
    site: str,
    exit_code: int | None,
    error_class: str | None,
    finished_at: float | None,
    body: dict | None,
    message: str = "",
) -> FailureEntry:
    report_message, log_excerpt = _excerpt(body)
    return FailureEntry(
        job_index=job_index,
        attempt=attempt,
        site=site,
        code=failure_code(exit_code, error_class),
        finished_at=finished_at,
        message=report_message or redact(message),
        log_excerpt=log_excerpt,
    )


def all_campaign_figures(
    store: Store, now: float | None = None, **options
) -> list[CampaignFigures]:
    """Figures of every campaign in the store, oldest first."""
    return [
        campaign_figures(store, campaign_id, now=now, **options)
        for campaign_id in store.campaigns.ids()
    ]
