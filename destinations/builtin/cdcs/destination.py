"""CDCS (NIST's Configurable Data Curation System): the record's home.

Uploads the XML against the current template, assigns it to the public
workspace and, optionally, hands ownership to the session's user, as NexusLIMS
does. Notebooks link to the record URL this destination returns.

The uploaded record's id goes into the export's call log under the record's
checksum, so a later attempt reuses it without searching. A record rebuilt
between attempts has another checksum: it is uploaded as a new CDCS record
(the result names the one it ``supersedes``), never skipped. Only when the log
says an upload went out without an answer is CDCS searched, and only a record
of this session (``destinations.builtin.cdcs.records``) is taken.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import Field, SecretStr

from destinations.builtin.cdcs.records import OLDER, SAME, SessionRecord
from destinations.builtin.session_summary import session_user
from destinations.contract import ExportContext, ExportResult
from destinations.errors import ExportError
from destinations.settings import NxSettings
from destinations.toolkit.http import (
    HttpSettings,
    UnexpectedAnswer,
    join_url,
    parse_json,
    request,
    require_same_origin,
)
from destinations.toolkit.resume import Resume
from destinations.toolkit.service import ServiceDestination, guarded_export, record_bytes

logger = logging.getLogger(__name__)

# Template and workspace ids change rarely; re-read them this often.
TEMPLATE_CACHE_SECONDS = 600.0
MAX_QUERY_PAGES = 20


# Named in messages when its host cannot be reached.
URL_SETTING = "NX_CDCS_URL"


class CDCSSettings(NxSettings):
    """NexusLIMS's CDCS settings."""

    url: str = Field(default="", validation_alias=URL_SETTING)
    token: SecretStr = Field(default=SecretStr(""), validation_alias="NX_CDCS_TOKEN")
    assign_to_public_workspace: bool = Field(
        default=True, validation_alias="NX_CDCS_ASSIGN_TO_PUBLIC_WORKSPACE"
    )
    user_owned_records: bool = Field(default=False, validation_alias="NX_CDCS_USER_OWNED_RECORDS")


# Per process: (root URL, what) -> (id, monotonic expiry).
_id_cache: dict[tuple[str, str], tuple[str | None, float]] = {}
_id_cache_lock = threading.Lock()


def _cached_id(root: str, what: str, fetch: Callable[[], str | None], refresh: bool) -> str | None:
    now = time.monotonic()
    with _id_cache_lock:
        cached = _id_cache.get((root, what))
    if cached and cached[1] > now and not refresh:
        return cached[0]
    value = fetch()
    with _id_cache_lock:
        _id_cache[(root, what)] = (value, now + TEMPLATE_CACHE_SECONDS)
    return value


class CDCSDestination(ServiceDestination):
    """Upload records to CDCS."""

    name = "cdcs"
    priority = 100

    def __init__(self) -> None:
        self.settings = CDCSSettings()
        self.http = HttpSettings()

    def required(self) -> list[tuple[str, str]]:
        return [("NX_CDCS_URL", self.settings.url),
                ("NX_CDCS_TOKEN", self.settings.token.get_secret_value())]  # fmt: skip

    def check_service(self) -> str | None:
        """Look the template up: the URL and the token work."""
        self.template_id(refresh=True)
        return None

    def export(self, context: ExportContext) -> ExportResult:
        """Upload the record; raise only ``TransientExportError``."""
        return guarded_export(self.name, context, self._export)

    def find_existing(self, context: ExportContext, record: SessionRecord) -> ExportResult | None:
        """The session's record with this content, if an earlier attempt uploaded it.

        A record of the session with other content (an earlier build) is not
        returned; its id is left in ``record.older``.
        """
        title = record.title
        body = {
            "query": {},
            "all": "true",
            "title": title,
            "templates": [{"id": self.template_id()}],
        }
        url: str | None = self._url("rest/data/query/")
        for _page in range(MAX_QUERY_PAGES):
            if url is None:
                break
            answer = self._call("POST", url, "find record by title", json_body=body)
            records, url = _page_of(answer)
            for candidate in records:
                verdict = record.verdict(candidate) if isinstance(candidate, dict) else None
                if verdict == SAME:
                    return self._success(str(candidate["id"]), title, found_existing=True)
                if verdict == OLDER:
                    record.older = str(candidate["id"])
        return None

    def template_id(self, refresh: bool = False) -> str:
        """The current template id, cached per process for ten minutes."""
        return str(_cached_id(self.settings.url, "template", self._fetch_template_id, refresh))

    def _export(self, context: ExportContext) -> ExportResult:
        try:
            xml_text = record_bytes(self.name, context).decode("utf-8-sig")
        except UnicodeDecodeError:
            return self._failure(f"cdcs: the record file {context.xml_file_path} is not UTF-8")
        record = SessionRecord.of(context, xml_text)
        resume = Resume(context)
        key = f"record:{record.checksum[:16]}"
        previous = resume.done("record")  # an earlier build uploaded by this job
        record_id = resume.done(key)
        existed = record_id is not None
        if record_id is None and resume.may_exist(key):
            found = self.find_existing(context, record)
            if found is not None:
                record_id, existed = resume.remember(key, str(found.record_id)), True
        if record_id is None:
            record_id = resume.create(key, lambda: self._upload(record.title, xml_text))
        if previous != record_id:
            resume.remember("record", record_id)
        # Both are idempotent: repeated for a record an earlier attempt uploaded.
        self._assign_to_workspace(record_id)
        if self.settings.user_owned_records:
            self._give_to_user(record_id, context)
        superseded = previous if previous not in (None, record_id) else record.older
        return self._success(record_id, record.title, existed, superseded)

    def _upload(self, title: str, xml_text: str) -> str:
        call = "upload record"
        answer = self._call(
            "POST", self._url("rest/data/"), call,
            json_body={"template": self.template_id(), "title": title, "xml_content": xml_text},
        )
        if not isinstance(answer, dict) or "id" not in answer:
            raise UnexpectedAnswer(f"cdcs: {call}: unexpected answer: no record id")
        return str(answer["id"])

    def _assign_to_workspace(self, record_id: str) -> None:
        if not self.settings.assign_to_public_workspace:
            return
        workspace_id = _cached_id(self.settings.url, "workspace", self._fetch_workspace_id, False)
        if workspace_id is None:
            logger.warning("cdcs: no readable workspace; record %s stays private", record_id)
            return
        self._call(
            "PATCH", self._url("rest/data", record_id, "assign", workspace_id),
            "assign record to workspace",
        )

    def _fetch_workspace_id(self) -> str | None:
        call = "find public workspace"
        workspaces = self._call("GET", self._url("rest/workspace/read_access/"), call)
        if not isinstance(workspaces, list):
            raise UnexpectedAnswer(f"cdcs: {call}: unexpected answer: not a list of workspaces")
        return str(workspaces[0]["id"]) if workspaces else None

    def _give_to_user(self, record_id: str, context: ExportContext) -> None:
        """Make the session's user own the record; on failure it stays admin-owned."""
        try:
            user_id = self._find_or_create_user(context)
            if user_id is None:
                logger.warning("cdcs: no user known for %s; record stays admin-owned",
                               context.session_identifier)
                return
            self._call(
                "PATCH", self._url("rest/data", record_id, "change-owner", user_id),
                "change record owner",
            )
        except ExportError as exc:
            logger.warning("cdcs: record %s stays admin-owned: %s", record_id, exc)

    def _find_or_create_user(self, context: ExportContext) -> str | None:
        username = session_user(context)
        # The email and names only the reservation knows.
        event = context.reservation_event
        email = event.user_email if event else None
        if not username:
            return None
        call = "list users"
        users = self._call("GET", self._url("rest/user/"), call)
        if not isinstance(users, list):
            raise UnexpectedAnswer(f"cdcs: {call}: unexpected answer: expected a list of users")
        for key, wanted in (("username", username), ("email", email)):
            for user in users:
                if wanted and isinstance(user, dict) and user.get(key) == wanted:
                    return str(user["id"])
        call = "create user"
        created = self._call(
            "POST", self._url("rest/user/"), call,
            json_body={
                "username": username,
                "email": email or "",
                "first_name": (event.user_first_name if event else None) or "",
                "last_name": (event.user_last_name if event else None) or "",
                # Users sign in through the site's SSO; this password is never used.
                "password": secrets.token_urlsafe(24),
            },
        )
        if not isinstance(created, dict) or "id" not in created:
            raise UnexpectedAnswer(f"cdcs: {call}: unexpected answer: no user id")
        return str(created["id"])

    def _fetch_template_id(self) -> str:
        call = "look up template"
        answer = self._call("GET", self._url("rest/template-version-manager/global/"), call)
        try:
            return str(answer[0]["current"])
        except (LookupError, TypeError):
            raise UnexpectedAnswer(
                f"cdcs: {call}: unexpected answer: no current template version"
            ) from None

    def _call(self, method: str, url: str, call: str, json_body: Any = None) -> Any:
        """One authenticated call; the parsed JSON answer (None when there is no body)."""
        # The token goes only to NX_CDCS_URL's origin: a query's next-page link
        # may name another host, or plain http behind a TLS proxy.
        root = httpx.URL(self.settings.url)
        target = root.join(url)
        require_same_origin(target, root, destination=self.name, call=call, what="link to")
        response = request(
            method, str(target), destination=self.name, call=call, headers=self._headers(),
            json_body=json_body, settings=self.http, url_setting=URL_SETTING,
        )
        if not response.content:
            return None
        return parse_json(response, destination=self.name, call=call)

    def _url(self, *parts: str) -> str:
        return join_url(self.settings.url, *parts)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.settings.token.get_secret_value()}"}

    def _success(
        self, record_id: str, title: str, found_existing: bool = False,
        supersedes: str | None = None,
    ) -> ExportResult:  # fmt: skip
        metadata: dict[str, Any] = {"title": title, "found_existing": found_existing}
        if supersedes:
            metadata["supersedes"] = supersedes
        return ExportResult(
            success=True,
            destination_name=self.name,
            record_id=record_id,
            record_url=f"{self._url('data')}?id={record_id}",
            metadata=metadata,
        )


def _page_of(answer: Any) -> tuple[list[Any], str | None]:
    """The records of a query answer and the next page's URL (plain or paged)."""
    if isinstance(answer, list):
        return answer, None
    if isinstance(answer, dict) and isinstance(answer.get("results"), list):
        next_url = answer.get("next")
        return answer["results"], next_url if isinstance(next_url, str) else None
    raise UnexpectedAnswer("cdcs: find record by title: unexpected answer: not a list of records")
