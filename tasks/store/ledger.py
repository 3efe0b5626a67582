"""The export ledger: which record each destination holds for each session, for good.

A job record expires after the retention period; what a destination holds
does not. So a destination's task writes, in the round trip that stores its
successful result, one entry per (destination, session): the record's id and
URL at the service, the checksum (SHA-256) of the record bytes it exported,
the job and the time. Before exporting, a task reads that entry: the same
session with the same record bytes is already there, whoever enqueued it
(``enqueue``, ``export.record``, ``export_records``, ``backfill``, ``retry``)
and however long ago; a record with other bytes is a new version, exported
again. One hash per destination (``keys.ledger_key``), its fields the session
ids; no TTL (about 300 bytes an entry). ``forget`` drops one entry, for a
record an operator deleted at the service by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import redis

from destinations.contract import ExportContext
from tasks.store.decode import text
from tasks.store.keys import ledger_key

# In a context's metadata: export even what the ledger holds (a re-export on purpose).
FORCE_FIELD = "export_force"

T = TypeVar("T")


def record_checksum(data: bytes) -> str:
    """The ledger's checksum of a record: SHA-256 of its bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


def is_forced(message: Any) -> bool:
    """Whether a context (as a message) asks to export again what the ledger holds."""
    metadata = message.get("metadata") if isinstance(message, Mapping) else None
    return isinstance(metadata, Mapping) and bool(metadata.get(FORCE_FIELD))


def with_force(context: T, force: bool) -> T:
    """``context`` (an ``ExportContext`` or its message) marked to export again, if ``force``.

    Anything else is returned as it is, for the context's check to refuse.
    """
    if not force:
        return context
    if isinstance(context, ExportContext):
        return cast(T, replace(context, metadata={**context.metadata, FORCE_FIELD: True}))
    if not isinstance(context, Mapping):
        return context
    metadata = context.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    return cast(T, {**context, "metadata": {**metadata, FORCE_FIELD: True}})


@dataclass(frozen=True)
class LedgerEntry:
    """What one destination holds for one session."""

    record_id: str | None
    record_url: str | None
    checksum: str
    job_id: str
    exported_at: str

    @classmethod
    def now(
        cls, record_id: Any, record_url: Any, checksum: str, job_id: str
    ) -> LedgerEntry:
        return cls(
            None if record_id is None else str(record_id),
            None if record_url is None else str(record_url),
            checksum, job_id, datetime.now(UTC).isoformat(timespec="seconds"),
        )  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> LedgerEntry | None:
        """None for an entry this version cannot read (it is then not trusted)."""
        try:
            data = json.loads(raw)
            return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_entry(pipe: Any, destination: str, session: str, entry: LedgerEntry) -> None:
    """Add the entry's write to ``pipe`` (the round trip that stores the result)."""
    pipe.hset(ledger_key(destination), session, entry.to_json())


class Ledger:
    """Read and forget ledger entries (the tasks write them with ``write_entry``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def get(self, destination: str, session: str) -> LedgerEntry | None:
        raw = cast(bytes | None, self.client.hget(ledger_key(destination), session))
        return None if raw is None else LedgerEntry.from_json(text(raw))

    def held(self, destinations: Sequence[str], session: str) -> dict[str, LedgerEntry]:
        """The entries of ``session`` at each of ``destinations`` that has one: one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for name in destinations:
                pipe.hget(ledger_key(name), session)
            answers = pipe.execute()
        found = {}
        for name, raw in zip(destinations, answers, strict=True):
            entry = None if raw is None else LedgerEntry.from_json(text(raw))
            if entry is not None:
                found[name] = entry
        return found

    def forget(self, destination: str, session: str) -> LedgerEntry | None:
        """Drop the entry (the next export of the session goes to the service); the one dropped."""
        key = ledger_key(destination)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hget(key, session)
            pipe.hdel(key, session)
            raw, _ = pipe.execute()
        return None if raw is None else LedgerEntry.from_json(text(raw))

    def size(self, destination: str) -> int:
        return cast(int, self.client.hlen(ledger_key(destination)))
