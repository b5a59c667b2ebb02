"""Recovery review on the monitor's web page: recommendations, accept / override, apply.

:func:`review_routes` are the Starlette routes that the monitor's app factory
(:func:`smartbkg_prod.monitor.web.create_app`) includes, given the operators' authenticator
and the page templates; every endpoint calls one function of
:mod:`smartbkg_prod.recovery.review` or :mod:`~smartbkg_prod.recovery.apply` and renders its
result (templates ``recovery/*.html``). Routes:

- campaign page panel ``#recovery`` (:func:`campaign_recommendations`); ``/recovery`` open
  recommendations of every campaign;
- ``/recovery/login`` (token form, opens the session), ``/recovery/logout``;
- forms ``POST /recovery/<id>/accept``, ``/recovery/<id>/override`` (``action``),
  ``/recovery/apply`` and ``/recovery/refresh`` (optional ``campaign_id``), answered by a
  redirect to ``next``;
- JSON ``GET /api/recovery[?status=all&campaign=ID]``, ``GET /api/recovery/<id>`` and the
  same POSTs under ``/api/recovery/...`` with a JSON body, answered in JSON.

Every POST needs an operator; the decision is stored under that operator's name, never
under a name the request claims.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from smartbkg_prod.recovery.actions import ACTIONS
from smartbkg_prod.recovery.apply import apply_decisions
from smartbkg_prod.recovery.records import (
    RecoveryError,
    StoredRecommendation,
    get_recommendation,
    list_recommendations,
    pending_decisions,
)
from smartbkg_prod.recovery.review import accept, override, refresh_recommendations
from smartbkg_prod.redact import redact
from smartbkg_prod.store import OPEN, STATUSES, SUPERSEDED, Store

MAX_ROWS = 200  # per table; the JSON endpoint lists them all


class Auth(Protocol):
    """Operators' credentials (:class:`smartbkg_prod.monitor.operators.Authenticator`);
    refusals are ``HTTPException`` 401 or 403."""

    def login(self, request: Request, token: str) -> str: ...
    def session_operator(self, request: Request) -> str | None: ...
    def authenticate(self, request: Request) -> str: ...


# A state change: (store, operator, form or JSON fields, recommendation id) -> its result.
Change = Callable[[Store, str, dict[str, str], int], object]
CHANGES: dict[str, Change] = {
    "/{id:int}/accept": lambda store, who, fields, id: accept(
        store, id, who, fields.get("comment", "")
    ),
    "/{id:int}/override": lambda store, who, fields, id: override(
        store, id, fields.get("action", ""), who, fields.get("comment", "")
    ),
    "/apply": lambda store, _who, fields, _id: apply_decisions(
        store, fields.get("campaign_id") or None
    ),
    "/refresh": lambda store, _who, fields, _id: refresh_recommendations(
        store, fields.get("campaign_id") or None
    ),
}


def campaign_recommendations(store: Store, campaign_id: str) -> list[StoredRecommendation]:
    """The campaign page's panel: its recommendations, newest first, superseded left out."""
    return [
        r
        for r in list_recommendations(store, campaign_id=campaign_id)[::-1]
        if r.status != SUPERSEDED
    ]


def review_routes(store: Store, auth: Auth, templates: Jinja2Templates) -> list[BaseRoute]:
    """The review's pages, forms and JSON endpoints."""
    templates.env.globals.update(actions=ACTIONS, max_rows=MAX_ROWS)

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        return templates.TemplateResponse(request, f"recovery/{name}", context, status)

    async def run(request: Request, change: Change, fields: dict[str, str] | None = None):
        operator = auth.authenticate(request)  # before a byte of the body is looked at
        fields = _json_fields(await request.body()) if fields is None else fields
        identifier = request.path_params.get("id", 0)
        return await run_in_threadpool(change, store, operator, fields, identifier)

    def form_endpoint(change: Change):
        async def endpoint(request: Request) -> Response:
            fields = {key: str(value) for key, value in (await request.form()).items()}
            back = _local_path(fields.get("next"))
            try:
                await run(request, change, fields)
            except HTTPException as error:
                return page(
                    request, "error.html", error.status_code, message=error.detail, back=back
                )
            except RecoveryError as error:
                return page(request, "error.html", 400, message=redact(str(error)), back=back)
            return RedirectResponse(back, 303)

        return endpoint

    def api_endpoint(change: Change):
        async def endpoint(request: Request) -> Response:
            try:
                result = await run(request, change)
            except HTTPException as error:
                return JSONResponse({"error": error.detail}, error.status_code, error.headers)
            except RecoveryError as error:
                return JSONResponse({"error": redact(str(error))}, 400)
            return JSONResponse(_public(result))

        return endpoint

    def login_form(request: Request, message: str = "", status: int = 200, next_path=None):
        back = _local_path(next_path or request.query_params.get("next"))
        operator = auth.session_operator(request)
        return page(request, "login.html", status, operator=operator, message=message, back=back)

    async def login(request: Request) -> Response:
        fields = await request.form()
        try:
            auth.login(request, str(fields.get("token", "")))
        except HTTPException as error:
            return login_form(request, error.detail, error.status_code, fields.get("next"))
        return RedirectResponse(_local_path(fields.get("next")), 303)

    def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/recovery", 303)

    def overview(request: Request) -> Response:
        return page(
            request,
            "overview.html",
            operator=auth.session_operator(request),
            open=list_recommendations(store, status=OPEN),
            pending=pending_decisions(store),
        )

    def api_list(request: Request) -> Response:
        status = request.query_params.get("status", OPEN)
        if status not in (*STATUSES, "all"):
            allowed = ", ".join(STATUSES)
            return JSONResponse(
                {"error": f"unknown status {status!r} (allowed: all, {allowed})"}, 400
            )
        campaign_id = request.query_params.get("campaign")
        status = None if status == "all" else status
        return JSONResponse(_public(list_recommendations(store, status, campaign_id)))

    def api_show(request: Request) -> Response:
        try:
            return JSONResponse(_public(get_recommendation(store, request.path_params["id"])))
        except RecoveryError as error:
            return JSONResponse({"error": redact(str(error))}, 404)

    routes = [
        Route("/recovery", overview),
        Route("/recovery/login", login_form, methods=["GET"]),
        Route("/recovery/login", login, methods=["POST"]),
        Route("/recovery/logout", logout, methods=["POST"]),
        Route("/api/recovery", api_list),
        Route("/api/recovery/{id:int}", api_show),
    ]
    for path, change in CHANGES.items():
        routes.append(Route(f"/recovery{path}", form_endpoint(change), methods=["POST"]))
        routes.append(Route(f"/api/recovery{path}", api_endpoint(change), methods=["POST"]))
    return routes


def _local_path(path: str | None, default: str = "/recovery") -> str:
    """``path`` if it stays on this server (no open redirect, no header injection)."""
    local = path and path.startswith("/") and not path.startswith("//")
    return path if local and path.isprintable() and "\\" not in path else default


def _json_fields(body: bytes) -> dict[str, str]:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        raise RecoveryError("the request body is not JSON") from None
    if not isinstance(document, dict):
        raise RecoveryError('the request body must be a JSON object, e.g. {"action": "kill"}')
    return {key: str(value) for key, value in document.items() if value is not None}


def _public(result: object) -> object:
    """JSON of library results; recommendations without their bulky feature rows, and
    log lines redacted (reports from foreign or older workers may quote credentials)."""
    if isinstance(result, list):
        return [_public(item) for item in result]
    if isinstance(result, StoredRecommendation):
        document = result.model_dump(mode="json", exclude={"features"})
        record = document["record"]
        record["log_lines"] = [redact(line) for line in record["log_lines"]]
        return document
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result
