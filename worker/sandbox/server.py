"""Run a fake service on loopback, and what all fakes share.

``ServerThread`` serves any WSGI app on 127.0.0.1 from a daemon thread.
``FakeService`` is the base of the fakes: it logs every request, rejects ``//``
in paths, and plays back injected failures (statuses, HTML error pages,
malformed bodies, stalls, dropped connections, redirects) before handing the
request to the subclass. Nothing here depends on pytest, so benchmarks can
start a fake from a plain script.
"""

from __future__ import annotations

import html
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _QuietHandler(WSGIRequestHandler):
    """Passes the raw request line to the app; no access log (query strings carry signatures).

    The standard library folds a leading ``//`` in the path into ``/`` before
    WSGI sees it; the raw line keeps it so the fakes can refuse it.
    """

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        environ["fake.request_line"] = self.requestline
        return environ

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ServerThread:
    """A WSGI app served on ``host:port`` (port 0 = any free one) from a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Bind and start serving; returns self."""
        self._server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_address[1]
        # A short poll interval makes stop() quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fake-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class LoggedRequest:
    """One request a fake received."""

    time: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int | None = None


@dataclass
class Failure:
    """One injected misbehaviour, played for the next matching request."""

    kind: str
    on: str | None = None
    status: int = 503
    body: str = ""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class _DropConnection(Exception):
    """Raised after the action is done to cut the connection without an answer."""


def html_page(title: str, items: Iterable[tuple[str, str]], note: str = "") -> Response:
    """A plain page of ``(heading, text)`` items, every value escaped, for a browser."""
    body = "".join(
        f"<h2>{html.escape(heading)}</h2><pre>{html.escape(text)}</pre>" for heading, text in items
    )
    return Response(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>{body}"
        f"</body></html>",
        content_type="text/html; charset=utf-8",
    )


STAND_IN_NOTE = "A local stand-in of the service, not the service itself."


HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>{status} Error</title></head>"
    "<body><h1>{status} Error</h1><p>The server encountered an error.</p></body></html>"
)


class FakeService:
    """Base of the fake services: logging, failure injection, lifecycle.

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free port.

    Attributes
    ----------
    requests
        Every request received, in order (``time``, ``method``, ``path``, ...).
    double_slash_paths
        Request paths that contained ``//`` (answered 400).
    create_latency
        Seconds every create call waits before acting.
    redirect_to
        When set, every request is answered ``307`` to this base URL plus its path.
    """

    #: Body and type of a "malformed answer" (subclasses use their own format).
    malformed_body = '{"id": '
    malformed_content_type = "application/json"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = ServerThread(self, host, port)
        self.requests: list[LoggedRequest] = []
        self.double_slash_paths: list[str] = []
        self.create_latency = 0.0
        self.redirect_to: str | None = None
        self._failures: list[Failure] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self.unavailable = False  # every API call answered 503, as in a maintenance window
        self._refusing = False

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The service root, ``http://127.0.0.1:<port>``."""
        return self.server.url

    def start(self) -> Self:
        """Start serving; returns self."""
        self._stopping.clear()
        self.server.start()
        return self

    def stop(self) -> None:
        """Release stalled requests and stop serving."""
        self._stopping.set()
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- failure injection -------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        count: int = 1,
        *,
        on: str | None = None,
        retry_after: str | None = None,
        body: str = "Service Unavailable",
        content_type: str = "text/plain",
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (and ``Retry-After``).

        ``on`` restricts the failure to requests whose ``"METHOD /path"`` contains it.
        """
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._add(count, Failure("status", on, status, body, content_type, headers))

    def html_error_next(self, status: int = 500, count: int = 1, *, on: str | None = None) -> None:
        """Answer with an HTML error page, as a proxy in front of the service would."""
        page = HTML_ERROR_PAGE.format(status=status)
        self._add(count, Failure("status", on, status, page, "text/html"))

    def malformed_next(self, count: int = 1, *, on: str | None = None) -> None:
        """Answer 200 with a truncated body in the service's format, doing nothing."""
        failure = Failure("status", on, 200, self.malformed_body, self.malformed_content_type)
        self._add(count, failure)

    def stall_next(self, seconds: float, count: int = 1, *, on: str | None = None) -> None:
        """Wait ``seconds`` before handling the request normally (to outlast a read timeout)."""
        self._add(count, Failure("stall", on, seconds=seconds))

    def drop_after_create_next(self, count: int = 1, *, on: str | None = None) -> None:
        """Handle the request (creating what it asks for), then cut the connection."""
        self._add(count, Failure("drop", on))

    def redirect_next(
        self, location: str, status: int = 307, count: int = 1, *, on: str | None = None
    ) -> None:
        """Answer with a redirect to ``location``."""
        self._add(count, Failure("status", on, status, "", "text/plain", {"Location": location}))

    def refuse_connections(self) -> None:
        """Close the port: every call is refused until ``accept_connections``.

        A kept-alive connection opened before is reset at its next request.
        """
        self._refusing = True
        self.server.stop()

    def accept_connections(self) -> None:
        """Listen again on the same port."""
        self._refusing = False
        self.server.start()

    def clear_failures(self) -> None:
        """Forget failures not yet played."""
        with self._lock:
            self._failures.clear()

    def requests_to(self, fragment: str) -> list[LoggedRequest]:
        """The logged requests whose ``"METHOD /path"`` contains ``fragment``."""
        with self._lock:
            return [r for r in self.requests if fragment in f"{r.method} {r.path}"]

    def _add(self, count: int, failure: Failure) -> None:
        with self._lock:
            self._failures.extend([failure] * count)

    def _take_failure(self, method: str, path: str) -> Failure | None:
        with self._lock:
            for index, failure in enumerate(self._failures):
                if failure.on is None or failure.on in f"{method} {path}":
                    return self._failures.pop(index)
        return None

    # -- for subclasses ----------------------------------------------------

    def check_auth(self, request: Request) -> Response | None:
        """The refusal to send when the request's credentials are wrong, else None."""
        return None

    def route(self, request: Request) -> Response:
        """Answer an authenticated request."""
        raise NotImplementedError

    def browse(self, request: Request) -> Response | None:
        """The page a person's browser gets for a ``GET`` of a record's web address, or None.

        Stand-ins show what they hold without credentials, so the addresses a demo
        prints open in a browser.
        """
        return None

    def create_delay(self) -> None:
        """Wait ``create_latency`` seconds (create calls call this first)."""
        if self.create_latency > 0:
            self._stopping.wait(self.create_latency)

    # -- WSGI --------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        line = str(environ.get("fake.request_line", "")).split()
        raw_target = line[1] if len(line) >= 2 else str(environ.get("RAW_URI") or request.path)
        raw_path = raw_target.split("?", 1)[0]
        entry = LoggedRequest(
            time=time.time(),
            method=request.method,
            path=raw_path,
            query=dict(request.args),
            headers=dict(request.headers),
        )
        with self._lock:
            self.requests.append(entry)
        try:
            response = self._answer(request, raw_path)
        except _DropConnection:
            entry.status = 0
            sock: socket.socket = environ["werkzeug.socket"]
            sock.shutdown(socket.SHUT_RDWR)
            # werkzeug treats a ConnectionError as a client that went away.
            raise ConnectionResetError("connection dropped on purpose") from None
        entry.status = response.status_code
        return response(environ, start_response)

    def _answer(self, request: Request, raw_path: str) -> Response:
        if "//" in raw_path:
            with self._lock:
                self.double_slash_paths.append(raw_path)
            return Response(f"'//' in path {raw_path}\n", status=400)
        page = self.browse(request) if request.method == "GET" else None
        if page is not None:
            return page
        if self.redirect_to is not None:
            query = request.query_string.decode()
            location = self.redirect_to.rstrip("/") + raw_path + (f"?{query}" if query else "")
            return Response("", status=307, headers={"Location": location})
        if self._refusing:
            raise _DropConnection()
        if self.unavailable:
            return Response("Service Unavailable\n", status=503, content_type="text/plain")
        failure = self._take_failure(request.method, raw_path)
        if failure is not None and failure.kind == "status":
            return Response(
                failure.body,
                status=failure.status,
                content_type=failure.content_type,
                headers=failure.headers,
            )
        if failure is not None and failure.kind == "stall":
            self._stopping.wait(failure.seconds)
        refusal = self.check_auth(request)
        if refusal is not None:
            return refusal
        response = self.route(request)
        if failure is not None and failure.kind == "drop":
            raise _DropConnection
        return response
