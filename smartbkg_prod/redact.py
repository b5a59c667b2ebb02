"""Keep credentials out of what we print, log, store and serve.

Credentials reach this program through its environment and URLs: PanDA/OIDC tokens
(``PANDA_AUTH_ID_TOKEN``, ``OIDC_AUTH_ID_TOKEN``), X.509 proxies (``X509_USER_PROXY``,
``/tmp/x509up_u<uid>``), registry and database passwords (``postgresql://user:pw@host``).
:func:`redact` replaces each by ``***`` in free text; :func:`redact_url` hides a URL's
password; :func:`redact_env` hides the values of secret-named variables;
:class:`RedactingFilter` applies :func:`redact` to log records.

>>> redact_url("postgresql+psycopg://prod:s3cret@db.example.org/jobs")
'postgresql+psycopg://prod:***@db.example.org/jobs'
>>> redact("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl in the log")
'token *** in the log'
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

MASK = "***"

# Variable names whose values are credentials, or paths to them.
_SECRET_NAME = re.compile(
    r"(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|PRIVATE_?KEY|X509|PROXY_?FILE|AUTH_ID)",
    re.IGNORECASE,
)
_PATTERNS = [
    # user:password@ in any URL (database, registry, HTTP basic auth)
    (
        re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*:)[^@\s'\"/]+(?=@)"),
        r"\g<head>" + MASK,
    ),
    # JSON Web Tokens (OIDC ID and access tokens): three base64url parts, header starts eyJ
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"), MASK),
    # HTTP authorization headers
    (re.compile(r"(?i)(authorization:\s*(?:bearer|basic|token)\s+)\S+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
    # the grid proxy's default file name
    (re.compile(r"\S*x509up_u\d+"), MASK),
    # NAME=value and "name": "value" for secret-looking names
    (
        re.compile(
            r"(?P<name>\b[A-Za-z_][A-Za-z0-9_]*(?:TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|X509_USER_PROXY)[A-Za-z0-9_]*)"
            r"(?P<sep>\s*[=:]\s*[\"']?)(?P<value>[^\s\"',;]+)",
            re.IGNORECASE,
        ),
        r"\g<name>\g<sep>" + MASK,
    ),
]


def is_secret_name(name: str) -> bool:
    """Whether an environment variable or option called ``name`` holds a credential."""
    return bool(_SECRET_NAME.search(name))


def redact(text: str) -> str:
    """``text`` with every credential we recognise replaced by ``***``; values of the
    secret-named variables of this process's environment too."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for name, value in os.environ.items():
        if len(value) >= 6 and is_secret_name(name) and value in text:
            text = text.replace(value, MASK)
    return text


def redact_url(url: str) -> str:
    """A URL with its password hidden (database URLs as SQLAlchemy prints them)."""
    return _PATTERNS[0][0].sub(_PATTERNS[0][1], url)


def redact_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` safe to print: secret-named values masked, URLs redacted."""
    return {
        name: MASK if is_secret_name(name) else redact_url(value) for name, value in environ.items()
    }


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message.

    >>> logging.getLogger("smartbkg_prod").addFilter(RedactingFilter())  # doctest: +SKIP
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
