"""A fake eLabFTW speaking the API v2 experiment and upload calls.

Checks the raw ``Authorization: <key>`` header (401 otherwise, including for a
``Bearer`` prefix), the create body's shape, and answers reads the way eLabFTW
does: ``tags`` as ``"a|b"`` and ``metadata`` as a JSON string.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.sandbox.server import STAND_IN_NOTE, FakeService, html_page

API = "/api/v2/experiments"


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def _error(status: int, description: str) -> Response:
    messages = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
    return _json(
        {"code": status, "message": messages.get(status, "Error"), "description": description},
        status,
    )


class FakeELabFTW(FakeService):
    """Fake eLabFTW.

    Parameters
    ----------
    api_key
        The accepted key (random, eLabFTW-shaped, when omitted).

    Attributes
    ----------
    experiments
        Created experiments by id: ``title``, ``body``, ``tags`` (list),
        ``metadata`` (dict), ``category``, ``status``, ``content_type``, ``uploads``.
    uploads
        Every upload: ``id``, ``experiment_id``, ``real_name``, ``comment``, ``content``.
    """

    malformed_body = '{"id": 12, "title": '

    def __init__(self, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.api_key = api_key or f"7-{secrets.token_hex(40)}"
        self.experiments: dict[int, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self._experiment_ids = itertools.count(1)
        self._upload_ids = itertools.count(1)

    def check_auth(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") != self.api_key:
            return _error(401, "No corresponding API key found!")
        return None

    def route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == API and method == "POST":
            return self._create(request)
        if path == API and method == "GET":
            return self._list(request)
        match = re.fullmatch(rf"{API}/(\d+)(/uploads)?", path)
        if not match:
            return _error(404, "Nothing to show with this id")
        experiment_id = int(match.group(1))
        with self._lock:
            experiment = self.experiments.get(experiment_id)
        if experiment is None:
            return _error(404, "Nothing to show with this id")
        if match.group(2) and method == "POST":
            return self._upload(request, experiment)
        if not match.group(2) and method == "GET":
            return _json(self._as_read(experiment))
        if not match.group(2) and method == "PATCH":
            with self._lock:
                experiment.update(request.get_json(silent=True) or {})
            return _json(self._as_read(experiment))
        if not match.group(2) and method == "DELETE":
            with self._lock:
                del self.experiments[experiment_id]
            return Response(status=204)
        return _error(400, "Unsupported call")

    def browse(self, request: Request) -> Response | None:
        if request.path not in ("/", "/experiments.php"):
            return None
        with self._lock:
            shown = [e for e in self.experiments.values()
                     if request.path == "/" or str(e["id"]) == request.args.get("id")]  # fmt: skip
            items = [(f"{e['title']} (experiment {e['id']})",
                      "\n".join([f"tags: {', '.join(e['tags'])}",
                                  *(f"attached: {u['real_name']}" for u in e["uploads"]),
                                  "", e["body"]]))
                     for e in shown]  # fmt: skip
        return html_page(f"eLabFTW stand-in: {len(items)} experiment(s)", items, STAND_IN_NOTE)

    def _create(self, request: Request) -> Response:
        self.create_delay()
        body = request.get_json(silent=True)
        problem = _create_problem(body)
        if problem:
            return _error(400, problem)
        assert isinstance(body, dict)
        with self._lock:
            experiment_id = next(self._experiment_ids)
            self.experiments[experiment_id] = {
                "id": experiment_id,
                "title": body.get("title", "Untitled"),
                "body": body.get("body", ""),
                "tags": list(body.get("tags", [])),
                "metadata": body.get("metadata", {}),
                "category": body.get("category"),
                "status": body.get("status"),
                "content_type": body.get("content_type", 1),
                "uploads": [],
            }
        location = f"{request.host_url.rstrip('/')}{API}/{experiment_id}"
        return Response(status=201, headers={"Location": location})

    def _upload(self, request: Request, experiment: dict[str, Any]) -> Response:
        self.create_delay()
        file = request.files.get("file")
        if file is None or not file.filename:
            return _error(400, "No file was uploaded (multipart field 'file')")
        with self._lock:
            upload = {
                "id": next(self._upload_ids),
                "experiment_id": experiment["id"],
                "real_name": file.filename,
                "comment": request.form.get("comment", ""),
                "content": file.read(),
            }
            self.uploads.append(upload)
            experiment["uploads"].append(upload)
        location = f"{request.host_url.rstrip('/')}{API}/{experiment['id']}/uploads/{upload['id']}"
        return Response(status=201, headers={"Location": location})

    def _list(self, request: Request) -> Response:
        try:
            limit = int(request.args.get("limit", "15"))
            offset = int(request.args.get("offset", "0"))
        except ValueError:
            return _error(400, "limit and offset must be integers")
        text = request.args.get("q", "")
        with self._lock:
            found = [
                self._as_read(e) for e in self.experiments.values()
                if not text or any(text in part for part in (e["title"], e["body"], *e["tags"]))
            ]
        return _json(found[offset:offset + limit])

    def _as_read(self, experiment: dict[str, Any]) -> dict[str, Any]:
        return {
            **{k: v for k, v in experiment.items() if k != "uploads"},
            "tags": "|".join(experiment["tags"]),
            "metadata": json.dumps(experiment["metadata"]),
            "uploads": [
                {k: v for k, v in u.items() if k != "content"} for u in experiment["uploads"]
            ],
        }


def _create_problem(body: Any) -> str | None:
    """Why a create body is refused, or None."""
    if not isinstance(body, dict):
        return "The body must be a JSON object"
    if "title" in body and not isinstance(body["title"], str):
        return "title must be a string"
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return "tags must be a list of strings"
    if not isinstance(body.get("metadata", {}), dict):
        return "metadata must be an object"
    if body.get("content_type", 1) not in (1, 2):
        return "content_type must be 1 (HTML) or 2 (Markdown)"
    for key in ("category", "status"):
        if key in body and not isinstance(body[key], int):
            return f"{key} must be an integer"
    return None
