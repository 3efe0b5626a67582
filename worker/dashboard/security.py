"""Who may use the dashboard (basic auth) and proof that a retry was asked from its own page.

A retry form carries a token: the HMAC of a key drawn at start-up and the job's
id (for "Retry all", the filter it retries). Another site cannot read the page,
so it cannot make a form that passes, even though the browser would send the
operator's credentials with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

from pydantic import SecretStr

from worker.web_auth import basic_auth_problem

AUTH_VARIABLE = "NX_EXPORT_DASHBOARD_AUTH"
OPEN_PATHS = ("/healthz",)
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class AuthSettingError(ValueError):
    """NX_EXPORT_DASHBOARD_AUTH is missing or not user:password; the message says which."""


def credentials(secret: SecretStr | None) -> tuple[str, str]:
    value = secret.get_secret_value() if secret else ""
    if not value:
        raise AuthSettingError(
            f"{AUTH_VARIABLE} is not set: the dashboard needs user:password for its basic auth"
        )
    problem = basic_auth_problem(AUTH_VARIABLE, value)
    if problem is not None:  # an empty or blank user or password is no protection
        raise AuthSettingError(problem)
    user, _, password = value.partition(":")
    return user, password


class BasicAuth:
    """ASGI middleware: every path but ``/healthz`` needs the credentials."""

    def __init__(self, app: Any, user: str, password: str) -> None:
        self.app = app
        self.expected = f"{user}:{password}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        if scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send_with_headers)
            return
        await send_with_headers(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b'Basic realm="nx-export dashboard", charset="UTF-8"'),
                    (b"content-type", b"text/plain; charset=utf-8"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"authentication required\n"})

    def _allowed(self, scope: dict[str, Any]) -> bool:
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self.expected)


class RetryTokens:
    """Tokens for the retry form of one job, valid while this process runs."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def token(self, job_id: str, purpose: str = "retry") -> str:
        return hmac.new(self._key, f"{purpose}:{job_id}".encode(), hashlib.sha256).hexdigest()

    def check(self, job_id: str, token: str | None, purpose: str = "retry") -> bool:
        return bool(token) and hmac.compare_digest(self.token(job_id, purpose), str(token))
