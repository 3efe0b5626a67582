"""A deadline on a whole HTTP call, where httpx's timeouts only bound each read.

A service that sends one byte every few seconds never trips a read timeout and
could hold an export forever. ``send_within`` sends a request with every
timeout cut to what is left of the call's deadline, then reads the body in
chunks and gives up once the deadline has passed. A call therefore ends within
the deadline plus at most one read (each read itself bounded by what was left
when the request was sent).

``calls_guarded_by`` names, for the calls made in its block, a check asked
before each request goes out (every redirect hop included): the worker passes
its lease's, so a copy of an export that lost its lease sends nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import httpx

from destinations.errors import LeaseLostError

# Per thread (and task): whether the export calling may still call; None = always.
_guard: ContextVar[Callable[[], bool] | None] = ContextVar("call_guard", default=None)


@contextmanager
def calls_guarded_by(check: Callable[[], bool] | None) -> Iterator[None]:
    """Ask ``check`` before each request sent in the block; False raises ``LeaseLostError``."""
    token = _guard.set(check)
    try:
        yield
    finally:
        _guard.reset(token)


class CallDeadlineExceeded(httpx.TimeoutException):
    """The whole call took longer than its total timeout."""


class _DeadlineStream(httpx.SyncByteStream):
    """A response body that stops with ``CallDeadlineExceeded`` once the deadline passed."""

    def __init__(self, stream: httpx.SyncByteStream, deadline: float, total: float) -> None:
        self._stream = stream
        self._deadline = deadline
        self._total = total

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if time.monotonic() > self._deadline:
                raise CallDeadlineExceeded(f"no complete answer within {self._total:g} s in total")
            yield chunk

    def close(self) -> None:
        self._stream.close()


def send_within(
    client: httpx.Client, request: httpx.Request, deadline: float, total: float
) -> httpx.Response:
    """Send ``request`` and read its answer before ``deadline`` (a ``time.monotonic()`` value).

    ``total`` is the whole call's timeout, for the message. Raises
    ``CallDeadlineExceeded`` (an ``httpx.TimeoutException``) when time runs out.
    """
    check = _guard.get()
    if check is not None and not check():
        raise LeaseLostError(
            f"{request.method} {request.url.path} not sent: this copy lost its export's lease"
        )
    left = deadline - time.monotonic()
    if left <= 0:
        raise CallDeadlineExceeded(f"no complete answer within {total:g} s in total")
    configured = request.extensions.get("timeout") or client.timeout.as_dict()
    request.extensions["timeout"] = {
        phase: left if seconds is None else min(seconds, left)
        for phase, seconds in configured.items()
    }
    try:
        response = client.send(request, stream=True)
    except httpx.TimeoutException as error:
        if time.monotonic() >= deadline:
            raise CallDeadlineExceeded(f"no complete answer within {total:g} s in total") from error
        raise
    try:
        if isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _DeadlineStream(response.stream, deadline, total)
        response.read()
    finally:
        response.close()
    return response
