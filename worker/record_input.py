"""A job's context from a record file: what the record says, overridden by the caller.

``nx-export enqueue RECORD`` and ``nx-export backfill DIR`` need no more than
the record NexusLIMS built; flags (or a LIMS's own values) win where given.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from destinations.files.record import RecordError
from destinations.files.record_session import FIELD_SOURCES, read_record_session
from tasks.identifiers import check_name

# Context field -> the command-line option that overrides it.
OPTIONS = {
    "session_identifier": "--session-id",
    "instrument_pid": "--instrument",
    "dt_from": "--start",
    "dt_to": "--end",
    "user": "--user",
}


def context_from_record(record: Path, overrides: dict[str, str | None]) -> dict[str, Any]:
    """The context for ``record``; ``overrides`` maps context fields to given values.

    Raises ``RecordError`` naming every required field that neither the record
    nor an override provides, and ``ValueError`` for a time that is not ISO 8601.
    """
    given = {name: value for name, value in overrides.items() if value}
    found: dict[str, str | None] = {}
    unreadable: RecordError | None = None
    try:
        session = read_record_session(record)
        found = {name: getattr(session, name) for name in OPTIONS}
    except RecordError as error:
        unreadable = error  # with every field given, the record check explains it later
    values = {name: given.get(name) or found.get(name) for name in OPTIONS}
    missing = [name for name in OPTIONS if name != "user" and not values[name]]
    if missing and unreadable is not None:
        raise unreadable
    if missing:
        raise RecordError(
            f"record {record} does not say "
            + ", ".join(f"{name} ({FIELD_SOURCES[name]}; give {OPTIONS[name]})" for name in missing)
        )
    for name in ("session_identifier", "instrument_pid", "user"):
        source = f"given as {OPTIONS[name]}" if name in given else f"from record {record.name!r}"
        check_name(f"{name} ({source})", values[name])
    return {
        "xml_file_path": str(record.absolute()),
        "session_identifier": values["session_identifier"],
        "instrument_pid": values["instrument_pid"],
        "dt_from": parse_moment(str(values["dt_from"]), "dt_from"),
        "dt_to": parse_moment(str(values["dt_to"]), "dt_to"),
        "user": values["user"],
    }


def parse_moment(value: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{OPTIONS[field]} {value!r} is not an ISO 8601 date and time "
            "(e.g. 2026-03-04T09:00:00-05:00)"
        ) from None
