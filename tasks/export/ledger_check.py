"""A destination task's look at the export ledger (``tasks.store.ledger``), before and after.

Before exporting, the task reads the record (confined, as the destination will)
for its checksum and the ledger's entry for (destination, session): with the
same checksum the session is already there, and the task's result is that
record, ``already_exported`` in its metadata, without calling the service; a
context marked ``export_force`` exports all the same. After a successful
export the entry is written in the same round trip as the result. A record
with another checksum is a new version: exported again, and its result names
the record it ``supersedes`` when the destination did not say so itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from destinations.contract import ExportContext, ExportResult
from destinations.files.confined import ConfinedReadError, read_record
from tasks.messages import result_to_json
from tasks.store.ledger import Ledger, LedgerEntry, is_forced, record_checksum, write_entry

logger = logging.getLogger(__name__)

Step = Callable[[Any], None]


class LedgerCheck:
    """One export of one session at one destination, as the ledger sees it."""

    def __init__(
        self, client: redis.Redis, name: str, job_id: str, message: dict[str, Any]
    ) -> None:
        self.client, self.name, self.job_id = client, name, job_id
        self.session = str(message.get("session_identifier") or "")
        self.forced = is_forced(message)
        self.checksum: str | None = None
        self.held: LedgerEntry | None = None
        self.skipped = False

    def already_exported(self, context: ExportContext) -> dict[str, Any] | None:
        """The held record as this task's result, when the ledger has this very record."""
        try:
            self.checksum = record_checksum(read_record(context.xml_file_path))
        except ConfinedReadError:
            return None  # the destination reads it too, and says why it cannot
        if not self.session:
            return None
        self.held = Ledger(self.client).get(self.name, self.session)
        held = self.held
        if held is None or held.checksum != self.checksum or self.forced:
            return None
        self.skipped = True
        logger.info(
            "%s: session %s already exported by job %s (record %s); not exported again",
            self.name, self.session, held.job_id, held.record_id,
        )  # fmt: skip
        result = ExportResult(
            success=True, destination_name=self.name, record_id=held.record_id,
            record_url=held.record_url,
            metadata={"already_exported": True, "exported_by_job": held.job_id,
                      "exported_at": held.exported_at, "record_checksum": held.checksum},
        )  # fmt: skip
        return result_to_json(result, self.name)

    def exported(self, result: dict[str, Any]) -> dict[str, Any]:
        """The destination's result, naming the record a new version supersedes."""
        held = self.held
        if not result.get("success") or held is None or held.checksum == self.checksum:
            return result
        metadata = dict(result.get("metadata") or {})
        if held.record_id and held.record_id != result.get("record_id"):
            metadata.setdefault("supersedes", held.record_id)
        return {**result, "metadata": metadata}

    def also(self, result: dict[str, Any], step: Step) -> Step:
        """``step`` for the round trip that stores ``result``, plus the ledger's entry."""
        if self.skipped or self.checksum is None or not self.session:
            return step
        if not result.get("success"):
            return step
        entry = LedgerEntry.now(
            result.get("record_id"), result.get("record_url"), self.checksum, self.job_id
        )

        def both(pipe: Any) -> None:
            step(pipe)
            write_entry(pipe, self.name, self.session, entry)

        return both
