"""A webhook receiver on 127.0.0.1 that records every delivery and can refuse some."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request, Response

from worker.sandbox.server import ServerThread


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    max_age: float = 300,
) -> bool:
    """What a LIMS does: HMAC-SHA256 over ``b"<timestamp>." + body``, recent timestamps only."""
    timestamp = headers.get("X-NexusLIMS-Timestamp", "")
    signature = headers.get("X-NexusLIMS-Signature", "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > max_age:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(signature, "sha256=" + expected.hexdigest())


class WebhookReceiver:
    """Answers 503 to the first delivery of jobs whose session id contains ``refuse_marker``."""

    def __init__(self, refuse_marker: str = "refuse-first-webhook") -> None:
        self.refuse_marker = refuse_marker
        self.deliveries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.server = ServerThread(self.app)

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/nexuslims"

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        summary = json.loads(body)
        with self._lock:
            earlier = [d for d in self.deliveries if d["summary"]["id"] == summary["id"]]
            self.deliveries.append(
                {"headers": Headers(request.headers), "body": body, "summary": summary}
            )
        refuse = self.refuse_marker in str(summary.get("session_identifier")) and not earlier
        return Response(status=503 if refuse else 204)(environ, start_response)

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for d in self.deliveries if d["summary"]["id"] == job_id]
