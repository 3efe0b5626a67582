"""Send a facility's history to its destinations: every record under a folder, once.

Each record's job key is its content's checksum with the destinations and the
strategy, so running a backfill again enqueues nothing twice, and a record
that changed since is sent again. A record the export ledger holds with the
same bytes at every destination the job would go to is not enqueued at all
(``already_exported``), whoever exported it and however long ago; ``force``
enqueues every record again, without a job key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from destinations.files.confined import ConfinedReadError, open_confined
from destinations.files.record import RecordError, check_record
from tasks.store.ledger import record_checksum
from worker.record_input import context_from_record


@dataclass
class BackfillReport:
    """What a backfill did with each record it found."""

    enqueued: list[dict[str, str]] = field(default_factory=list)
    already_done: list[dict[str, str]] = field(default_factory=list)
    already_exported: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    skipped_before_since: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "enqueued": self.enqueued,
            "already_done": self.already_done,
            "already_exported": self.already_exported,
            "refused": self.refused,
            "skipped_before_since": self.skipped_before_since,
        }


def find_records(root: Path) -> list[Path]:
    """Every ``*.xml`` below ``root``, in a stable order, whatever it is.

    A FIFO, a folder or an unreadable file of that name is kept too: the
    record check refuses it with the reason, so the report lists it instead of
    leaving it out without a word.
    """
    return sorted(root.rglob("*.xml"))


def backfill_key(record_bytes: bytes, destinations: Sequence[str], strategy: str | None) -> str:
    """The job key of one record: its checksum, the destinations and the strategy."""
    digest = hashlib.sha256(record_bytes).hexdigest()
    names = ",".join(sorted(destinations)) or "*"
    return f"backfill:{digest}:{names}:{strategy or '-'}"


def backfill(
    records: Iterable[Path],
    enqueue: Callable[..., Any],
    destinations: Sequence[str] = (),
    strategy: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
    max_record_bytes: int = 50_000_000,
    advance: Callable[[], None] = lambda: None,
    records_root: Path | None = None,
    exported: Callable[[str, str], tuple[dict[str, Any], bool]] | None = None,
    force: bool = False,
) -> BackfillReport:
    """Enqueue each record through ``enqueue`` (``enqueue_export``), keyed so it runs once.

    ``records_root`` (``NX_RECORDS_PATH``) refuses a record that leads outside it,
    a symbolic link out included, in a dry run too: the worker would not read it.
    ``exported(session, checksum)`` says what the export ledger holds of a record
    and whether that is every destination (``worker.ledger.backfill_lookup``).
    """
    report = BackfillReport(dry_run=dry_run)
    for record in records:
        try:
            _backfill_one(record, enqueue, destinations, strategy, since, dry_run,
                          max_record_bytes, records_root, report,
                          None if force else exported, force)  # fmt: skip
        except ValueError as error:  # RecordError, InvalidContextError, ExportRequestError
            report.refused.append({"file": str(record), "reason": str(error)})
        advance()
    return report


def _backfill_one(
    record: Path,
    enqueue: Callable[..., Any],
    destinations: Sequence[str],
    strategy: str | None,
    since: datetime | None,
    dry_run: bool,
    max_record_bytes: int,
    records_root: Path | None,
    report: BackfillReport,
    exported: Callable[[str, str], tuple[dict[str, Any], bool]] | None = None,
    force: bool = False,
) -> None:
    checked = check_record(record, max_bytes=max_record_bytes, records_root=records_root)
    context = context_from_record(record, {})
    if since is not None and _comparable(context["dt_from"]) < _comparable(since):
        report.skipped_before_since += 1
        return
    entry = {"file": str(record), "session": str(context["session_identifier"])}
    if exported is not None:
        held, done = exported(entry["session"], _checksum(record, max_record_bytes, records_root))
        if done:
            report.already_exported.append({**entry, "destinations": held})
            return
    if dry_run:
        report.enqueued.append(entry)
        return
    # The bytes checked, not the file read again: the key names what was checked.
    key = backfill_key(checked, destinations, strategy)
    job = enqueue(context, strategy=strategy, destinations=list(destinations) or None,
                  **({"force": True} if force else {"job_key": key}))  # fmt: skip
    entry["job_id"] = job.id
    if getattr(job, "existing", False):
        entry["state"] = str(job.state)
        report.already_done.append(entry)
    else:
        report.enqueued.append(entry)


def _checksum(record: Path, max_bytes: int, root: Path | None) -> str:
    """The record's checksum as the export ledger keeps it (read as the worker reads it)."""
    try:
        return record_checksum(open_confined(record, root, max_bytes))
    except ConfinedReadError as error:
        raise RecordError(str(error)) from None


def _comparable(moment: datetime) -> datetime:
    # A naive --since is read as local time, like the naive times of records.
    return moment if moment.tzinfo else moment.astimezone()
