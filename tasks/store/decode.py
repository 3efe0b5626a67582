"""Redis answers as text: the clients here do not decode responses (Celery's do not)."""

from __future__ import annotations


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
