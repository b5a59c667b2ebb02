"""Recovery review on the monitor's web page: recommendations, accept / override, apply.

Registered by the monitor through :func:`smartbkg_prod.monitor.routes.load_extensions`.
Every handler calls one function of :mod:`smartbkg_prod.recovery.review` or
:mod:`~smartbkg_prod.recovery.apply` and formats its result. Routes:

- campaign page panel ``#recovery``; ``/recovery`` open recommendations of every campaign;
- ``/recovery/login`` (token form, sets the session cookie), ``/recovery/logout``;
- forms ``POST /recovery/<id>/accept``, ``/recovery/<id>/override`` (``action``),
  ``/recovery/apply`` and ``/recovery/refresh`` (optional ``campaign_id``), answered by a
  redirect to ``next``;
- JSON ``GET /api/recovery[?status=all&campaign=ID]``, ``GET /api/recovery/<id>`` and the
  same POSTs under ``/api/recovery/...`` with a JSON body, answered in JSON.

Every POST needs an operator (:mod:`smartbkg_prod.monitor.operators`); the decision is
stored under that operator's name, never under a name the request claims.

>>> from smartbkg_prod.monitor.routes import Router
>>> from smartbkg_prod.store import Store
>>> router = Router()
>>> register(router, Store("sqlite://"))
>>> [panel.element_id for panel in router.panels]
['recovery']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from smartbkg_prod.monitor.operators import (
    SESSION_COOKIE,
    Authenticator,
    AuthError,
    Operators,
    require_same_origin,
)
from smartbkg_prod.monitor.routes import Request, Response, Router
from smartbkg_prod.monitor.text import fmt_time
from smartbkg_prod.monitor.web import html_page, json_response
from smartbkg_prod.recovery.actions import ACTIONS
from smartbkg_prod.recovery.apply import apply_decisions
from smartbkg_prod.recovery.records import (
    OPEN,
    STATUSES,
    SUPERSEDED,
    RecoveryError,
    StoredRecommendation,
    get_recommendation,
    list_recommendations,
    pending_decisions,
)
from smartbkg_prod.recovery.review import accept, override, refresh_recommendations
from smartbkg_prod.redact import redact
from smartbkg_prod.store import Store

MAX_ROWS = 200  # per table; the JSON endpoint lists them all

# A state change: (store, operator, form or JSON fields, URL params) -> what to report.
Change = Callable[[Store, str, dict[str, str], dict[str, str]], object]


def _accept(store: Store, operator: str, fields: dict[str, str], params: dict[str, str]):
    return accept(store, int(params["id"]), operator, fields.get("comment", ""))


def _override(store: Store, operator: str, fields: dict[str, str], params: dict[str, str]):
    action = fields.get("action", "")
    return override(store, int(params["id"]), action, operator, fields.get("comment", ""))


def _apply(store: Store, _operator: str, fields: dict[str, str], _params: dict[str, str]):
    return apply_decisions(store, fields.get("campaign_id") or None)


def _refresh(store: Store, _operator: str, fields: dict[str, str], _params: dict[str, str]):
    return refresh_recommendations(store, fields.get("campaign_id") or None)


CHANGES: dict[str, tuple[str, Change]] = {
    "accept": (r"/(?P<id>\d{1,12})/accept", _accept),
    "override": (r"/(?P<id>\d{1,12})/override", _override),
    "apply": (r"/apply", _apply),
    "refresh": (r"/refresh", _refresh),
}


def register(router: Router, store: Store) -> None:
    """Add the recovery panel, pages and endpoints (operators from the environment)."""
    RecoveryWeb(store, Authenticator(Operators.from_env())).register(router)


class RecoveryWeb:
    def __init__(self, store: Store, auth: Authenticator):
        self.store = store
        self.auth = auth

    def register(self, router: Router) -> None:
        router.add_panel("Recovery", self.campaign_panel, element_id="recovery")
        router.add("GET", r"/recovery", self.overview)
        router.add("GET", r"/recovery/login", self.login_form)
        router.add("POST", r"/recovery/login", self.login)
        router.add("POST", r"/recovery/logout", self.logout)
        router.add("GET", r"/api/recovery", self.api_list)
        router.add("GET", r"/api/recovery/(?P<id>\d{1,12})", self.api_show)
        for pattern, change in CHANGES.values():
            router.add("POST", f"/recovery{pattern}", self._form_handler(change))
            router.add("POST", f"/api/recovery{pattern}", self._api_handler(change))

    # -- state changes ------------------------------------------------------------------
    def _form_handler(self, change: Change) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            fields = request.form()
            back = _local_path(fields.get("next"))
            try:
                operator = self.auth.authenticate(request)
                change(self.store, operator, fields, request.params)
            except AuthError as error:
                return _error_page(error.status, str(error), back)
            except RecoveryError as error:
                return _error_page(400, redact(str(error)), back)
            return Response(status=303, headers={"Location": back})

        return handle

    def _api_handler(self, change: Change) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            try:
                operator = self.auth.authenticate(request)
                result = change(self.store, operator, _json_fields(request), request.params)
            except AuthError as error:
                headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
                return json_response({"error": str(error)}, error.status, headers)
            except RecoveryError as error:
                return json_response({"error": redact(str(error))}, 400)
            return json_response(_public(result))

        return handle

    # -- login ----------------------------------------------------------------------------
    def login_form(self, request: Request, message: str = "", status: int = 200) -> Response:
        back = _local_path(request.query.get("next", [""])[0] or request.form().get("next"))
        operator = self.auth.session_operator(request)
        who = f"<p id='operator'>Logged in as <b>{escape(operator)}</b>.</p>" if operator else ""
        alarm = f"<p class='alarm' id='recovery-error'>{escape(message)}</p>" if message else ""
        body = (
            f"<h1>Operator login</h1>{who}{alarm}"
            "<form method='post' action='/recovery/login' id='login'>"
            f"<input type='hidden' name='next' value='{escape(back)}'>"
            "<label>Token <input type='password' name='token' autocomplete='current-password' "
            "required></label> <button>Log in</button></form>"
            "<p class='muted'>Accept, override and apply are recorded under the operator "
            "whose token this is.</p>"
        )
        return Response(status=status, body=html_page("operator login", body, refresh=False))

    def login(self, request: Request) -> Response:
        fields = request.form()
        try:
            require_same_origin(request)
            _operator, cookie = self.auth.login(fields.get("token", ""))
        except AuthError as error:
            return self.login_form(request, str(error), error.status)
        location = _local_path(fields.get("next"))
        return Response(status=303, headers={"Location": location, "Set-Cookie": cookie})

    def logout(self, _request: Request) -> Response:
        cookie = f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        return Response(status=303, headers={"Location": "/recovery", "Set-Cookie": cookie})

    # -- pages ------------------------------------------------------------------------------
    def campaign_panel(self, campaign_id: str) -> str:
        recommendations = [
            r
            for r in list_recommendations(self.store, campaign_id=campaign_id)
            if r.status != SUPERSEDED
        ]
        here = f"/campaign/{quote(campaign_id, safe='')}"
        return (
            _login_hint(here)
            + _table("recovery-recommendations", recommendations[::-1], here)
            + _buttons(here, campaign_id)
        )

    def overview(self, request: Request) -> Response:
        operator = self.auth.session_operator(request)
        who = (
            f"<p id='operator'>Logged in as <b>{escape(operator)}</b> · "
            "<form method='post' action='/recovery/logout' style='display:inline'>"
            "<button>Log out</button></form></p>"
            if operator
            else _login_hint("/recovery")
        )
        body = (
            f"<h1>Recovery</h1>{who}<h2>Open recommendations</h2>"
            + _table(
                "open-recommendations",
                list_recommendations(self.store, status=OPEN),
                "/recovery",
                with_campaign=True,
            )
            + "<h2>Decided, not applied yet</h2>"
            + _table(
                "pending-decisions", pending_decisions(self.store), "/recovery", with_campaign=True
            )
            + _buttons("/recovery")
        )
        return Response(body=html_page("recovery", body))

    # -- JSON -------------------------------------------------------------------------------
    def api_list(self, request: Request) -> Response:
        status = request.query.get("status", [OPEN])[0]
        if status not in (*STATUSES, "all"):
            return json_response(
                {"error": f"unknown status {status!r} (allowed: all, {', '.join(STATUSES)})"}, 400
            )
        recommendations = list_recommendations(
            self.store,
            status=None if status == "all" else status,
            campaign_id=request.query.get("campaign", [None])[0],
        )
        return json_response(_public(recommendations))

    def api_show(self, request: Request) -> Response:
        try:
            return json_response(_public(get_recommendation(self.store, int(request.params["id"]))))
        except RecoveryError as error:
            return json_response({"error": redact(str(error))}, 404)


# -- HTML fragments -------------------------------------------------------------------------
def _login_hint(here: str) -> str:
    login = f"/recovery/login?{urlencode({'next': here})}"
    return (
        "<p class='muted'>Accept, override and apply need an operator: "
        f"<a id='login-link' href='{escape(login)}'>log in</a> · "
        "<a href='/recovery'>all open recommendations</a></p>"
    )


def _hidden(name: str, value: str) -> str:
    return f"<input type='hidden' name='{name}' value='{escape(value)}'>"


def _decision_html(recommendation: StoredRecommendation) -> str:
    decision = recommendation.decision
    if decision is None:
        return ""
    text = (
        f"{decision.kind} → {decision.action.value} by <b class='operator'>"
        f"{escape(decision.operator)}</b> at {fmt_time(decision.decided_at)}"
    )
    if decision.comment:
        text += f"<br><span class='muted'>{escape(redact(decision.comment))}</span>"
    if decision.applied_at is not None:
        text += f"<br>{fmt_time(decision.applied_at)}: {escape(decision.outcome)}"
    return text


def _review_forms(recommendation: StoredRecommendation, here: str) -> str:
    if recommendation.status != OPEN:
        return ""
    base = f"/recovery/{recommendation.id}"
    options = "".join(
        f"<option value='{action}'{' selected' if action == recommendation.action.value else ''}>"
        f"{action}</option>"
        for action in ACTIONS
    )
    return (
        f"<form method='post' action='{base}/accept' class='accept'>{_hidden('next', here)}"
        "<button>Accept</button></form>"
        f"<form method='post' action='{base}/override' class='override'>{_hidden('next', here)}"
        f"<select name='action'>{options}</select> "
        "<input name='comment' placeholder='comment' size='12'> <button>Override</button></form>"
    )


def _table(
    element_id: str,
    recommendations: list[StoredRecommendation],
    here: str,
    with_campaign: bool = False,
) -> str:
    if not recommendations:
        return f"<p id='{element_id}' class='muted'>None.</p>"
    rows = []
    for r in recommendations[:MAX_ROWS]:
        campaign = (
            f"<td><a href='/campaign/{quote(r.campaign_id, safe='')}'>{escape(r.campaign_id)}</a></td>"
            if with_campaign
            else ""
        )
        rows.append(
            f"<tr class='recommendation' data-id='{r.id}' data-status='{escape(r.status)}'>"
            f"<td class='n'>{r.id}</td>{campaign}<td class='n'>{r.job_index}</td>"
            f"<td class='n'>{r.attempt}</td><td>{escape(r.site)}</td>"
            f"<td>{escape(r.failure_code)}<br><span class='muted'>{escape(r.failure_name)}</span></td>"
            f"<td class='action'><b>{escape(r.action.value)}</b></td>"
            f"<td class='n'>{r.confidence:.2f}</td>"
            f"<td class='reason'><pre>{escape(r.reason)}</pre></td>"
            f"<td class='status'>{escape(r.status)}</td>"
            f"<td class='decision'>{_decision_html(r)}</td>"
            f"<td>{_review_forms(r, here)}</td></tr>"
        )
    more = (
        f"<p class='muted'>{len(recommendations) - MAX_ROWS} more in /api/recovery.</p>"
        if len(recommendations) > MAX_ROWS
        else ""
    )
    head = "<th>campaign</th>" if with_campaign else ""
    return (
        f"<table id='{element_id}'><thead><tr><th>id</th>{head}<th>job</th><th>attempt</th>"
        "<th>site</th><th>failure code</th><th>action</th><th>confidence</th><th>reason</th>"
        f"<th>status</th><th>decision</th><th></th></tr></thead><tbody>{''.join(rows)}"
        f"</tbody></table>{more}"
    )


def _buttons(here: str, campaign_id: str = "") -> str:
    scope = _hidden("campaign_id", campaign_id) + _hidden("next", here)
    whose = "this campaign's" if campaign_id else "every campaign's"
    return (
        "<p><form method='post' action='/recovery/apply' id='apply' style='display:inline'>"
        f"{scope}<button>Apply accepted</button></form> "
        "<form method='post' action='/recovery/refresh' id='refresh' style='display:inline'>"
        f"{scope}<button>Recommend for new failures</button></form> "
        f"<span class='muted'>Apply carries out {whose} accepted and overridden actions; "
        "then `submit` the same spec to run them.</span></p>"
    )


def _error_page(status: int, message: str, back: str) -> Response:
    login = f"/recovery/login?{urlencode({'next': back})}"
    body = (
        f"<h1>Not done</h1><p class='alarm' id='recovery-error'>{escape(message)}</p>"
        f"<p><a href='{escape(back)}'>back</a> · <a href='{escape(login)}'>log in</a></p>"
    )
    return Response(status=status, body=html_page("recovery: not done", body, refresh=False))


# -- helpers ------------------------------------------------------------------------------
def _local_path(path: str | None, default: str = "/recovery") -> str:
    """``path`` if it stays on this server (no open redirect, no header injection)."""
    local = path and path.startswith("/") and not path.startswith("//")
    return path if local and path.isprintable() and "\\" not in path else default


def _json_fields(request: Request) -> dict[str, str]:
    if not request.body.strip():
        return {}
    try:
        document = json.loads(request.body)
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
