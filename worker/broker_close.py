"""Keep a worker alive when Redis goes away while it holds unacknowledged tasks.

When the broker connection breaks, Celery 5.7 first "collects" the connection
(kombu 5.7 closes its channel, which fails half-way with Redis down, then drops
the transport's link to the connection) and then closes it. The second close
tries to give the unacknowledged tasks back to Redis through a transport that
no longer knows its connection: an ``AttributeError`` that no one expects, and
the whole worker stops ("Unrecoverable error"). Measured: a worker holding
retries that wait for their countdown, with Redis restarted under it.

Raising a connection error there instead lets kombu treat it as the lost
connection it is: the worker reconnects, and the tasks it held come back from
Redis after the visibility timeout, as they would after any lost connection.
"""

from __future__ import annotations

import inspect
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_connparams = kombu_redis.Channel._connparams
# What the patch was written against (kombu 5.7): a kombu that changed it needs a new look.
EXPECTED_PARAMETERS = ["self", "asynchronous"]


class IncompatibleKombuError(RuntimeError):
    """The kombu installed is not the one this patch was made for."""


def _connparams_of_a_live_connection(self: Any, asynchronous: bool = False) -> Any:
    # Closed half-way, the channel may have lost its transport too (``connection`` is
    # None): a task's retry publishing on it then must see a lost connection, which
    # kombu's publish retries on a new one, not an AttributeError, which Celery turns
    # into a rejected task.
    connection = getattr(self, "connection", None)
    if connection is None or connection.client is None:
        raise redis.ConnectionError("the broker connection was closed")
    return _connparams(self, asynchronous=asynchronous)


def install() -> None:
    """Idempotent; called when the app is built. Refuses a kombu whose method changed."""
    found = list(inspect.signature(_connparams).parameters)
    if found != EXPECTED_PARAMETERS:
        raise IncompatibleKombuError(
            f"kombu's Redis Channel._connparams takes {found}, not {EXPECTED_PARAMETERS}: "
            "this worker was made for kombu 5.7 (see pyproject.toml's bounds)"
        )
    kombu_redis.Channel._connparams = _connparams_of_a_live_connection  # type: ignore[method-assign]
