"""A slow service cannot keep a call alive: every call has a total deadline, not only per read."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from destinations.errors import TransientExportError
from destinations.toolkit.http import request


class TricklingServer:
    """Answers every request with headers at once, then one body byte every 0.1 s for 30 s.

    Each read gets a byte well within any read timeout, so only a deadline on
    the whole call ends it early.
    """

    BODY_BYTES = 300

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow"

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self.trickle, args=(connection,), daemon=True).start()

    def trickle(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {self.BODY_BYTES}\r\n\r\n"
            )
            try:
                connection.sendall(head.encode())
                for _ in range(self.BODY_BYTES):
                    if self.stopping.wait(0.1):
                        return
                    connection.sendall(b"x")
            except OSError:
                return  # the client gave up: what the test wants

    def __enter__(self) -> TricklingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def trickling() -> Iterator[TricklingServer]:
    with TricklingServer() as server:
        yield server


def test_a_trickling_answer_ends_at_the_total_timeout(
    trickling: TricklingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "2")
    monkeypatch.setenv("NX_HTTP_TOTAL_TIMEOUT", "1")
    with pytest.raises(TransientExportError) as raised:
        request("GET", trickling.url, destination="slowrepo", call="fetch record")
    message = str(raised.value)
    assert "slowrepo: fetch record" in message
    assert "1 s in total" in message


def test_the_total_timeout_does_not_cut_a_call_that_ends_in_time(
    trickling: TricklingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TricklingServer, "BODY_BYTES", 3)
    monkeypatch.setenv("NX_HTTP_TOTAL_TIMEOUT", "20")
    response = request("GET", trickling.url, destination="slowrepo", call="fetch record")
    assert response.text == "xxx"
