"""LabArchives' signed API: settings, signatures, call spacing and error mapping.

Every call is signed with the access key and spaced by a limiter (LabArchives
asks for at most one call per second per client). An export reserves the slots
of all its calls at once (``reserved``), so a busy account defers the whole
record instead of stalling it halfway. Answers are XML; an ``<error>`` answer
becomes the matching export error, whatever the HTTP status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from xml.etree.ElementTree import Element

from pydantic import Field, SecretStr

from destinations.errors import PermanentExportError, SlotsDeferredError
from destinations.settings import NxSettings
from destinations.toolkit.http import (
    CredentialsRefused,
    HttpSettings,
    UnexpectedAnswer,
    check_status,
    get_client,
    join_url,
    parse_xml,
    request,
    snippet,
)
from destinations.toolkit.rate_limit import (
    CallLimiter,
    CallSlots,
    MinIntervalLimiter,
    SlotsDeferred,
)

DESTINATION = "labarchives"  # in messages, as the destination names itself
AUTH_ERROR_CODES = frozenset({"4504", "4506", "4507", "4514", "4520", "4533"})
PERMISSION_ERROR_CODES = frozenset({"4501", "4502"})


# Named in messages when its host cannot be reached.
URL_SETTING = "NX_LABARCHIVES_URL"


class LabArchivesSettings(NxSettings):
    """NexusLIMS's LabArchives settings, plus the call spacing."""

    url: str = Field(
        default="https://api.labarchives.com/api", validation_alias=URL_SETTING
    )
    access_key_id: SecretStr = Field(
        default=SecretStr(""), validation_alias="NX_LABARCHIVES_ACCESS_KEY_ID"
    )
    access_password: SecretStr = Field(
        default=SecretStr(""), validation_alias="NX_LABARCHIVES_ACCESS_PASSWORD"
    )
    user_id: str = Field(default="", validation_alias="NX_LABARCHIVES_USER_ID")
    notebook_id: str | None = Field(default=None, validation_alias="NX_LABARCHIVES_NOTEBOOK_ID")
    min_call_interval: float = Field(
        default=1.0, validation_alias="NX_LABARCHIVES_MIN_CALL_INTERVAL"
    )
    max_call_wait: float = Field(default=5.0, validation_alias="NX_LABARCHIVES_MAX_CALL_WAIT")
    folder_cache_seconds: float = Field(
        default=86400.0, validation_alias="NX_LABARCHIVES_FOLDER_CACHE_SECONDS"
    )


_limiters: dict[tuple[int, float], MinIntervalLimiter] = {}
_limiters_lock = threading.Lock()


def process_limiter(interval: float) -> MinIntervalLimiter:
    """The limiter shared by this process (a fork gets its own, with a fresh lock)."""
    key = (os.getpid(), interval)
    with _limiters_lock:
        if key not in _limiters:
            _limiters[key] = MinIntervalLimiter(interval)
        return _limiters[key]


def sign(access_key_id: str, password: str, method: str, expires: str) -> str:
    """LabArchives' signature: base64(HMAC-SHA512(password, akid + method + expires))."""
    message = f"{access_key_id}{method}{expires}".encode()
    digest = hmac.new(password.encode(), message, hashlib.sha512).digest()
    return base64.b64encode(digest).decode("ascii")


class NodeMissing(PermanentExportError):
    """The service answered that a tree node does not exist (HTTP 404)."""


class LabArchivesClient:
    """Signed, spaced calls to one LabArchives account."""

    def __init__(
        self, settings: LabArchivesSettings, http: HttpSettings, limiter: CallLimiter
    ) -> None:
        self.settings = settings
        self.http = http
        self.limiter = limiter
        # The slots of the export running in this thread (the worker runs threads).
        self._local = threading.local()

    @contextmanager
    def reserved(self, calls: int, job: str | None) -> Iterator[CallSlots]:
        """Reserve the slots of this thread's next ``calls`` calls; release them after.

        Raises ``SlotsDeferredError`` (with ``retry_after``) when the first
        slot is further away than ``NX_LABARCHIVES_MAX_CALL_WAIT``; the slots
        then stay reserved for ``job``'s retry (``abandon(job)`` hands them back).
        """
        get_client(self.http)  # set up before the first slot, not after it
        slots = self._reserve(calls, job)
        self._local.slots = slots
        try:
            yield slots
        finally:
            self._local.slots = None
            slots.release()

    def _reserve(self, calls: int, job: str | None) -> CallSlots:
        try:
            return self.limiter.reserve(calls, job)
        except SlotsDeferred as deferred:
            # Come back a little before the slots, which stay reserved for this job.
            raise SlotsDeferredError(
                f"labarchives: waiting for a call slot (one call per "
                f"{self.settings.min_call_interval:g} s across all workers); "
                f"next slot in {deferred.wait:.0f} s",
                retry_after=max(0.0, deferred.wait - self.settings.max_call_wait / 2),
            ) from None

    def abandon(self, job: str) -> None:
        """Hand back the slots kept for ``job``'s return, if any."""
        self.limiter.abandon(job)

    def call(
        self,
        http_method: str,
        api_class: str,
        method: str,
        call: str,
        params: dict[str, str],
        data: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> Element:
        """One signed call; the parsed XML answer, or the matching export error."""
        akid = self.settings.access_key_id.get_secret_value()
        password = self.settings.access_password.get_secret_value()
        slots: CallSlots | None = getattr(self._local, "slots", None)
        if slots is None:
            # A call outside an export (the settings check): a slot of its own, and the
            # HTTP client set up before it, so a first call is not sent late in its slot.
            get_client(self.http)
            own = self.limiter.reserve(1)
            own.wait()
            own.release()
        else:
            slots.wait()
        expires = str(int(time.time() * 1000))
        signed = {
            "akid": akid,
            "expires": expires,
            "sig": sign(akid, password, method, expires),
            "uid": self.settings.user_id,
            **params,
        }
        response = request(
            http_method, join_url(self.settings.url, api_class, method),
            destination=DESTINATION, call=call, params=signed, data=data, content=content,
            headers={"Content-Type": "application/octet-stream"} if content is not None else None,
            check=False, all_5xx_transient=True, secrets=(akid, password),
            settings=self.http, url_setting=URL_SETTING,
        )
        secrets = (akid, password)
        if response.status_code >= 500 or response.status_code == 429:
            check_status(response, destination=DESTINATION, call=call, all_5xx_transient=True,
                         secrets=secrets)
        # LabArchives explains refusals in an <error> body, whatever the status.
        try:
            answer = parse_xml(response, destination=DESTINATION, call=call)
        except UnexpectedAnswer:
            check_status(response, destination=DESTINATION, call=call, secrets=secrets)
            raise
        _raise_for_error(answer, call, response.status_code, secrets)
        check_status(response, destination=DESTINATION, call=call, secrets=secrets)
        return answer


def required_text(answer: Element, tag: str, call: str) -> str:
    """The text of the answer's first ``<tag>``; ``UnexpectedAnswer`` when it is missing."""
    value = answer.findtext(f".//{tag}")
    if not value or not value.strip():
        raise UnexpectedAnswer(f"labarchives: {call}: unexpected answer: no <{tag}>")
    return value.strip()


def _raise_for_error(answer: Element, call: str, status: int, secrets: tuple[str, ...]) -> None:
    """Raise for an ``<error>`` answer: refused credentials, permission, or other."""
    error = answer if answer.tag == "error" else answer.find(".//error")
    if error is None:
        return
    code = (error.findtext("error-code") or error.findtext("code") or "").strip()
    description = error.findtext("error-description") or error.findtext("msg") or ""
    detail = f"LabArchives error {code or '?'} (HTTP {status}): {snippet(description, secrets)}"
    if code in AUTH_ERROR_CODES:
        raise CredentialsRefused(f"labarchives: {call}: credentials were refused: {detail}")
    if code in PERMISSION_ERROR_CODES:
        raise PermanentExportError(f"labarchives: {call}: permission refused: {detail}")
    if status == 404:
        raise NodeMissing(f"labarchives: {call}: not found: {detail}")
    raise PermanentExportError(f"labarchives: {call}: {detail}")
