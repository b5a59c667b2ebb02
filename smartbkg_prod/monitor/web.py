"""The monitor's web server: server-rendered HTML pages, JSON endpoints and ``/metrics``.

Pages need no JavaScript and load nothing from outside (plots are inline SVG, styles are
inline), so they work on an air-gapped operations network. Routes:

- ``/`` campaign list; ``/campaign/<id>`` campaign detail;
- ``/api/campaigns`` and ``/api/campaigns/<id>`` the same figures as JSON;
- ``/metrics`` Prometheus exposition; ``/healthz`` liveness.

Other modules add routes and detail-page panels through :mod:`smartbkg_prod.monitor.routes`.

>>> # server, thread = start_server(Store("sqlite:///smartbkg-prod.db"), port=8080)
"""

from __future__ import annotations

import json
import logging
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from smartbkg_prod.errors import StoreError
from smartbkg_prod.monitor import svg
from smartbkg_prod.monitor.figures import CampaignFigures, all_campaign_figures, campaign_figures
from smartbkg_prod.monitor.metrics import registry_for
from smartbkg_prod.monitor.routes import Request, Response, Router, load_extensions
from smartbkg_prod.monitor.text import (
    fmt_duration,
    fmt_int,
    fmt_percent,
    fmt_rate,
    fmt_significant,
    fmt_time,
)
from smartbkg_prod.store import JOB_STATES, Store

log = logging.getLogger("smartbkg_prod.monitor.web")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
REFRESH_S = 30

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fff}
header{background:#0f172a;color:#fff;padding:10px 20px}header a{color:#fff;text-decoration:none}
main{padding:16px 20px}h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px}th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f8fafc}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #e5e7eb;border-radius:6px;padding:6px 10px;min-width:120px}
.card .v{font-size:18px;font-weight:600}.card .k{font-size:11px;color:#555}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.charts{display:flex;flex-wrap:wrap;gap:8px}
.alarm{background:#fee2e2;border:1px solid #dc2626;color:#7f1d1d;padding:8px 12px;border-radius:6px;margin:8px 0}
.ok{background:#dcfce7;border:1px solid #16a34a;color:#14532d;padding:8px 12px;border-radius:6px;margin:8px 0}
.muted{color:#666}.badge{display:inline-block;padding:1px 6px;border-radius:8px;font-size:11px;color:#fff}
.b-alarm{background:#dc2626}.b-stalled{background:#f59e0b}.b-complete{background:#16a34a}
pre{background:#f8fafc;border:1px solid #e5e7eb;padding:4px 6px;margin:2px 0;font-size:11px;white-space:pre-wrap;max-width:760px}
.progress{background:#e5e7eb;width:120px;height:10px;border-radius:5px;overflow:hidden;display:inline-block}
.progress span{display:block;height:10px;background:#16a34a}
"""


def html_page(title: str, body: str, refresh: bool = True) -> str:
    """A whole page in the monitor's frame (``refresh``: reload every REFRESH_S seconds)."""
    reload = f"<meta http-equiv='refresh' content='{REFRESH_S}'>" if refresh else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"{reload}<title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><header><a href='/'>smartbkg-prod monitor</a></header>"
        f"<main>{body}</main></body></html>"
    )


def _card(key: str, value: str, element_id: str = "") -> str:
    attribute = f" id='{escape(element_id)}'" if element_id else ""
    return f"<div class='card'{attribute}><div class='v'>{escape(value)}</div><div class='k'>{escape(key)}</div></div>"


def _badges(figures: CampaignFigures) -> str:
    badges = []
    if figures.drift.alarm:
        badges.append("<span class='badge b-alarm'>drift alarm</span>")
    if figures.stalled:
        badges.append("<span class='badge b-stalled'>stalled</span>")
    if figures.status.complete:
        badges.append("<span class='badge b-complete'>complete</span>")
    return " ".join(badges)


# -- pages -----------------------------------------------------------------------------
def campaign_list_html(figures: list[CampaignFigures]) -> str:
    rows = []
    for f in figures:
        s = f.status
        done = s.jobs_by_state.get("done", 0)
        share = 100 * done / s.jobs_total if s.jobs_total else 0
        rows.append(
            f"<tr class='campaign' data-campaign='{escape(s.campaign_id)}'>"
            f"<td><a href='/campaign/{quote(s.campaign_id)}'>{escape(s.name)}</a><br>"
            f"<span class='muted'>{escape(s.campaign_id)}</span></td>"
            f"<td>{escape(s.backend)}</td><td>{escape(f.filter_mode)}</td>"
            f"<td><span class='progress'><span style='width:{share:.0f}%'></span></span> "
            f"{done}/{s.jobs_total}</td>"
            f"<td class='n'>{fmt_int(s.events_generated)} / {fmt_int(s.events_requested)}</td>"
            f"<td class='n'>{fmt_rate(f.throughput_events_per_s)}</td>"
            f"<td class='n'>{fmt_duration(f.eta_seconds)}</td>"
            f"<td class='n'>{f.attempts_failed}</td>"
            f"<td class='n'>{fmt_percent(f.cpu_efficiency)}</td>"
            f"<td>{_badges(f)}</td></tr>"
        )
    table = (
        "<table id='campaigns'><thead><tr><th>campaign</th><th>backend</th><th>filter</th>"
        "<th>jobs done</th><th>events generated / requested</th><th>events/s</th><th>ETA</th>"
        "<th>failed attempts</th><th>CPU eff.</th><th></th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else "<p id='campaigns' class='muted'>No campaign in this database yet.</p>"
    )
    return html_page("campaigns", f"<h1>Campaigns</h1>{table}")


def _drift_html(figures: CampaignFigures) -> str:
    drift = figures.drift
    if not drift.checks:
        return f"<div id='drift' class='muted'>Filter drift: {escape(drift.note or 'not checked')}</div>"
    lines = []
    for check in drift.checks:
        z = "-" if check.z is None else f"{check.z:+.1f}"
        lines.append(
            f"<li data-quantity='{escape(check.quantity)}'>{escape(check.quantity.replace('_', ' '))}: "
            f"observed {fmt_percent(check.observed)} ({check.successes:,}/{check.trials:,}) vs expected "
            f"{fmt_percent(check.expected)}, z = {z}, p = {fmt_significant(check.p_value, 2)}"
            f"{' — <b>ALARM</b>' if check.alarm else ''}</li>"
        )
    css = "alarm" if drift.alarm else "ok"
    title = "Filter drift alarm" if drift.alarm else "Filter consistent with its model"
    source = drift.expectation.source if drift.expectation else ""
    return (
        f"<div id='drift' class='{css}'><b>{title}</b> "
        f"<span class='muted'>(binomial test, alarm below p = {drift.alpha:g}; expectation from "
        f"{escape(source)})</span><ul>{''.join(lines)}</ul></div>"
    )


def _filter_check_html(figures: CampaignFigures) -> str:
    """The control sample's verdict: keep rates, in-situ speedup, bias per variable."""
    check = figures.filter_check
    if check is None:
        return (
            "<section id='filter-check'><h2>Filter bias (control sample)</h2><p class='muted'>"
            "No control sample: set filter.control_fraction to check the filter's bias and "
            "speedup on unfiltered events.</p></section>"
        )

    rows = "".join(
        f"<tr data-variable='{escape(v.variable)}'><td>{escape(v.variable)}</td>"
        f"<td class='n'>{v.control_events:,}</td><td class='n'>{fmt_significant(v.kl_divergence)}</td>"
        f"<td class='n'>{fmt_significant(v.kl_sampling_noise)}</td>"
        f"<td class='n'>{v.chi2:.1f}/{v.ndf}</td><td class='n'>{v.p_value:.3g}</td></tr>"
        for v in check.variables
    )
    charts = "".join(
        svg.distribution_chart(
            f"bias-{v.variable}", v.edges, v.control_estimate, v.weighted_estimate, v.variable
        )
        for v in check.variables
    )
    verdict = (
        "<b>Filter bias: ALARM</b>"
        if check.biased
        else f"<b>Too few control events to judge</b> ({escape(check.note)})"
        if check.note
        else "<b>Filter consistent with no bias</b>"
    )
    pull = "-" if check.normalization_pull is None else f"{check.normalization_pull:+.2f}"
    return (
        f"<section id='filter-check' class='{'alarm' if check.biased else 'muted' if check.note else 'ok'}'>"
        f"<h2>Filter bias (control sample)</h2><p>{verdict} <span class='muted'>(χ² tests, "
        f"alarm below p = {check.alpha:g} / tests; KL shown beside its sampling-noise level, "
        f"SmartBKG's absolute KL < {check.kl_reference:g} retired)</span></p>"
        f"<p>control fraction {check.control_fraction:g}: {check.control_events:,} events, "
        f"{check.control_skimmed:,} skimmed (retention {fmt_percent(check.retention)}); keep "
        f"rate of passing events {fmt_percent(check.keep_rate_passing)}, of failing "
        f"{fmt_percent(check.keep_rate_failing)}; ⟨p⟩ {fmt_significant(check.mean_keep_probability)}, "
        f"⟨1/p⟩<sub>pass</sub> {fmt_significant(check.mean_inverse_p_passing)}; "
        f"<span id='control-speedup'>speedup {fmt_rate(check.speedup, 2)} of "
        f"S<sub>max</sub> {fmt_rate(check.max_speedup, 2)}</span> at reference costs; "
        f"skimmed events estimated from the filtered sample {check.weighted_estimate:,.1f}, "
        f"from the control sample {check.control_estimate:,.1f} (pull {pull})</p>"
        f"<table id='bias'><thead><tr><th>variable</th><th>control events</th><th>KL</th>"
        f"<th>KL noise</th><th>χ²/ndf</th><th>p</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<p class='muted'>grey: control sample, blue: filter-kept events that are not control "
        f"events, weighted 1/p (both normalised)</p><div class='charts'>{charts}</div></section>"
    )


def _failures_html(figures: CampaignFigures) -> str:
    top = "".join(
        f"<tr><td>{escape(r.code)}</td><td>{escape(r.description)}</td><td class='n'>{r.count}</td>"
        f"<td>{escape(', '.join(r.sites))}</td><td>{escape(r.message)}"
        f"{'<pre>' + escape(chr(10).join(r.log_excerpt)) + '</pre>' if r.log_excerpt else ''}</td></tr>"
        for r in figures.top_failures
    )
    recent = "".join(
        f"<tr class='failure'><td>{fmt_time(e.finished_at)}</td><td class='n'>{e.job_index}</td>"
        f"<td class='n'>{e.attempt}</td><td>{escape(e.site)}</td><td>{escape(e.code)}</td>"
        f"<td>{escape(e.message)}"
        f"{'<pre>' + escape(chr(10).join(e.log_excerpt)) + '</pre>' if e.log_excerpt else ''}</td></tr>"
        for e in figures.recent_failures
    )
    top_table = (
        "<table id='top-failures'><thead><tr><th>code</th><th>meaning</th><th>attempts</th><th>sites</th>"
        f"<th>latest message and log</th></tr></thead><tbody>{top}</tbody></table>"
        if top
        else "<p id='top-failures' class='muted'>No failure.</p>"
    )
    recent_table = (
        "<table id='recent-failures'><thead><tr><th>finished</th><th>job</th><th>attempt</th><th>site</th>"
        f"<th>code</th><th>message and log excerpt</th></tr></thead><tbody>{recent}</tbody></table>"
        if recent
        else "<p id='recent-failures' class='muted'>No failure.</p>"
    )
    return f"<h2>Top failure reasons</h2>{top_table}<h2>Recent failures</h2>{recent_table}"


def _sites_html(figures: CampaignFigures) -> str:
    rows = "".join(
        f"<tr><td>{escape(s.site)}</td><td class='n'>{s.attempts}</td><td class='n'>{s.succeeded}</td>"
        f"<td class='n'>{s.failed}</td><td class='n'>{fmt_percent(s.failure_rate)}</td>"
        f"<td class='n'>{fmt_int(s.events_generated)}</td><td class='n'>{fmt_percent(s.cpu_efficiency)}</td></tr>"
        for s in figures.sites
    )
    return (
        "<table id='sites'><thead><tr><th>site</th><th>attempts</th><th>succeeded</th><th>failed</th>"
        f"<th>failure rate</th><th>events generated</th><th>CPU eff.</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def campaign_detail_html(figures: CampaignFigures, router: Router | None = None) -> str:
    s = figures.status
    states = {state: s.jobs_by_state.get(state, 0) for state in JOB_STATES}
    if figures.attempts_held:
        states["held"] = figures.attempts_held
    codes = sorted({cell.code for cell in figures.failure_matrix})
    sites = sorted({cell.site for cell in figures.failure_matrix})
    matrix = svg.heatmap(
        "failure-matrix",
        codes,
        sites,
        {(cell.code, cell.site): cell.count for cell in figures.failure_matrix},
    )
    starts = [point.start for point in figures.series]
    events_chart = svg.throughput_chart(
        "throughput-events",
        starts,
        figures.bin_seconds,
        [p.events_per_s for p in figures.series],
        [p.moving_events_per_s for p in figures.series],
        "events/s",
    )
    jobs_chart = svg.throughput_chart(
        "throughput-jobs",
        starts,
        figures.bin_seconds,
        [p.jobs_per_h for p in figures.series],
        [p.moving_jobs_per_h for p in figures.series],
        "jobs/h",
        width=420,
    )
    speedups = "".join(
        f"<tr><td>{escape(sp.costs)}</td><td class='n'>{fmt_rate(sp.t_g_ms, 3)}</td>"
        f"<td class='n'>{fmt_rate(sp.t_nn_ms, 3)}</td><td class='n'>{fmt_rate(sp.t_s_ms, 2)}</td>"
        f"<td class='n'>{fmt_rate(sp.value, 2)}</td><td class='n'>{fmt_rate(sp.ideal, 2)}</td>"
        f"<td class='muted'>{escape(sp.note)}</td></tr>"
        for sp in figures.speedups
    )
    cards = "".join(
        [
            _card("events requested", fmt_int(s.events_requested), "events-requested"),
            _card("generated", fmt_int(s.events_generated), "events-generated"),
            _card("kept by filter", fmt_int(s.events_kept), "events-kept"),
            _card("simulated", fmt_int(s.events_simulated), "events-simulated"),
            _card("skimmed", fmt_int(s.events_skimmed), "events-skimmed"),
            _card(
                f"events/s (last {fmt_duration(figures.window_s)})",
                fmt_rate(figures.throughput_events_per_s),
                "throughput",
            ),
            _card("jobs/h", fmt_rate(figures.throughput_jobs_per_h), "jobs-per-hour"),
            _card("ETA", fmt_duration(figures.eta_seconds), "eta"),
            _card("CPU efficiency", fmt_percent(figures.cpu_efficiency), "cpu-efficiency"),
            _card("filter pass rate", fmt_percent(figures.filter_pass_rate), "pass-rate"),
            _card(
                "skim retention",
                fmt_percent(figures.skim_retention, figures.skim_retention_error),
                "retention",
            ),
            _card("failed attempts", fmt_int(figures.attempts_failed), "failed-attempts"),
        ]
    )
    panels = router.panels if router else []
    recovery = "".join(
        f"<section id='{escape(panel.element_id)}'><h2>{escape(panel.title)}</h2>{panel.render(s.campaign_id)}</section>"
        for panel in panels
    ) or (
        "<section id='recovery'><h2>Recovery</h2><p class='muted'>Recovery recommendations "
        "(accept / override) appear here when the recovery module registers its panel.</p></section>"
    )
    body = (
        f"<h1 id='campaign-name'>{escape(s.name)} {_badges(figures)}</h1>"
        f"<p class='muted'>{escape(s.campaign_id)} · backend {escape(s.backend)} · filter "
        f"{escape(figures.filter_mode)} · {s.jobs_total} jobs · last report {fmt_time(figures.last_report_at)} · "
        f"<a href='/api/campaigns/{quote(s.campaign_id)}'>JSON</a></p>"
        f"{_drift_html(figures)}<div class='cards'>{cards}</div>"
        f"<div class='row'><div><h2>Throughput over time</h2>{events_chart}</div>"
        f"<div><h2>Jobs per hour</h2>{jobs_chart}</div></div>"
        f"<div class='row'><div><h2>Jobs by state</h2>{svg.bar_chart('job-states', states)}</div>"
        f"<div><h2>Failure matrix (exit/error code × site)</h2>{matrix}</div></div>"
        f"<h2>Effective filter speedup</h2><table id='speedup'><thead><tr><th>costs</th><th>t_g ms</th>"
        f"<th>t_NN ms</th><th>t_s ms</th><th>S</th><th>S_max</th><th></th></tr></thead><tbody>{speedups}</tbody></table>"
        f"{_filter_check_html(figures) if figures.filter_mode != 'off' else ''}{_failures_html(figures)}<h2>Sites</h2>{_sites_html(figures)}{recovery}"
    )
    return html_page(s.name, body)


# -- the application -------------------------------------------------------------------
class MonitorApp:
    """Routes requests to pages; usable without a socket (``app.handle(request)``)."""

    def __init__(self, store: Store, load_plugins: bool = True):
        self.store = store
        self.registry = registry_for(store)
        self.router = Router()
        self.router.add("GET", r"/", self.campaign_list)
        self.router.add("GET", r"/campaign/(?P<campaign_id>[^/]+)", self.campaign_detail)
        self.router.add("GET", r"/api/campaigns", self.api_campaigns)
        self.router.add("GET", r"/api/campaigns/(?P<campaign_id>[^/]+)", self.api_campaign)
        self.router.add("GET", r"/metrics", self.metrics)
        self.router.add(
            "GET", r"/healthz", lambda _request: Response(body="ok", content_type="text/plain")
        )
        if load_plugins:
            load_extensions(self.router, store)

    def handle(self, request: Request) -> Response:
        try:
            return self.router.dispatch(request)
        except StoreError as error:
            return Response(status=404, body=str(error), content_type="text/plain")

    def _figures(self, request: Request) -> CampaignFigures:
        campaign_id = unquote(request.params["campaign_id"])
        if self.store.campaign(campaign_id) is None:
            matches = self.store.find_campaigns(campaign_id)
            if not matches:
                raise StoreError(f"no campaign {campaign_id!r}")
            campaign_id = matches[-1]
        return campaign_figures(self.store, campaign_id)

    def campaign_list(self, _request: Request) -> Response:
        return Response(body=campaign_list_html(all_campaign_figures(self.store)))

    def campaign_detail(self, request: Request) -> Response:
        return Response(body=campaign_detail_html(self._figures(request), self.router))

    def api_campaigns(self, _request: Request) -> Response:
        summaries = [
            figures.model_dump(mode="json", exclude={"series", "recent_failures", "failure_matrix"})
            for figures in all_campaign_figures(self.store)
        ]
        return json_response(summaries)

    def api_campaign(self, request: Request) -> Response:
        return json_response(self._figures(request).model_dump(mode="json"))

    def metrics(self, _request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(body=generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)


def json_response(
    document: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        status=status,
        body=json.dumps(document, indent=1),
        content_type="application/json",
        headers=headers or {},
    )


def _handler_class(app: MonitorApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "smartbkg-prod-monitor"

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method="GET" if method == "HEAD" else method,
                path=url.path,
                query=parse_qs(url.query),
                body=self.rfile.read(length) if length else b"",
                headers={key.lower(): value for key, value in self.headers.items()},
            )
            try:
                response = app.handle(request)
            except Exception:  # noqa: BLE001 - one bad page must not kill the server
                log.exception("error serving %s", self.path)
                response = Response(
                    status=500,
                    body="internal error (see the server log)",
                    content_type="text/plain",
                )
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(response.body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def make_server(
    store: Store, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> ThreadingHTTPServer:
    """A threading HTTP server for the monitor (port 0 picks a free port)."""
    server = ThreadingHTTPServer((host, port), _handler_class(MonitorApp(store)))
    server.daemon_threads = True
    return server


def start_server(
    store: Store, host: str = DEFAULT_HOST, port: int = 0
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve in a background thread (tests, benchmarks); stop with ``server.shutdown()``."""
    server = make_server(store, host, port)
    thread = threading.Thread(target=server.serve_forever, name="smartbkg-monitor", daemon=True)
    thread.start()
    return server, thread
