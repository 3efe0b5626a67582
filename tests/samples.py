"""What the tests export: the one sample NexusLIMS record, its export context, a preview image."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

INSTRUMENT = "FEI-Titan-TEM-635816"

# The sample record; ``{title}`` lets a test tell its records apart.
RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>{title}</nx:title>
  <nx:summary>
    <nx:experimenter>Ada Lovelace</nx:experimenter>
    <nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument>
  </nx:summary>
</nx:Experiment>
"""
DEFAULT_TITLE = "EELS mapping of Ni-Al lamella"

# A record as NexusLIMS builds it, carrying its session's id, times and user.
SESSION_RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>{title}</nx:title>
  <nx:id>{session}</nx:id>
  <nx:summary>
    <nx:experimenter>{user}</nx:experimenter>
    <nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument>
    <nx:reservationStart>{day}T09:00:00-05:00</nx:reservationStart>
    <nx:reservationEnd>{day}T13:30:00-05:00</nx:reservationEnd>
  </nx:summary>
</nx:Experiment>
"""


def session_record_text(
    session: str, day: str = "2026-03-04", user: str = "Ada Lovelace", title: str = DEFAULT_TITLE
) -> str:
    return SESSION_RECORD.format(session=session, day=day, user=user, title=title)

# A 1x1 PNG, for preview images.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def record_text(title: str = DEFAULT_TITLE) -> str:
    return RECORD.format(title=title)


def write_record(path: Path, title: str = DEFAULT_TITLE) -> Path:
    """The sample record at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record_text(title), encoding="utf-8")
    return path


def make_context(record: Path, log: Path | None = None, **behaviour: str) -> dict[str, Any]:
    """A context for a fresh session; ``behaviour`` tells the test destinations what to do."""
    metadata: dict[str, Any] = {"behaviour": behaviour}
    if log:
        metadata["log"] = str(log)
    return {
        "xml_file_path": str(record),
        "session_identifier": f"session-{uuid.uuid4().hex[:8]}",
        "instrument_pid": INSTRUMENT,
        "dt_from": "2026-03-04T09:00:00-05:00",
        "dt_to": "2026-03-04T13:30:00-05:00",
        "user": "ada",
        "metadata": metadata,
    }


def enqueue_arguments(record: Path, *extra: str, session: str = "cli-session") -> list[str]:
    """``nx-export enqueue`` for the sample session; ``extra`` adds options."""
    return [
        "enqueue", str(record),
        "--session-id", session,
        "--instrument", INSTRUMENT,
        "--start", "2026-03-04T09:00:00-05:00",
        "--end", "2026-03-04T13:30:00-05:00",
        *extra,
    ]  # fmt: skip
