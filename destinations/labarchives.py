"""LabArchives: one notebook page per session, with a summary and the XML.

Keeps NexusLIMS's layout (``NexusLIMS Records/<instrument>/`` and a page
``YYYY-MM-DD — <session id>``), its summary entry with the CDCS link, and the
XML attached with the caption ``NexusLIMS XML record``. Preview images are
embedded in the summary entry as data URIs, so the page shows them inline and
the summary stays one entry; ``destinations.previews`` reads them, only from
``NX_DATA_PATH``. The session details come from
``destinations.session_summary``; every call goes through the signed, spaced
client of ``destinations.labarchives_client``.

Given a Redis client (``use_redis``), the spacing holds across every worker
process and host, and the folder ids are shared, so a record costs three calls
once its folders exist. A record whose first call would wait longer than
``NX_LABARCHIVES_MAX_CALL_WAIT`` keeps its slots and asks to be retried near
them, handing its worker thread to other destinations meanwhile.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from html import escape
from typing import Any

import httpx
from redis import RedisError

from destinations.confined import ConfinedReadError, read_record
from destinations.contract import ExportContext, ExportResult
from destinations.errors import ExportError
from destinations.http import HttpSettings, validation_message
from destinations.labarchives_client import (
    LabArchivesClient,
    LabArchivesSettings,
    NodeMissing,
    process_limiter,
    required_text,
)
from destinations.labarchives_folders import (
    FolderCache,
    MemoryFolderCache,
    RedisFolderCache,
    account_hash,
)
from destinations.previews import Preview, read_previews
from destinations.rate_limit import CallLimiter, RedisCallLimiter
from destinations.service import failed, guarded_export, missing_setting
from destinations.session_summary import session_summary_html

logger = logging.getLogger(__name__)

ROOT_FOLDER = "NexusLIMS Records"
XML_CAPTION = "NexusLIMS XML record"
INBOX = "0"


def page_name(context: ExportContext) -> str:
    """NexusLIMS's page name: ``YYYY-MM-DD — <session id>`` (em dash)."""
    return f"{context.dt_from:%Y-%m-%d} \u2014 {context.session_identifier}"


def notebook_base_url(api_url: str) -> str:
    """The notebook web address behind an API base URL."""
    url = httpx.URL(api_url)
    path = url.path.rstrip("/")
    path = path.removesuffix("/api")
    host = "mynotebook.labarchives.com" if url.host == "api.labarchives.com" else url.host
    return str(url.copy_with(host=host, path=path or "/")).rstrip("/")


@dataclass
class _PageState:
    """What a notebook already holds for a session."""

    page_id: str | None = None
    text_eid: str | None = None
    attachment_eid: str | None = None


class LabArchivesDestination:
    """Write a session page to a LabArchives notebook (or the Inbox)."""

    name = "labarchives"
    priority = 90
    depends_on = ("cdcs",)

    def __init__(
        self, limiter: CallLimiter | None = None, folders: FolderCache | None = None
    ) -> None:
        self.settings = LabArchivesSettings()
        self.client = LabArchivesClient(
            self.settings,
            HttpSettings(),
            limiter or process_limiter(self.settings.min_call_interval),
        )
        self.folders: FolderCache = folders or MemoryFolderCache(
            self.settings.folder_cache_seconds
        )

    @property
    def limiter(self) -> CallLimiter:
        """What spaces this destination's calls (per process, or through Redis)."""
        return self.client.limiter

    def use_redis(self, client: Any) -> None:
        """Space calls and share folder ids through Redis, across every worker and host.

        The worker calls this with its result backend's client; without it the
        spacing holds within this process only.
        """
        account = account_hash(self.settings.url, self.settings.access_key_id.get_secret_value())
        self.client.limiter = RedisCallLimiter(
            client,
            f"nxexport:labarchives:calls:{account}",
            self.settings.min_call_interval,
            self.settings.max_call_wait,
        )
        self.folders = RedisFolderCache(client, account, self.settings.folder_cache_seconds)

    @property
    def enabled(self) -> bool:
        """Configured when the key id, password, user id and URL are set."""
        return all(value for _, value in self._required())

    def validate_config(self) -> tuple[bool, str | None]:
        """Check the settings and the signature by reading the user's info."""
        missing = missing_setting(self.name, self._required())
        if missing:
            return False, missing
        try:
            answer = self.client.call("GET", "users", "user_info_via_id", "read user info", {})
        except ExportError as exc:
            return False, validation_message(exc)
        if answer.find(".//id") is None:
            return False, "labarchives: read user info: unexpected answer: no user id"
        return True, None

    def export(self, context: ExportContext) -> ExportResult:
        """Write the session page; raise only ``TransientExportError``."""
        return guarded_export(
            self.name,
            context,
            self._export,
            transient={RedisError: "the shared call limiter (Redis) is unavailable"},
        )

    def find_existing(self, context: ExportContext) -> ExportResult | None:
        """The summary entry an earlier attempt wrote for this session, if any.

        The Inbox cannot be searched, so without a notebook id this finds nothing.
        """
        nbid = self.settings.notebook_id
        if not nbid:
            return None
        folder = self._find_node(nbid, "0", ROOT_FOLDER, is_page=False)
        instrument = folder and self._find_node(nbid, folder, context.instrument_pid, False)
        if not instrument:
            return None
        state = self._page_state(nbid, instrument, context)
        if state.page_id is None or state.text_eid is None:
            return None
        return self._success(nbid, state, found_existing=True)

    def _export(self, context: ExportContext) -> ExportResult:
        try:
            xml = read_record(context.xml_file_path)
        except ConfinedReadError as exc:
            return self._failure(f"labarchives: {exc}")
        nbid = self.settings.notebook_id
        retry = context.metadata.get("export_attempt", 1) > 1
        job = context.metadata.get("export_job_id")
        calls = self._expected_calls(nbid, context, retry)
        with self.client.reserved(calls, str(job) if job else None) as slots:
            if not nbid:
                return self._export_to_inbox(context, xml, retry)
            # An attempt that was only deferred made no call: nothing to look up.
            return self._export_to_notebook(context, xml, nbid, retry and not slots.resumed)

    def _expected_calls(self, nbid: str | None, context: ExportContext, retry: bool) -> int:
        """The calls this export will make, so their slots are reserved together."""
        if not nbid:
            return 2
        lookups = 2 if retry else 0
        if self.folders.get(nbid, (ROOT_FOLDER, context.instrument_pid)) is None:
            lookups += 1 if self.folders.get(nbid, (ROOT_FOLDER,)) else 2
        return 3 + lookups

    def _export_to_inbox(self, context: ExportContext, xml: bytes, retry: bool) -> ExportResult:
        if retry:
            logger.warning("labarchives: the Inbox cannot be searched; %s may appear twice",
                           context.session_identifier)
        state = _PageState(page_id=INBOX)
        state.text_eid = self._add_entry(INBOX, INBOX, summary_html(context))
        state.attachment_eid = self._attach(INBOX, INBOX, context.xml_file_path.name, xml)
        return self._success(INBOX, state)

    def _export_to_notebook(
        self, context: ExportContext, xml: bytes, nbid: str, look_up: bool
    ) -> ExportResult:
        state, page_id, found = self._session_page(context, nbid, look_up)
        if state.text_eid is None:
            state.text_eid = self._add_entry(nbid, page_id, summary_html(context))
        if state.attachment_eid is None:
            state.attachment_eid = self._attach(nbid, page_id, context.xml_file_path.name, xml)
        return self._success(nbid, state, found_existing=found)

    def _session_page(
        self, context: ExportContext, nbid: str, look_up: bool
    ) -> tuple[_PageState, str, bool]:
        """The session's page (found on a retry, else created) and whether it was found."""
        try:
            return self._find_or_insert_page(context, nbid, look_up)
        except NodeMissing:
            # A remembered folder was deleted or moved: find the folders again, once.
            self.folders.drop(nbid)
            return self._find_or_insert_page(context, nbid, look_up)

    def _find_or_insert_page(
        self, context: ExportContext, nbid: str, look_up: bool
    ) -> tuple[_PageState, str, bool]:
        instrument = self._instrument_folder(nbid, context.instrument_pid)
        state = self._page_state(nbid, instrument, context) if look_up else _PageState()
        if state.page_id is not None:
            return state, state.page_id, True
        state.page_id = self._insert_node(nbid, instrument, page_name(context), is_folder=False)
        return state, state.page_id, False

    def _instrument_folder(self, nbid: str, instrument_pid: str) -> str:
        """The instrument folder's tree id: remembered, found, or created."""
        path = (ROOT_FOLDER, instrument_pid)
        cached = self.folders.get(nbid, path)
        if cached:
            return cached
        # Two workers meeting a new instrument at once must not both create its folder.
        with self.folders.creating(nbid):
            return self.folders.get(nbid, path) or self._find_or_create_folders(nbid, path)

    def _find_or_create_folders(self, nbid: str, path: tuple[str, str]) -> str:
        root = self.folders.get(nbid, (ROOT_FOLDER,))
        root_created = False
        if root is None:
            root, root_created = self._ensure_folder(nbid, "0", ROOT_FOLDER)
            self.folders.put(nbid, (ROOT_FOLDER,), root)
        instrument, _ = self._ensure_folder(nbid, root, path[1], known_empty=root_created)
        self.folders.put(nbid, path, instrument)
        return instrument

    def _page_state(self, nbid: str, instrument: str, context: ExportContext) -> _PageState:
        state = _PageState(page_id=self._find_node(nbid, instrument, page_name(context), True))
        if state.page_id is None:
            return state
        answer = self.client.call("GET", "tree_tools", "get_entries_for_page", "list page entries",
                            {"nbid": nbid, "page_tree_id": state.page_id, "entry_data": "false"})
        for entry in answer.iter("entry"):
            eid = entry.findtext("eid")
            part_type = (entry.findtext("part-type") or "").lower()
            if eid and part_type == "text entry" and state.text_eid is None:
                state.text_eid = eid
            elif eid and "attachment" in part_type and state.attachment_eid is None:
                state.attachment_eid = eid
        return state

    def _ensure_folder(
        self, nbid: str, parent: str, text: str, known_empty: bool = False
    ) -> tuple[str, bool]:
        """The folder's tree id and whether it was created (a new folder has no children)."""
        existing = None if known_empty else self._find_node(nbid, parent, text, is_page=False)
        if existing:
            return existing, False
        return self._insert_node(nbid, parent, text, is_folder=True), True

    def _find_node(self, nbid: str, parent: str, text: str, is_page: bool) -> str | None:
        answer = self.client.call("GET", "tree_tools", "get_tree_level", "list notebook level",
                            {"nbid": nbid, "parent_tree_id": parent})
        for node in answer.iter("level-node"):
            node_is_page = (node.findtext("is-page") or "").strip().lower() == "true"
            if node.findtext("display-text") == text and node_is_page == is_page:
                tree_id = node.findtext("tree-id")
                if tree_id:
                    return tree_id
        return None

    def _insert_node(self, nbid: str, parent: str, text: str, is_folder: bool) -> str:
        call = "create folder" if is_folder else "create page"
        answer = self.client.call("GET", "tree_tools", "insert_node", call, {
            "nbid": nbid, "parent_tree_id": parent, "display_text": text,
            "is_folder": "true" if is_folder else "false",
        })
        return required_text(answer, "tree-id", call)

    def _add_entry(self, nbid: str, page_id: str, html: str) -> str:
        call = "add summary entry"
        answer = self.client.call("POST", "entries", "add_entry", call, {}, data={
            "nbid": nbid, "pid": page_id, "entry_data": html, "part_type": "text entry",
        })
        return required_text(answer, "eid", call)

    def _attach(self, nbid: str, page_id: str, filename: str, content: bytes) -> str:
        call = "attach XML record"
        answer = self.client.call(
            "POST", "entries", "add_attachment", call,
            {"nbid": nbid, "pid": page_id, "filename": filename, "caption": XML_CAPTION},
            content=content,
        )
        return required_text(answer, "eid", call)

    def _required(self) -> list[tuple[str, str]]:
        return [
            ("NX_LABARCHIVES_URL", self.settings.url),
            ("NX_LABARCHIVES_ACCESS_KEY_ID", self.settings.access_key_id.get_secret_value()),
            ("NX_LABARCHIVES_ACCESS_PASSWORD", self.settings.access_password.get_secret_value()),
            ("NX_LABARCHIVES_USER_ID", self.settings.user_id),
        ]

    def _success(self, nbid: str, state: _PageState, found_existing: bool = False) -> ExportResult:
        base = notebook_base_url(self.settings.url)
        url = base if nbid == INBOX else f"{base}/#/{nbid}/{state.page_id}"
        return ExportResult(
            success=True,
            destination_name=self.name,
            record_id=state.text_eid,
            record_url=url,
            metadata={
                "nbid": nbid,
                "page_tree_id": state.page_id,
                "attachment_eid": state.attachment_eid,
                "found_existing": found_existing,
            },
        )

    def _failure(self, message: str) -> ExportResult:
        return failed(self.name, message)


def summary_html(context: ExportContext) -> str:
    """The summary entry: session details, the CDCS link and the preview images."""
    parts = session_summary_html(context, "NexusLIMS Session")
    # NexusLIMS keeps previews aligned with files; a file without one has an empty entry.
    previews, notes = read_previews(p for a in context.activities for p in a.previews)
    if previews:
        parts += ["<h3>Previews</h3>", *(_preview_img(preview) for preview in previews)]
    parts += [f"<p><em>{escape(note)}</em></p>" for note in notes]
    parts.append(f"<p>The XML record is attached below ({escape(XML_CAPTION)}).</p>")
    return "\n".join(parts)


def _preview_img(preview: Preview) -> str:
    """An ``<img>`` with the preview inlined."""
    encoded = base64.b64encode(preview.data).decode("ascii")
    return f'<p><img src="data:{preview.mime};base64,{encoded}" alt="{escape(preview.name)}"></p>'
