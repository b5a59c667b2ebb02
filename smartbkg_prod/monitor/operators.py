"""Who may change state through the monitor's web page: operators, their tokens, sessions.

Operators are listed in a file named by ``$SMARTBKG_OPERATORS_FILE`` (or
``monitor serve --operators-file``), one ``name:sha256-of-token`` line each (``#`` starts a
comment). Only digests are stored; a token is made and listed with e.g.::

    TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    printf 'alice:%s\\n' "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" >> operators.txt

A request is authenticated by ``Authorization: Bearer <token>`` (scripts), or by the session
cookie that the login form sets: HttpOnly, SameSite=Strict, signed with a key made when the
server starts (a restart logs everyone out). A cookie-authenticated POST must also come from
the page's own origin (``Origin``, else ``Sec-Fetch-Site``): that, with SameSite=Strict, is
the CSRF defence. Without an operators file every state change is refused.

>>> operators = Operators({"alice": token_digest("s3cret")})
>>> operators.identify("s3cret"), operators.identify("guess")
('alice', None)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.monitor.routes import Request

OPERATORS_ENV = "SMARTBKG_OPERATORS_FILE"
SESSION_COOKIE = "smartbkg_session"
SESSION_S = 8 * 3600  # one shift
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class OperatorsFileError(SmartBkgError):
    """The operators file is missing or has a line that is not ``name:sha256hex``."""


class AuthError(SmartBkgError):
    """A state-changing request without valid credentials (401) or from elsewhere (403)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


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


class Authenticator:
    """Checks credentials on state-changing requests and issues login sessions."""

    def __init__(self, operators: Operators, key: bytes | None = None):
        self.operators = operators
        self._key = key or secrets.token_bytes(32)

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def login(self, token: str, now: float | None = None) -> tuple[str, str]:
        """(operator, ``Set-Cookie`` value) for a valid token; AuthError otherwise."""
        self._require_operators()
        operator = self.operators.identify(token)
        if operator is None:
            raise AuthError(401, "unknown token")
        expires = int((now or time.time()) + SESSION_S)
        payload = base64.urlsafe_b64encode(
            json.dumps({"operator": operator, "expires": expires}).encode()
        )
        session = f"{payload.decode()}.{self._sign(payload)}"
        cookie = (
            f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_S}"
        )
        return operator, cookie

    def session_operator(self, request: Request, now: float | None = None) -> str | None:
        """The operator logged in by the request's session cookie, if any."""
        session = _cookies(request.header("cookie")).get(SESSION_COOKIE)
        if not session or "." not in session:
            return None
        payload, signature = session.rsplit(".", 1)
        # Bytes: compare_digest refuses str with non-ASCII characters (a forged cookie).
        expected = self._sign(payload.encode()).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            return None
        claims = json.loads(base64.urlsafe_b64decode(payload))
        operator = claims["operator"]
        if claims["expires"] < (now or time.time()) or operator not in self.operators.digests:
            return None
        return operator

    def authenticate(self, request: Request, now: float | None = None) -> str:
        """The operator behind a state-changing request, or AuthError (401/403)."""
        self._require_operators()
        authorization = request.header("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            bearer = scheme.lower() == "bearer"
            operator = self.operators.identify(token.strip()) if bearer else None
            if operator is None:
                raise AuthError(401, "invalid bearer token")
            return operator
        operator = self.session_operator(request, now)
        if operator is None:
            raise AuthError(401, "log in first (/recovery/login) or send a bearer token")
        require_same_origin(request)
        return operator

    def _require_operators(self) -> None:
        if not self.operators:
            raise AuthError(
                403,
                f"no operators configured: set ${OPERATORS_ENV} or start "
                "`smartbkg-prod monitor serve --operators-file FILE`",
            )


def require_same_origin(request: Request) -> None:
    """Refuse a browser request sent by a page of another origin (CSRF)."""
    origin = request.header("origin")
    if origin:
        if urlsplit(origin).netloc != request.header("host"):
            raise AuthError(403, "cross-origin request refused")
        return
    if request.header("sec-fetch-site") != "same-origin":
        raise AuthError(403, "request without Origin refused (send it from the monitor page)")


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, _, value in pairs if name}
