"""The HTTP layer shared by the built-in destinations.

One ``httpx.Client`` per worker process, with timeouts, TLS verification and a
``User-Agent``; one ``request()`` that turns every way a call can go wrong into a
``TransientExportError`` (worth retrying) or a ``PermanentExportError`` (not),
with a message that names the destination, the call, the status and a snippet of
the answer, and never a secret.

Redirects are followed here, not by httpx: a redirect on the same origin
(scheme, host, port) is followed with the credentials; a redirect to any other
origin is a ``PermanentExportError`` and is never requested, so a token, key or
signature cannot leak to a host the operator did not configure.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field

from destinations.errors import PermanentExportError, ServiceUnavailableError
from destinations.settings import NxSettings
from destinations.toolkit.answers import (
    CredentialsRefused,
    HostUnreachable,
    UnexpectedAnswer,
    check_status,
    parse_json,
    parse_retry_after,
    parse_xml,
    redact,
    snippet,
    url_path,
    validation_message,
)
from destinations.toolkit.call_deadline import CallDeadlineExceeded, send_within

# What destinations import from here, kept where they always were.
__all__ = [
    "CredentialsRefused", "HostUnreachable", "HttpSettings", "UnexpectedAnswer", "check_status",
    "get_client", "join_url", "parse_json", "parse_retry_after", "parse_xml", "redact",
    "request", "require_same_origin", "snippet", "url_path", "user_agent", "validation_message",
]  # fmt: skip

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
# Query parameters whose values are credentials (LabArchives signs in the query).
SECRET_PARAMS = frozenset({"akid", "sig", "password", "token", "api_key", "key"})


class HttpSettings(NxSettings):
    """Timeouts and TLS options, from NexusLIMS's environment names."""

    connect_timeout: float = Field(default=10.0, validation_alias="NX_HTTP_CONNECT_TIMEOUT")
    read_timeout: float = Field(default=60.0, validation_alias="NX_HTTP_READ_TIMEOUT")
    # The whole call, redirects included: a trickling answer never trips the read timeout.
    total_timeout: float = Field(default=300.0, validation_alias="NX_HTTP_TOTAL_TIMEOUT", gt=0)
    cert_bundle_file: Path | None = Field(default=None, validation_alias="NX_CERT_BUNDLE_FILE")
    disable_ssl_verify: bool = Field(default=False, validation_alias="NX_DISABLE_SSL_VERIFY")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def user_agent() -> str:
    """The ``User-Agent`` sent on every call."""
    try:
        worker_version = version("nexuslims-export-worker")
    except PackageNotFoundError:
        worker_version = "0.0.0"
    return f"nexuslims-export-worker/{worker_version}"


class _RedactQueryFilter(logging.Filter):
    """Drop query strings from httpx's request log lines (LabArchives signs there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactQueryFilter())

_ClientKey = tuple[int, float, float, str | None, bool]
_clients: dict[_ClientKey, httpx.Client] = {}
_clients_lock = threading.Lock()


def get_client(settings: HttpSettings | None = None) -> httpx.Client:
    """The process's shared client for these settings, created on first use.

    Keyed by process id so that a prefork child never reuses connections it
    inherited from its parent, and by the settings so that a changed timeout
    takes effect.
    """
    settings = settings or HttpSettings()
    cert = str(settings.cert_bundle_file) if settings.cert_bundle_file else None
    key: _ClientKey = (
        os.getpid(),
        settings.connect_timeout,
        settings.read_timeout,
        cert,
        settings.disable_ssl_verify,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if any(other[0] != key[0] for other in _clients):
                # Inherited across fork: forget, never close, the parent's sockets.
                _clients.clear()
            client = httpx.Client(
                timeout=httpx.Timeout(
                    settings.read_timeout,
                    connect=settings.connect_timeout,
                ),
                verify=_tls_verification(settings),
                headers={"User-Agent": user_agent()},
                # Redirects are followed by request() so credentials never leave the host.
                follow_redirects=False,
            )
            _clients[key] = client
        return client


def _tls_verification(settings: HttpSettings) -> ssl.SSLContext | bool:
    """Verification on by default, against the bundle when one is configured."""
    if settings.disable_ssl_verify:
        return False
    if settings.cert_bundle_file:
        try:
            return ssl.create_default_context(cafile=str(settings.cert_bundle_file))
        except (OSError, ssl.SSLError) as exc:
            raise PermanentExportError(
                f"NX_CERT_BUNDLE_FILE {settings.cert_bundle_file} cannot be loaded: {exc}"
            ) from None
    return True


def join_url(root: str, *parts: str) -> str:
    """Join a root URL and path parts with exactly one ``/`` between each.

    A trailing ``/`` on the last part is kept (CDCS paths end with one).
    """
    pieces = [root.rstrip("/")]
    pieces += [part.strip("/") for part in parts if part.strip("/")]
    joined = "/".join(pieces)
    if parts and parts[-1].endswith("/"):
        joined += "/"
    return joined


def _secrets_of(headers: Mapping[str, str] | None, params: Mapping[str, Any] | None) -> list[str]:
    """The credential values of a call, so they can be blanked in messages."""
    found: list[str] = []
    for name, value in (headers or {}).items():
        if name.lower() == "authorization":
            found += [value, value.split()[-1] if value.split() else value]
    for name, value in (params or {}).items():
        if name.lower() in SECRET_PARAMS and isinstance(value, str):
            found.append(value)
    return found


def require_same_origin(
    url: httpx.URL, origin: httpx.URL, *, destination: str, call: str, what: str
) -> None:
    """Refuse ``url`` unless its scheme, host and port are ``origin``'s.

    Credentials are bound to the service's origin: a redirect, or a link the
    service hands back (a next page), is never followed with them elsewhere.
    """
    if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
        port = f":{url.port}" if url.port else ""
        raise PermanentExportError(
            f"{destination}: {call}: {what} another host "
            f"({url.scheme}://{url.host}{port}{url.path}); not following it with credentials"
        )


def request(
    method: str,
    url: str,
    *,
    destination: str,
    call: str,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    json_body: Any = None,
    data: Mapping[str, Any] | None = None,
    content: bytes | None = None,
    files: Mapping[str, Any] | None = None,
    check: bool = True,
    all_5xx_transient: bool = False,
    secrets: Iterable[str] = (),
    settings: HttpSettings | None = None,
    url_setting: str | None = None,
) -> httpx.Response:
    """Make one API call and classify whatever goes wrong.

    Parameters
    ----------
    method, url
        The HTTP method and the full URL, without query string.
    destination, call
        Who is calling and what for (``"cdcs"``, ``"upload record"``), for messages.
    headers, params, json_body, data, content, files
        As for ``httpx.Client.request``.
    check
        Raise for non-2xx answers; without it the caller inspects the answer.
    all_5xx_transient
        Treat every 5xx as transient (LabArchives) rather than only 502/503/504.
    secrets
        Extra values to blank out of messages; the ``Authorization`` header and
        credential query parameters are always blanked.
    settings
        Timeouts and TLS options; read from the environment when omitted.
    url_setting
        The setting the URL came from (``NX_ELABFTW_URL``), named when the host
        cannot be reached.

    Returns
    -------
    httpx.Response
        The final answer, after same-host redirects.

    Raises
    ------
    TransientExportError
        Connection errors and timeouts (``HostUnreachable``), a connection lost
        before the answer, 429, 502/503/504.
    PermanentExportError
        Refused credentials (``CredentialsRefused``), other 4xx and 5xx, and a
        redirect to another host.
    """
    settings = settings or HttpSettings()
    client = get_client(settings)
    deadline = time.monotonic() + settings.total_timeout
    hidden = [*_secrets_of(headers, params), *secrets]
    target = httpx.URL(url)
    request_params: Mapping[str, Any] | None = params
    for _hop in range(MAX_REDIRECTS + 1):
        where = f"{method} {target.path}"
        outgoing = client.build_request(
            method,
            target,
            headers=headers,
            params=request_params,
            json=json_body,
            data=data,
            content=content,
            files=files,
        )
        # Where a connection failed: the host and port tried, and the setting naming them.
        place = f"{target.host}:{target.port or _DEFAULT_PORTS.get(target.scheme, '?')}" + (
            f" from {url_setting}" if url_setting else ""
        )
        try:
            response = send_within(client, outgoing, deadline, settings.total_timeout)
        except CallDeadlineExceeded as exc:
            raise HostUnreachable(
                f"{destination}: {call}: timed out at {place} ({where}): {exc}"
            ) from None
        except httpx.TimeoutException as exc:
            raise HostUnreachable(
                f"{destination}: {call}: host unreachable: timed out at {place} ({where}): "
                f"{type(exc).__name__}"
            ) from None
        except httpx.ConnectError as exc:
            raise HostUnreachable(
                f"{destination}: {call}: host unreachable: {place} ({where}): "
                f"{type(exc).__name__}: {redact(str(exc), hidden)}"
            ) from None
        except httpx.TransportError as exc:
            # The request may have been acted on: callers look before re-creating.
            raise ServiceUnavailableError(
                f"{destination}: {call}: connection lost before an answer ({where}): "
                f"{type(exc).__name__}"
            ) from None
        if not response.is_redirect:
            if check:
                check_status(
                    response,
                    destination=destination,
                    call=call,
                    all_5xx_transient=all_5xx_transient,
                    secrets=hidden,
                )
            return response
        location = response.next_request.url if response.next_request else target
        require_same_origin(
            location, target, destination=destination, call=call, what="redirected to"
        )
        if response.status_code in (301, 302, 303) and method not in ("GET", "HEAD"):
            method, json_body, data, content, files = "GET", None, None, None, None
        target, request_params = location, None
    raise PermanentExportError(
        f"{destination}: {call}: too many redirects ({method} {target.path})"
    )


