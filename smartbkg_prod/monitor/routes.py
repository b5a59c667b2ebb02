"""Routing for the monitor's web server, and the place other modules plug into it.

A route is ``(method, pattern) -> handler(request) -> Response``. Other parts of the
project extend the page without touching :mod:`smartbkg_prod.monitor.web`: a module named
in :data:`EXTENSION_MODULES` that exists defines ``register(router, store)`` and adds its
routes (``router.add("POST", r"/campaign/(?P<campaign_id>[^/]+)/recovery/accept", ...)``)
and campaign-detail panels (``router.add_panel(title, render)`` where
``render(campaign_id) -> str`` returns an HTML fragment, e.g. recovery recommendations with
accept/override forms posting to those routes).

>>> router = Router()
>>> router.add("GET", r"/ping", lambda request: Response(body="pong"))
>>> router.dispatch(Request(method="GET", path="/ping")).body
b'pong'
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

# Modules that add routes and panels when they exist (the recovery review lives there).
EXTENSION_MODULES = ("smartbkg_prod.recovery.web",)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body (HTML forms), first value per key."""
        return {
            key: values[0] for key, values in parse_qs(self.body.decode("utf-8", "replace")).items()
        }


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")


Handler = Callable[[Request], Response]
PanelRenderer = Callable[[str], str]


@dataclass
class Panel:
    title: str
    element_id: str
    render: PanelRenderer


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.panels: list[Panel] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    def add_panel(self, title: str, render: PanelRenderer, element_id: str | None = None) -> None:
        """A section of the campaign detail page rendered by ``render(campaign_id)``."""
        slug = element_id or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        self.panels.append(Panel(title, slug, render))

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed = True
                continue
            request.params = match.groupdict()
            return handler(request)
        if allowed:
            return Response(status=405, body="method not allowed", content_type="text/plain")
        return Response(status=404, body=f"no page {request.path}", content_type="text/plain")


def load_extensions(
    router: Router, store, modules: tuple[str, ...] = EXTENSION_MODULES
) -> list[str]:
    """Let each existing extension module ``register(router, store)``; returns those loaded."""
    loaded = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        module.register(router, store)
        loaded.append(name)
    return loaded
