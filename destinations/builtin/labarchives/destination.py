"""LabArchives: one notebook page per session, with a summary and the XML.

Keeps NexusLIMS's layout (``NexusLIMS Records/<instrument>/`` and a page
``YYYY-MM-DD — <session id>``), its summary entry with the CDCS link, and the
XML attached with the caption ``NexusLIMS XML record``. Preview images are
embedded in the summary entry as data URIs, so the page shows them inline and
the summary stays one entry; ``destinations.files.previews`` reads them, only from
``NX_DATA_PATH``. The session details come from
``destinations.builtin.session_summary``; every call goes through the signed, spaced
client of ``destinations.builtin.labarchives.client``.

Given a Redis client (``use_redis``), the spacing holds across every worker
process and host, and the folder ids are shared, so a record costs three calls
once its folders exist. A record whose first call would wait longer than
``NX_LABARCHIVES_MAX_CALL_WAIT`` keeps its slots and asks to be retried near
them (``SlotsDeferredError``), handing its worker thread to other destinations
meanwhile; an export that ends any other way hands its kept slots back.

Every page and entry is recorded in the export's call log as soon as it exists
(the attachment under the record's checksum), so a later attempt adds only
what is missing, without searching; it looks the page or an entry up only when
the log says its create call went out without an answer.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from contextlib import AbstractContextManager, nullcontext
from html import escape
from typing import Any

import httpx
from redis import RedisError

from destinations.builtin.labarchives.client import (
    LabArchivesClient,
    LabArchivesSettings,
    NodeMissing,
    process_limiter,
)
from destinations.builtin.labarchives.folders import (
    FolderCache,
    MemoryFolderCache,
    RedisFolderCache,
    account_hash,
)
from destinations.builtin.labarchives.tree import XML_CAPTION, NotebookTree, PageState
from destinations.builtin.session_summary import session_summary_html
from destinations.contract import ExportContext, ExportResult
from destinations.errors import SlotsDeferredError
from destinations.files.previews import Preview, read_previews
from destinations.toolkit.http import HttpSettings
from destinations.toolkit.rate_limit import CallLimiter, CallSlots, RedisCallLimiter
from destinations.toolkit.resume import Resume
from destinations.toolkit.service import ServiceDestination, guarded_export, record_bytes

logger = logging.getLogger(__name__)

ROOT_FOLDER = "NexusLIMS Records"
# Two different "0"s of the API: the Inbox is notebook 0 (page 0), and the top of a
# notebook's tree is its folder 0.
INBOX = "0"
TREE_TOP = "0"


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


class LabArchivesDestination(ServiceDestination):
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
        self.tree = NotebookTree(self.client)
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

    def check_service(self) -> str | None:
        """Check the signature, then find or create the notebook's ``NexusLIMS Records``.

        With a notebook id the check finds or creates that folder: it proves the
        user may write to the notebook, and the first record of each instrument
        then needs one call fewer (its folder's lookup, not the root's).
        """
        answer = self.client.call("GET", "users", "user_info_via_id", "read user info", {})
        if answer.find(".//id") is None:
            return "labarchives: read user info: unexpected answer: no user id"
        if self.settings.notebook_id:
            try:
                self._root_folder(self.settings.notebook_id)
            except RedisError as exc:
                # The folder is then found by the first export; the settings themselves are fine.
                logger.warning(
                    "labarchives: could not remember the notebook's root folder: %r", exc
                )
        return None

    def _root_folder(self, nbid: str) -> str:
        """``NexusLIMS Records``'s tree id, found or created, and remembered for every worker."""
        with self.folders.creating(nbid):
            root, _ = self._ensure_folder(nbid, TREE_TOP, ROOT_FOLDER)
            self.folders.put(nbid, (ROOT_FOLDER,), root)
        return root

    def export(self, context: ExportContext) -> ExportResult:
        """Write the session page; raise only ``TransientExportError``."""
        job = context.metadata.get("export_job_id")
        try:
            return guarded_export(
                self.name,
                context,
                self._export,
                transient={RedisError: "the shared call limiter (Redis) is unavailable"},
            )
        except SlotsDeferredError:
            job = None  # the slots stay reserved for the retry
            raise
        finally:
            if job:
                self._hand_back(str(job))

    def _hand_back(self, job: str) -> None:
        """Give back slots kept for ``job``: it ended without coming back for them."""
        try:
            self.client.abandon(job)
        except RedisError as exc:
            logger.warning("labarchives: could not hand back the call slots of %s: %r", job, exc)

    def find_existing(self, context: ExportContext) -> ExportResult | None:
        """The summary entry an earlier attempt wrote for this session, if any.

        The Inbox cannot be searched, so without a notebook id this finds nothing.
        """
        nbid = self.settings.notebook_id
        if not nbid:
            return None
        folder = self.tree.find_node(nbid, TREE_TOP, ROOT_FOLDER, is_page=False)
        instrument = folder and self.tree.find_node(nbid, folder, context.instrument_pid, False)
        if not instrument:
            return None
        page_id = self.tree.find_node(nbid, instrument, page_name(context), True)
        state = self.tree.page_entries(nbid, page_id) if page_id else PageState()
        if state.page_id is None or state.text_eid is None:
            return None
        return self._success(nbid, state, found_existing=True)

    def prepare(self, context: ExportContext) -> dict[str, Any]:
        """Find or create the session's page (and its folders) while CDCS uploads.

        Only the entry, which links to the CDCS record, and the attachment then
        wait for CDCS. What this creates goes into the call log, where ``export``
        finds it, so nothing is created twice. The Inbox has no page to prepare.
        """
        nbid = self.settings.notebook_id
        if not nbid:
            return {}
        resume = Resume(context)
        job = context.metadata.get("export_job_id")
        calls = 0 if resume.done("page") is not None else 1 + int(resume.may_exist("page"))
        slots: AbstractContextManager[CallSlots | None] = (
            self.client.reserved(calls, str(job) if job else None) if calls else nullcontext()
        )
        with slots:
            page_id, found = self._session_page(context, nbid, resume)
        return {"page_id": page_id, "found_existing": found}

    def _export(self, context: ExportContext) -> ExportResult:
        xml = record_bytes(self.name, context)
        nbid = self.settings.notebook_id
        resume = Resume(context)
        xml_key = f"xml:{hashlib.sha256(xml).hexdigest()[:16]}"
        job = context.metadata.get("export_job_id")
        calls = self._expected_calls(nbid, context, resume, xml_key)
        # Nothing left to call when earlier attempts created it all.
        slots: AbstractContextManager[CallSlots | None] = (
            self.client.reserved(calls, str(job) if job else None) if calls else nullcontext()
        )
        with slots:
            if not nbid:
                return self._export_to_inbox(context, xml, resume, xml_key)
            return self._export_to_notebook(context, xml, nbid, resume, xml_key)

    def _expected_calls(
        self, nbid: str | None, context: ExportContext, resume: Resume, xml_key: str
    ) -> int:
        """The calls this export will make, so their slots are reserved together."""
        missing = [key for key in ("entry", xml_key) if resume.done(key) is None]
        if not nbid:
            return len(missing)
        calls = len(missing) + int(any(resume.may_exist(key) for key in missing))
        if resume.done("page") is None:
            calls += 1 + int(resume.may_exist("page"))
        # Not the folders: found or created once per instrument, by whichever export
        # comes first. Slots reserved for them would go unused by every other record
        # of a backlog; the rare calls beyond the reservation take the next free slots.
        return calls

    def _export_to_inbox(
        self, context: ExportContext, xml: bytes, resume: Resume, xml_key: str
    ) -> ExportResult:
        if resume.may_exist("entry") or resume.may_exist(xml_key):
            logger.warning("labarchives: the Inbox cannot be searched; %s may appear twice",
                           context.session_identifier)
        state = PageState(page_id=INBOX, text_eid=resume.done("entry"))
        found = state.text_eid is not None
        if state.text_eid is None:
            state.text_eid = resume.create(
                "entry", lambda: self.tree.add_entry(INBOX, INBOX, summary_html(context))
            )
        state.attachment_eid = resume.done(xml_key) or resume.create(
            xml_key, lambda: self.tree.attach(INBOX, INBOX, context.xml_file_path.name, xml)
        )
        return self._success(INBOX, state, found_existing=found)

    def _export_to_notebook(
        self, context: ExportContext, xml: bytes, nbid: str, resume: Resume, xml_key: str
    ) -> ExportResult:
        page_id, found = self._session_page(context, nbid, resume)
        state = PageState(page_id, resume.done("entry"), resume.done(xml_key))
        look_for_entry = state.text_eid is None and resume.may_exist("entry")
        look_for_xml = state.attachment_eid is None and resume.may_exist(xml_key)
        if look_for_entry or look_for_xml:
            listed = self.tree.page_entries(nbid, page_id)
            if look_for_entry and listed.text_eid:
                state.text_eid = resume.remember("entry", listed.text_eid)
            if look_for_xml and listed.attachment_eid:
                state.attachment_eid = resume.remember(xml_key, listed.attachment_eid)
        if state.text_eid is None:
            state.text_eid = resume.create(
                "entry", lambda: self.tree.add_entry(nbid, page_id, summary_html(context))
            )
        if state.attachment_eid is None:
            state.attachment_eid = resume.create(
                xml_key, lambda: self.tree.attach(nbid, page_id, context.xml_file_path.name, xml)
            )
        return self._success(nbid, state, found_existing=found)

    def _session_page(
        self, context: ExportContext, nbid: str, resume: Resume
    ) -> tuple[str, bool]:
        """The session's page id (logged, found, or created) and whether it existed."""
        logged = resume.done("page")
        if logged is not None:
            return logged, True
        try:
            return self._find_or_insert_page(context, nbid, resume)
        except NodeMissing:
            # A remembered folder was deleted or moved: find the folders again, once.
            self.folders.drop(nbid)
            return self._find_or_insert_page(context, nbid, resume)

    def _find_or_insert_page(
        self, context: ExportContext, nbid: str, resume: Resume
    ) -> tuple[str, bool]:
        instrument = self._instrument_folder(nbid, context.instrument_pid, resume)
        return resume.obtain(
            "page",
            lambda: self.tree.insert_node(nbid, instrument, page_name(context), is_folder=False),
            lambda: self.tree.find_node(nbid, instrument, page_name(context), is_page=True),
        )

    def _instrument_folder(self, nbid: str, instrument_pid: str, resume: Resume) -> str:
        """The instrument folder's tree id: remembered, found, or created."""
        path = (ROOT_FOLDER, instrument_pid)
        cached = self.folders.get(nbid, path)
        if cached:
            return cached
        # Two workers meeting a new instrument at once must not both create its folder.
        with self.folders.creating(nbid):
            return self.folders.get(nbid, path) or self._find_or_create_folders(
                nbid, path, resume
            )

    def _find_or_create_folders(self, nbid: str, path: tuple[str, str], resume: Resume) -> str:
        # Folders are shared by every record: found first (under a lock), and logged if created.
        root = self.folders.get(nbid, (ROOT_FOLDER,))
        root_created = False
        if root is None:
            root, root_created = self._ensure_folder(nbid, TREE_TOP, ROOT_FOLDER)
            if root_created:
                resume.remember(f"folder:{ROOT_FOLDER}", root)
            self.folders.put(nbid, (ROOT_FOLDER,), root)
        instrument, created = self._ensure_folder(nbid, root, path[1], known_empty=root_created)
        if created:
            resume.remember(f"folder:{ROOT_FOLDER}/{path[1]}", instrument)
        self.folders.put(nbid, path, instrument)
        return instrument

    def _ensure_folder(
        self, nbid: str, parent: str, text: str, known_empty: bool = False
    ) -> tuple[str, bool]:
        """The folder's tree id and whether it was created (a new folder has no children)."""
        existing = None if known_empty else self.tree.find_node(nbid, parent, text, is_page=False)
        if existing:
            return existing, False
        return self.tree.insert_node(nbid, parent, text, is_folder=True), True

    def required(self) -> list[tuple[str, str]]:
        return [
            ("NX_LABARCHIVES_URL", self.settings.url),
            ("NX_LABARCHIVES_ACCESS_KEY_ID", self.settings.access_key_id.get_secret_value()),
            ("NX_LABARCHIVES_ACCESS_PASSWORD", self.settings.access_password.get_secret_value()),
            ("NX_LABARCHIVES_USER_ID", self.settings.user_id),
        ]

    def _success(self, nbid: str, state: PageState, found_existing: bool = False) -> ExportResult:
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
