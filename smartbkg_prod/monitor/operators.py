"""Who may change state through the monitor's web page: operators, their tokens, sessions.

Operators are listed in a file named by ``$SMARTBKG_OPERATORS_FILE`` (or
``monitor serve --operators-file``), one ``name:sha256-of-token`` line each (``#`` starts a
comment). Only digests are stored; a token is made and listed with e.g.::

    TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    printf 'alice:%s\\n' "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" >> operators.txt

A request is authenticated by ``Authorization: Bearer <token>`` (scripts), or by the session
that the login form opens: Starlette's ``SessionMiddleware`` (an itsdangerous-signed,
HttpOnly, SameSite=Strict cookie, with a key made when the app starts: a restart logs
everyone out). A session-authenticated POST must also come from the page's own origin
(``Origin``, else ``Sec-Fetch-Site``): that, with SameSite=Strict, is the CSRF defence.
Without an operators file every state change is refused.

>>> operators = Operators({"alice": token_digest("s3cret")})
>>> operators.identify("s3cret"), operators.identify("guess")
('alice', None)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from itsdangerous import BadSignature, TimestampSigner
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp

from smartbkg_prod.errors import SmartBkgError

OPERATORS_ENV = "SMARTBKG_OPERATORS_FILE"
SESSION_COOKIE = "smartbkg_session"
SESSION_S = 8 * 3600  # one shift
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_SIGNED = re.compile(rb"[A-Za-z0-9_=-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")  # payload.time.sig


class OperatorsFileError(SmartBkgError):
    """The operators file is missing or has a line that is not ``name:sha256hex``."""


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token, as written in the operators file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Operators:
    """Operator names by token digest."""

    def __init__(self, digests: dict[str, str] | None = None, source: str = ""):
        self.digests = dict(digests or {})
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> Operators:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise OperatorsFileError(
                f"cannot read operators file {path}: {error.strerror}"
            ) from None
        digests: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, digest = (part.strip() for part in line.partition(":"))
            digest = digest.lower()
            # The line may hold a plaintext token by mistake: never quote it back.
            where = f"{path}:{number}"
            if not _NAME.fullmatch(name):
                raise OperatorsFileError(
                    f"{where}: operator name must be 1-64 of A-Z a-z 0-9 _ . @ - "
                    "(lines are name:sha256hex)"
                )
            if not _DIGEST.fullmatch(digest):
                raise OperatorsFileError(
                    f"{where}: after '{name}:' expected the 64 hex digits of sha256(token), "
                    "never the token itself"
                )
            if name in digests:
                raise OperatorsFileError(f"{where}: operator {name!r} listed twice")
            if digest in digests.values():
                raise OperatorsFileError(f"{where}: two operators share one token")
            digests[name] = digest
        return cls(digests, str(path))

    @classmethod
    def from_env(cls) -> Operators:
        """The file named by ``$SMARTBKG_OPERATORS_FILE``; nobody when it is unset."""
        path = os.environ.get(OPERATORS_ENV)
        return cls.from_file(path) if path else cls()

    def __len__(self) -> int:
        return len(self.digests)

    def identify(self, token: str) -> str | None:
        """The operator holding ``token``; every digest is compared in constant time."""
        offered = token_digest(token)
        found = None
        for name, digest in self.digests.items():
            if hmac.compare_digest(offered, digest):
                found = name
        return found


class _ExactSigner(TimestampSigner):
    """itsdangerous skips characters outside base64 when it decodes a signature: refuse a
    cookie that is not exactly in the form it issues (a valid one with a stray 'é')."""

    def unsign(self, signed_value, max_age=None, return_timestamp=False):
        if not _SIGNED.fullmatch(signed_value):
            raise BadSignature("not a session cookie of this server")
        return super().unsign(signed_value, max_age, return_timestamp)


class OperatorSessions(SessionMiddleware):
    """Starlette's signed-cookie sessions, HttpOnly, SameSite=Strict, one shift long."""

    def __init__(self, app: ASGIApp, secret_key: str):
        super().__init__(app, secret_key, SESSION_COOKIE, max_age=SESSION_S, same_site="strict")
        self.signer = _ExactSigner(secret_key)


class Authenticator:
    """Operators' sessions (``request.session``, set by SessionMiddleware) and credentials
    of state-changing requests; refusals are ``HTTPException`` 401 (who?) or 403 (not so)."""

    def __init__(self, operators: Operators):
        self.operators = operators

    def login(self, request: Request, token: str) -> str:
        """Open a session for the operator holding ``token`` (a same-origin form post)."""
        self._require_operators()
        require_same_origin(request)
        operator = self.operators.identify(token)
        if operator is None:
            raise HTTPException(401, "unknown token")
        request.session["operator"] = operator
        return operator

    def session_operator(self, request: Request) -> str | None:
        """The operator logged in by the request's session, if still listed."""
        operator = request.session.get("operator")
        return operator if operator in self.operators.digests else None

    def authenticate(self, request: Request) -> str:
        """The operator behind a state-changing request, or HTTPException (401/403)."""
        self._require_operators()
        authorization = request.headers.get("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            bearer = scheme.lower() == "bearer"
            operator = self.operators.identify(token.strip()) if bearer else None
            if operator is None:
                raise HTTPException(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})
            return operator
        operator = self.session_operator(request)
        if operator is None:
            raise HTTPException(401, "log in first (/recovery/login) or send a bearer token")
        require_same_origin(request)
        return operator

    def _require_operators(self) -> None:
        if not self.operators:
            raise HTTPException(
                403,
                f"no operators configured: set ${OPERATORS_ENV} or start "
                "`smartbkg-prod monitor serve --operators-file FILE`",
            )


def require_same_origin(request: Request) -> None:
    """Refuse a browser request sent by a page of another origin (CSRF)."""
    origin = request.headers.get("origin")
    if origin:
        if urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-origin request refused")
    elif request.headers.get("sec-fetch-site") != "same-origin":
        raise HTTPException(403, "request without Origin refused (send it from the monitor page)")
