"""Plain-text view of campaign figures for ``smartbkg-prod status --watch``, and the
number formats the web page shares.

>>> format_watch([], now=0.0).splitlines()[0]
'smartbkg-prod status  1970-01-01 00:00:00 UTC  (0 campaigns)'
"""

from __future__ import annotations

import time

from smartbkg_prod.monitor.figures import CampaignFigures


def fmt_int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def fmt_rate(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_significant(value: float | None, digits: int = 3) -> str:
    """Small quantities (KL divergences, p-values): ``digits`` significant digits."""
    return "-" if value is None else f"{value:.{digits}g}"


def fmt_percent(value: float | None, error: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f} %" + (f" ± {100 * error:.2f}" if error is not None else "")


def fmt_duration(seconds: float | None) -> str:
    """``1d 3h``, ``2h 05m``, ``4m 09s``, ``12s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def fmt_time(timestamp: float | None) -> str:
    return (
        "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    )


def format_campaign(figures: CampaignFigures) -> str:
    s = figures.status
    states = " ".join(f"{state} {count}" for state, count in s.jobs_by_state.items() if count)
    flags = [
        flag
        for flag, on in (
            ("DRIFT-ALARM", figures.drift.alarm),
            ("BIAS-ALARM", figures.filter_check is not None and figures.filter_check.biased),
            ("STALLED", figures.stalled),
            ("COMPLETE", s.complete),
        )
        if on
    ]
    lines = [
        f"{s.name} ({s.campaign_id}, {s.backend}, filter {figures.filter_mode}) {' '.join(flags)}".rstrip(),
        f"  jobs     {s.jobs_total}: {states or '-'}"
        + (f", held {figures.attempts_held}" if figures.attempts_held else ""),
        f"  events   {s.events_generated:,}/{s.events_requested:,} generated, kept {s.events_kept:,}, "
        f"simulated {s.events_simulated:,}, skimmed {s.events_skimmed:,}",
        f"  rate     {figures.throughput_events_per_s:,.1f} events/s, {figures.throughput_jobs_per_h:,.1f} jobs/h "
        f"(last {fmt_duration(figures.window_s)}), ETA {fmt_duration(figures.eta_seconds)}",
        f"  quality  CPU eff. {fmt_percent(figures.cpu_efficiency)}, pass rate {fmt_percent(figures.filter_pass_rate)}, "
        f"retention {fmt_percent(figures.skim_retention)}, failed attempts {figures.attempts_failed}",
    ]
    check = figures.filter_check
    if check is not None:
        lines.append(
            f"  control  {check.control_events:,} events, {check.control_skimmed:,} skimmed: "
            f"speedup {fmt_rate(check.speedup, 2)}, keep rate pass "
            f"{fmt_percent(check.keep_rate_passing)}, max KL {fmt_significant(check.max_kl, 2)}, "
            f"min p {fmt_significant(check.min_p_value, 2)}{' BIASED' if check.biased else ''}"
        )
    if figures.top_failures:
        top = figures.top_failures[0]
        lines.append(
            f"  top fail {top.code} x{top.count} at {', '.join(top.sites)}: {top.message[:80]}"
        )
    return "\n".join(lines)


def format_watch(figures: list[CampaignFigures], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = f"smartbkg-prod status  {fmt_time(now)}  ({len(figures)} campaigns)"
    return "\n\n".join([header, *(format_campaign(f) for f in figures)])
