"""A fake LabArchives speaking the signed tree and entry calls.

Recomputes every signature (base64 HMAC-SHA512 of akid + method + expires,
keyed by the access password), checks that ``expires`` is a fresh Unix time in
milliseconds, and answers in XML with ``<error>`` elements the way the service
does (code 4506 for a refused signature or key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import time
from typing import Any
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from worker.sandbox.server import STAND_IN_NOTE, FakeService, html_page

INBOX = "0"


def expected_signature(akid: str, password: str, method: str, expires: str) -> str:
    """The signature the real service expects."""
    digest = hmac.new(password.encode(), f"{akid}{method}{expires}".encode(), hashlib.sha512)
    return base64.b64encode(digest.digest()).decode()


def _xml(body: str, status: int = 200) -> Response:
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?>\n{body}', status=status, content_type="text/xml"
    )


class FakeLabArchives(FakeService):
    """Fake LabArchives API (under ``/api``).

    Parameters
    ----------
    akid, password, uid
        The accepted access key id, access password and user id (random when omitted).
    notebooks
        Notebook ids the user may write to.
    legacy_errors
        Use the older ``<code>``/``<msg>`` error element names.
    max_clock_skew_ms
        How far ``expires`` may be from now.

    Attributes
    ----------
    nodes
        Tree nodes by tree id: ``nbid``, ``parent``, ``display_text``, ``is_folder``.
    entries
        Entries in creation order: ``eid``, ``nbid``, ``pid``, ``part_type``,
        ``entry_data`` (text entries), ``filename``, ``caption``, ``content`` (attachments).
    signature_failures
        Methods whose signature, key, user or ``expires`` was refused.
    """

    malformed_body = '<?xml version="1.0"?><tree-tools><node><tree-id>12'
    malformed_content_type = "text/xml"

    def __init__(
        self,
        akid: str | None = None,
        password: str | None = None,
        uid: str | None = None,
        notebooks: tuple[str, ...] = ("nb-1",),
        legacy_errors: bool = False,
        max_clock_skew_ms: int = 120_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.akid = akid or f"akid_{secrets.token_hex(8)}"
        self.password = password or secrets.token_hex(16)
        self.uid = uid or f"uid-{secrets.token_hex(10)}"
        self.notebooks = set(notebooks)
        self.legacy_errors = legacy_errors
        self.max_clock_skew_ms = max_clock_skew_ms
        self.nodes: dict[str, dict[str, Any]] = {}
        self.entries: list[dict[str, Any]] = []
        self.signature_failures: list[str] = []
        self._tree_ids = itertools.count(100)
        self._eids = itertools.count(5000)

    @property
    def api_url(self) -> str:
        """The value for ``NX_LABARCHIVES_URL``."""
        return f"{self.url}/api"

    def error(self, code: int, description: str, status: int = 400) -> Response:
        """An ``<error>`` answer, in the configured (new or legacy) element names."""
        code_tag, text_tag = ("code", "msg") if self.legacy_errors else (
            "error-code", "error-description"
        )
        return _xml(
            f"<error><{code_tag}>{code}</{code_tag}>"
            f"<{text_tag}>{escape(description)}</{text_tag}></error>",
            status,
        )

    def children(self, nbid: str, parent: str) -> list[dict[str, Any]]:
        """The nodes directly under ``parent`` in notebook ``nbid``."""
        with self._lock:
            return [n for n in self.nodes.values() if n["nbid"] == nbid and n["parent"] == parent]

    def check_auth(self, request: Request) -> Response | None:
        method = request.path.rstrip("/").rsplit("/", 1)[-1]
        args = request.args
        problem = None
        if args.get("akid") != self.akid:
            problem = "The supplied akid is not valid"
        elif not args.get("expires", "").isdigit():
            problem = "expires must be the current time in milliseconds"
        elif abs(int(args["expires"]) - time.time() * 1000) > self.max_clock_skew_ms:
            problem = "The request has expired"
        elif not hmac.compare_digest(
            args.get("sig", ""),
            expected_signature(self.akid, self.password, method, args["expires"]),
        ):
            problem = "The supplied signature parameter was invalid"
        elif args.get("uid") != self.uid:
            problem = "The uid is not valid"
        if problem is None:
            return None
        with self._lock:
            self.signature_failures.append(method)
        return self.error(4506, problem, 401)

    def route(self, request: Request) -> Response:
        calls = {
            ("GET", "/api/users/user_info_via_id"): self._user_info,
            ("GET", "/api/tree_tools/get_tree_level"): self._tree_level,
            ("GET", "/api/tree_tools/insert_node"): self._insert_node,
            ("GET", "/api/tree_tools/get_entries_for_page"): self._entries_for_page,
            ("POST", "/api/entries/add_entry"): self._add_entry,
            ("POST", "/api/entries/add_attachment"): self._add_attachment,
        }
        handler = calls.get((request.method, request.path))
        if handler is None:
            return self.error(4999, f"Unknown call {request.method} {request.path}", 404)
        return handler(request)

    def _notebook_problem(self, nbid: str | None, allow_inbox: bool = False) -> Response | None:
        if not nbid:
            return self.error(4000, "nbid is required")
        if nbid in self.notebooks or (allow_inbox and nbid == INBOX):
            return None
        return self.error(4501, f"No access to notebook {nbid}", 403)

    def _user_info(self, request: Request) -> Response:
        books = "".join(f"<notebook><id>{escape(n)}</id></notebook>" for n in self.notebooks)
        return _xml(f"<users><id>{escape(self.uid)}</id><notebooks>{books}</notebooks></users>")

    def browse(self, request: Request) -> Response | None:
        # A page's address is the notebook's root with the page in its fragment.
        if request.path != "/":
            return None
        with self._lock:
            pages = [n for n in self.nodes.values() if not n["is_folder"]]
            items = [(f"{page['display_text']} (notebook {page['nbid']}, page {page['tree_id']})",
                      "\n".join(e.get("entry_data") or f"attached: {e['filename']}"
                                for e in self.entries if e["pid"] == page["tree_id"]))
                     for page in pages]  # fmt: skip
        return html_page(f"LabArchives stand-in: {len(items)} page(s)", items, STAND_IN_NOTE)

    def _tree_level(self, request: Request) -> Response:
        nbid = request.args.get("nbid", "")
        problem = self._notebook_problem(nbid)
        if problem:
            return problem
        nodes = "".join(
            f"<level-node><is-page type='boolean'>{str(not n['is_folder']).lower()}</is-page>"
            f"<tree-id>{n['tree_id']}</tree-id>"
            f"<display-text>{escape(n['display_text'])}</display-text></level-node>"
            for n in self.children(nbid, request.args.get("parent_tree_id", "0"))
        )
        return _xml(f"<tree-tools><level-nodes>{nodes}</level-nodes></tree-tools>")

    def _insert_node(self, request: Request) -> Response:
        self.create_delay()
        args = request.args
        problem = self._notebook_problem(args.get("nbid"))
        if problem:
            return problem
        if args.get("is_folder") not in ("true", "false") or not args.get("display_text"):
            return self.error(4000, "display_text and is_folder (true/false) are required")
        parent = args.get("parent_tree_id", "0")
        with self._lock:
            if parent != "0" and parent not in self.nodes:
                return self.error(4000, f"No tree node {parent}", 404)
            tree_id = str(next(self._tree_ids))
            self.nodes[tree_id] = {
                "tree_id": tree_id, "nbid": args["nbid"], "parent": parent,
                "display_text": args["display_text"], "is_folder": args["is_folder"] == "true",
            }
        return _xml(f"<tree-tools><node><tree-id>{tree_id}</tree-id></node></tree-tools>")

    def _page_problem(self, nbid: str | None, pid: str | None) -> Response | None:
        problem = self._notebook_problem(nbid, allow_inbox=True)
        if problem:
            return problem
        if nbid == INBOX and pid == INBOX:
            return None
        with self._lock:
            page = self.nodes.get(pid or "")
        if page is None or page["is_folder"] or page["nbid"] != nbid:
            return self.error(4000, f"No page {pid} in notebook {nbid}", 404)
        return None

    def _add_entry(self, request: Request) -> Response:
        self.create_delay()
        form = request.form
        problem = self._page_problem(form.get("nbid"), form.get("pid"))
        if problem:
            return problem
        if form.get("part_type") != "text entry" or "entry_data" not in form:
            return self.error(4000, "part_type 'text entry' and entry_data are required")
        return self._store({
            "nbid": form["nbid"], "pid": form["pid"], "part_type": "text entry",
            "entry_data": form["entry_data"],
        })

    def _add_attachment(self, request: Request) -> Response:
        self.create_delay()
        args = request.args
        problem = self._page_problem(args.get("nbid"), args.get("pid"))
        if problem:
            return problem
        if request.content_type != "application/octet-stream" or not args.get("filename"):
            return self.error(4000, "filename and an application/octet-stream body are required")
        return self._store({
            "nbid": args["nbid"], "pid": args["pid"], "part_type": "Attachment",
            "filename": args["filename"], "caption": args.get("caption", ""),
            "content": request.get_data(),
        })

    def _store(self, entry: dict[str, Any]) -> Response:
        with self._lock:
            entry["eid"] = str(next(self._eids))
            self.entries.append(entry)
        return _xml(f"<entries><entry><eid>{entry['eid']}</eid></entry></entries>")

    def _entries_for_page(self, request: Request) -> Response:
        args = request.args
        problem = self._page_problem(args.get("nbid"), args.get("page_tree_id"))
        if problem:
            return problem
        with self._lock:
            found = [e for e in self.entries if e["pid"] == args.get("page_tree_id")]
        body = "".join(
            f"<entry><eid>{e['eid']}</eid><part-type>{escape(e['part_type'])}</part-type></entry>"
            for e in found
        )
        return _xml(f"<tree-tools><entries>{body}</entries></tree-tools>")
