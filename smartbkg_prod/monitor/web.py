"""The monitor's web app: campaign pages (Jinja2 templates), JSON, ``/metrics`` and the
recovery review, assembled in one Starlette factory (:func:`create_app`), served by uvicorn.

Pages need no JavaScript and load nothing from outside (charts are inline SVG drawn by
matplotlib, styles are inline), so they work on an air-gapped operations network. Routes:

- ``/`` campaign list; ``/campaign/<id or name>`` campaign detail;
- ``/api/campaigns`` and ``/api/campaigns/<id>`` the same figures as JSON;
- ``/metrics`` Prometheus exposition; ``/healthz`` liveness;
- the recovery review of :func:`smartbkg_prod.recovery.web.review_routes`.

>>> # server, thread = start_server(Store("sqlite:///smartbkg-prod.db"), port=8080)
"""

from __future__ import annotations

import secrets
import socket
import threading
import time

import uvicorn
from jinja2 import ChoiceLoader, Environment, PackageLoader
from matplotlib import colormaps
from matplotlib.colors import to_hex
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from smartbkg_prod.errors import SmartBkgError, StoreError
from smartbkg_prod.monitor import charts, text
from smartbkg_prod.monitor.figures import CampaignFigures, all_campaign_figures, campaign_figures
from smartbkg_prod.monitor.metrics import registry_for
from smartbkg_prod.monitor.operators import Authenticator, Operators, OperatorSessions
from smartbkg_prod.recovery.web import campaign_recommendations, review_routes
from smartbkg_prod.redact import redact
from smartbkg_prod.store import JOB_STATES, Store

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080


def templates() -> Jinja2Templates:
    """The monitor's and the recovery review's templates, escaping every value."""
    loader = ChoiceLoader(
        [PackageLoader("smartbkg_prod.monitor"), PackageLoader("smartbkg_prod.recovery")]
    )
    env = Environment(loader=loader, autoescape=True, trim_blocks=True)
    formats = ("fmt_int", "fmt_rate", "fmt_significant", "fmt_percent", "fmt_duration", "fmt_time")
    env.filters.update({name: getattr(text, name) for name in formats}, redact=redact)
    env.filters["heat"] = lambda share: (
        to_hex(colormaps["Reds"](0.1 + 0.8 * share)) if share else "#f5f5f5"
    )
    return Jinja2Templates(env=env)


def _charts(figures: CampaignFigures) -> dict[str, str]:
    def over_time(element_id: str, rate: str, unit: str) -> str:
        per_bin = [getattr(point, rate) for point in figures.series]
        moving = [getattr(point, f"moving_{rate}") for point in figures.series]
        starts = [point.start for point in figures.series]
        return charts.throughput_chart(
            element_id, starts, figures.bin_seconds, per_bin, moving, unit
        )

    states = {state: figures.status.jobs_by_state.get(state, 0) for state in JOB_STATES}
    if figures.attempts_held:
        states["held"] = figures.attempts_held
    check = figures.filter_check
    return {
        "events": over_time("throughput-events", "events_per_s", "events/s"),
        "jobs": over_time("throughput-jobs", "jobs_per_h", "jobs/h"),
        "states": charts.bar_chart("job-states", states),
        "bias": charts.distribution_charts(check.variables) if check else "",
    }


def _matrix(figures: CampaignFigures) -> dict:
    counts = {(cell.code, cell.site): cell.count for cell in figures.failure_matrix}
    return {
        "codes": sorted({code for code, _site in counts}),
        "sites": sorted({site for _code, site in counts}),
        "counts": counts,
        "peak": max(counts.values(), default=0),
    }


def create_app(store: Store, operators: Operators | None = None) -> Starlette:
    """The whole web app over ``store``; ``operators`` (default: ``$SMARTBKG_OPERATORS_FILE``)
    may change state through the recovery review."""
    auth = Authenticator(Operators.from_env() if operators is None else operators)
    pages = templates()
    registry = registry_for(store)

    def figures_of(request: Request) -> CampaignFigures:
        campaign_id = request.path_params["campaign_id"]
        if store.campaigns.get(campaign_id) is None:
            matches = store.campaigns.find(campaign_id)
            if not matches:
                raise StoreError(f"no campaign {campaign_id!r}")
            campaign_id = matches[-1]
        return campaign_figures(store, campaign_id)

    def campaign_list(request: Request) -> Response:
        campaigns = all_campaign_figures(store)
        return pages.TemplateResponse(request, "campaigns.html", {"campaigns": campaigns})

    def campaign_detail(request: Request) -> Response:
        figures = figures_of(request)
        context = {
            "f": figures,
            "charts": _charts(figures),
            "matrix": _matrix(figures),
            "recommendations": campaign_recommendations(store, figures.status.campaign_id),
        }
        return pages.TemplateResponse(request, "campaign.html", context)

    def api_campaigns(_request: Request) -> Response:
        exclude = {"series", "recent_failures", "failure_matrix"}
        figures = all_campaign_figures(store)
        return JSONResponse([f.model_dump(mode="json", exclude=exclude) for f in figures])

    def not_found(_request: Request, error: Exception) -> Response:
        return PlainTextResponse(str(error), 404)

    routes = [
        Route("/", campaign_list),
        Route("/campaign/{campaign_id}", campaign_detail),
        Route("/api/campaigns", api_campaigns),
        Route(
            "/api/campaigns/{campaign_id}",
            lambda request: JSONResponse(figures_of(request).model_dump(mode="json")),
        ),
        Route(
            "/metrics",
            lambda _r: Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST),
        ),
        Route("/healthz", lambda _request: PlainTextResponse("ok")),
        *review_routes(store, auth, pages),
    ]
    # A session lasts one shift; its key is made here, so a restart logs everyone out.
    session = Middleware(OperatorSessions, secret_key=secrets.token_urlsafe(32))
    return Starlette(
        routes=routes, middleware=[session], exception_handlers={StoreError: not_found}
    )


class ServeError(SmartBkgError):
    """The address to serve on cannot be bound (busy port, unknown host, no permission)."""


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or one clear ServeError."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise ServeError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        hint = " (choose another --port)" if error.errno == 98 else ""
        raise ServeError(f"cannot serve on {host}:{port}: {error.strerror}{hint}") from None
    return sock


def uvicorn_server(store: Store, operators: Operators | None = None) -> uvicorn.Server:
    """uvicorn serving :func:`create_app` (``.run(sockets=[bind(...)])``)."""
    config = uvicorn.Config(create_app(store, operators), log_config=None, access_log=False)
    return uvicorn.Server(config)


class BackgroundServer:
    """A served app in a thread (tests, benchmarks); ``shutdown()`` stops it."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket):
        self.server = server
        self.server_address = sock.getsockname()[:2]

    def shutdown(self) -> None:
        self.server.should_exit = True


def start_server(
    store: Store, host: str = DEFAULT_HOST, port: int = 0
) -> tuple[BackgroundServer, threading.Thread]:
    """Serve in a background thread, once it accepts connections."""
    sock = bind(host, port)
    server = uvicorn_server(store)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="smartbkg-monitor", daemon=True
    )
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    return BackgroundServer(server, sock), thread
