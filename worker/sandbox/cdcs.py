"""A fake CDCS speaking the REST calls NexusLIMS uses.

Checks ``Authorization: Token <token>`` (401 otherwise), the template id and
the record's root element, and keeps what was created in ``records`` and
``users``.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml.ElementTree import fromstring
from werkzeug.wrappers import Request, Response

from worker.sandbox.server import STAND_IN_NOTE, FakeService, html_page

NEXUS_ROOT = "{https://data.nist.gov/od/dm/nexus/experiment/v1.0}Experiment"


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


class FakeCDCS(FakeService):
    """Fake CDCS.

    Parameters
    ----------
    token
        The accepted API token (random when omitted).
    template_id
        The current template version id.
    workspaces
        The readable workspaces (first = the public one); empty = none.
    superuser
        Whether the token may list and create users (403 otherwise).
    paged_queries
        Answer record queries in the paged ``{count, next, results}`` form.
        Either way each record comes with its ``xml_content``, as CDCS answers.

    Attributes
    ----------
    records
        Created records by id: ``title``, ``xml_content``, ``template``,
        ``workspace``, ``owner``.
    users
        Known users: ``id``, ``username``, ``email``, ``first_name``, ``last_name``.
    """

    def __init__(
        self,
        token: str | None = None,
        template_id: str = "tmpl-nexus-1",
        workspaces: list[str] | None = None,
        superuser: bool = True,
        paged_queries: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.token = token or f"cdcs-{secrets.token_hex(12)}"
        self.template_id = template_id
        self.workspaces = ["ws-public"] if workspaces is None else workspaces
        self.superuser = superuser
        self.paged_queries = paged_queries
        self.records: dict[str, dict[str, Any]] = {}
        self.users: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    @property
    def root_url(self) -> str:
        """The value for ``NX_CDCS_URL`` (with the trailing slash NexusLIMS uses)."""
        return f"{self.url}/"

    def check_auth(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Token {self.token}":
            return _json({"detail": "Invalid token."}, 401)
        return None

    def route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if (method, path) == ("GET", "/rest/template-version-manager/global/"):
            return _json([{
                "id": "tvm-1", "title": "Nexus Experiment", "is_disabled": False,
                "current": self.template_id, "versions": [self.template_id],
            }])
        if (method, path) == ("GET", "/rest/workspace/read_access/"):
            return _json([{"id": w, "title": w, "is_public": True} for w in self.workspaces])
        if (method, path) == ("POST", "/rest/data/"):
            return self._create_record(request)
        if (method, path) == ("POST", "/rest/data/query/"):
            return self._query(request)
        if path == "/rest/user/" and method in ("GET", "POST"):
            return self._user_call(request)
        match = re.fullmatch(r"/rest/data/([^/]+)/(assign|change-owner)/([^/]+)", path)
        if method == "PATCH" and match:
            return self._patch_record(*match.groups())
        return _json({"detail": "Not found."}, 404)

    def browse(self, request: Request) -> Response | None:
        if request.path not in ("/", "/data"):
            return None
        with self._lock:
            records = [r for r in self.records.values()
                       if request.path == "/" or r["id"] == request.args.get("id")]  # fmt: skip
        items = [(f"{r['title']} (id {r['id']}, workspace {r['workspace']})", r["xml_content"])
                 for r in records]  # fmt: skip
        return html_page(f"CDCS stand-in: {len(items)} record(s)", items, STAND_IN_NOTE)

    def _create_record(self, request: Request) -> Response:
        self.create_delay()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not {"template", "title", "xml_content"} <= body.keys():
            return _json({"message": "template, title and xml_content are required"}, 400)
        if body["template"] != self.template_id:
            return _json({"message": f"template {body['template']} does not exist"}, 400)
        try:
            root = fromstring(body["xml_content"].encode())
        except (ParseError, AttributeError):
            return _json({"message": "xml_content is not well-formed XML"}, 400)
        if root.tag != NEXUS_ROOT:
            return _json({"message": f"root element {root.tag} does not match the template"}, 400)
        with self._lock:
            record_id = f"{next(self._ids):024x}"
            self.records[record_id] = {
                "id": record_id, "title": body["title"], "xml_content": body["xml_content"],
                "template": body["template"], "workspace": None, "owner": "1",
            }
        return _json({"id": record_id, "title": body["title"], "template": self.template_id}, 201)

    def _query(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "query" not in body:
            return _json({"message": "query is required"}, 400)
        templates = {t.get("id") for t in body.get("templates", []) if isinstance(t, dict)}
        with self._lock:
            found = [
                {k: r[k] for k in ("id", "title", "template", "xml_content")}
                for r in self.records.values()
                if ("title" not in body or r["title"] == body["title"])
                and (not templates or r["template"] in templates)
            ]
        if self.paged_queries:
            return _json({"count": len(found), "next": None, "previous": None, "results": found})
        return _json(found)

    def _user_call(self, request: Request) -> Response:
        if not self.superuser:
            return _json({"detail": "You do not have permission to perform this action."}, 403)
        if request.method == "GET":
            with self._lock:
                return _json(list(self.users))
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not body.get("username") or not body.get("password"):
            return _json({"message": "username and password are required"}, 400)
        with self._lock:
            user = {
                "id": str(100 + len(self.users)),
                **{k: body.get(k, "") for k in ("username", "email", "first_name", "last_name")},
            }
            self.users.append(user)
        return _json(user, 201)

    def _patch_record(self, record_id: str, action: str, target: str) -> Response:
        with self._lock:
            record = self.records.get(record_id)
            if record is None:
                return _json({"detail": "Data not found."}, 404)
            if action == "assign":
                if target not in self.workspaces:
                    return _json({"detail": "Workspace not found."}, 404)
                record["workspace"] = target
            else:
                if not any(u["id"] == target for u in self.users):
                    return _json({"detail": "User not found."}, 404)
                record["owner"] = target
        return _json({})
