"""What a NexusLIMS record says about its session: id, instrument, times and user.

NexusLIMS writes all of them into the record it builds, so a record alone is
enough to enqueue it (``nx-export enqueue RECORD``, ``nx-export backfill DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defusedxml.ElementTree import fromstring

from destinations.files.confined import ReadSettings
from destinations.files.record import NEXUS_NAMESPACE, RecordError, read_record_file

_NS = {"nx": NEXUS_NAMESPACE}

# Context field -> where NexusLIMS writes it, as named in messages.
FIELD_SOURCES = {
    "session_identifier": "nx:id",
    "instrument_pid": "nx:summary/nx:instrument/@pid",
    "dt_from": "nx:summary/nx:reservationStart",
    "dt_to": "nx:summary/nx:reservationEnd",
    "user": "nx:summary/nx:experimenter",
}
REQUIRED_FIELDS = ("session_identifier", "instrument_pid", "dt_from", "dt_to")


@dataclass(frozen=True)
class RecordSession:
    """The session fields found in a record; None where the record lacks one."""

    session_identifier: str | None
    instrument_pid: str | None
    dt_from: str | None
    dt_to: str | None
    user: str | None

    def missing(self) -> list[str]:
        """The required fields this record does not carry."""
        return [name for name in REQUIRED_FIELDS if not getattr(self, name)]


def read_record_session(path: Path, max_bytes: int | None = None) -> RecordSession:
    """Read the session fields of the record at ``path``, of at most ``max_bytes``.

    The file is opened as ``check_record`` opens it (never blocking on a FIFO);
    ``max_bytes`` defaults to ``NX_EXPORT_MAX_RECORD_BYTES``.
    """
    limit = max_bytes if max_bytes is not None else ReadSettings().max_record_bytes
    data = read_record_file(path, limit)
    try:
        root = fromstring(data, forbid_entities=True, forbid_external=True)
    except Exception as error:  # defusedxml's and expat's errors: the check explains them
        raise RecordError(f"record {path} cannot be parsed: {error}") from None
    instrument = root.find("nx:summary/nx:instrument", _NS)
    return RecordSession(
        session_identifier=_text(root.findtext("nx:id", None, _NS)),
        instrument_pid=_text(instrument.get("pid") if instrument is not None else None),
        dt_from=_text(root.findtext("nx:summary/nx:reservationStart", None, _NS)),
        dt_to=_text(root.findtext("nx:summary/nx:reservationEnd", None, _NS)),
        user=_text(root.findtext("nx:summary/nx:experimenter", None, _NS)),
    )


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None
