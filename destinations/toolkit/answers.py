"""Reading a service's answers: sorting failures into transient and permanent, with
messages that name the call and quote the answer, never a secret."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import Any
from xml.etree.ElementTree import Element

import httpx
from defusedxml import ElementTree as SafeElementTree

from destinations import redaction
from destinations.errors import (
    PermanentExportError,
    ServiceUnavailableError,
    TransientExportError,
)

SNIPPET_LENGTH = 200


def url_path(url: str | httpx.URL) -> str:
    """The path of a URL, safe to show: no query string, no user info."""
    return httpx.URL(str(url)).path or "/"


class CredentialsRefused(PermanentExportError):
    """The service answered that the token, key or signature is not accepted."""


class UnexpectedAnswer(PermanentExportError):
    """The service answered, but not with what the API promises."""


class HostUnreachable(ServiceUnavailableError):
    """No answer at all: connection refused, DNS failure or timeout."""


def snippet(text: str, secrets: Iterable[str] = ()) -> str:
    """A short one-line excerpt of an answer, with any secret blanked out.

    Blanked before it is cut (``secrets`` and the configured ones): a secret the
    cut runs through would otherwise leave its prefix behind.
    """
    one_line = re.sub(r"\s+", " ", text).strip()
    return redaction.redact_then_cut(one_line, SNIPPET_LENGTH, secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text``, and every 8-character run of one, by ``***``."""
    return redaction.redact(text, secrets)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check_status(
    response: httpx.Response,
    *,
    destination: str,
    call: str,
    all_5xx_transient: bool = False,
    secrets: Iterable[str] = (),
) -> None:
    """Raise the right export error for a non-2xx answer; return on 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    where = f"{response.request.method} {url_path(response.request.url)}"
    body = snippet(response.text, secrets)
    if status in (401, 403):
        raise CredentialsRefused(
            f"{destination}: {call}: credentials were refused (HTTP {status}, {where}): {body}"
        )
    if status in (502, 503, 504) or (status >= 500 and all_5xx_transient):
        raise ServiceUnavailableError(
            f"{destination}: {call}: HTTP {status} ({where}): {body}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 429:  # the service is up, and asks for patience
        raise TransientExportError(
            f"{destination}: {call}: HTTP {status} ({where}): {body}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    raise PermanentExportError(f"{destination}: {call}: HTTP {status} ({where}): {body}")


def validation_message(exc: Exception) -> str:
    """What ``validate_config`` reports when its check call failed.

    Refused credentials, an unreachable host and an unexpected answer each say so.
    """
    if isinstance(exc, CredentialsRefused | HostUnreachable | UnexpectedAnswer):
        return str(exc)
    return f"unexpected answer: {exc}"


def parse_json(response: httpx.Response, *, destination: str, call: str) -> Any:
    """The JSON body of an answer, or ``UnexpectedAnswer`` naming what came instead."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or "no type"
    where = f"{response.request.method} {url_path(response.request.url)}"
    if "json" not in content_type:
        raise UnexpectedAnswer(
            f"{destination}: {call}: unexpected answer: expected JSON, got {content_type} "
            f"(HTTP {response.status_code}, {where}): {snippet(response.text)}"
        )
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnexpectedAnswer(
            f"{destination}: {call}: unexpected answer: malformed JSON "
            f"(HTTP {response.status_code}, {where}): {snippet(response.text)}"
        ) from None


def parse_xml(response: httpx.Response, *, destination: str, call: str) -> Element:
    """The XML body of an answer, parsed without DTDs or entities (defusedxml)."""
    where = f"{response.request.method} {url_path(response.request.url)}"
    try:
        root: Element = SafeElementTree.fromstring(response.content, forbid_dtd=True)
    except Exception:  # defusedxml raises ParseError or its own DefusedXmlException
        content_type = response.headers.get("Content-Type", "no type").split(";")[0]
        raise UnexpectedAnswer(
            f"{destination}: {call}: unexpected answer: expected XML, got {content_type} "
            f"(HTTP {response.status_code}, {where}): {snippet(response.text)}"
        ) from None
    return root
