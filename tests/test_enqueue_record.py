"""``nx-export enqueue RECORD``: the record alone says which session it is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.samples import session_record_text
from tests.support import nx_export


def enqueue(*arguments: str) -> subprocess.CompletedProcess[str]:
    return nx_export("enqueue", *arguments, timeout=120)


def test_a_record_alone_is_enough(session_worker: Any, tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    record.write_text(session_record_text("2026-03-04_titan_0001"), encoding="utf-8")
    done = enqueue(str(record), "--destination", "alpha", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["session_identifier"] == "2026-03-04_titan_0001"
    assert job["instrument_pid"] == "FEI-Titan-TEM-635816"
    assert job["destinations"]["alpha"]["state"] == "SUCCESS"


def test_flags_override_the_record(session_worker: Any, tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    record.write_text(session_record_text("from-record"), encoding="utf-8")
    done = enqueue(str(record), "--session-id", "from-flag", "--instrument", "JEOL-1",
                   "--destination", "alpha", "--wait", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["session_identifier"], job["instrument_pid"]) == ("from-flag", "JEOL-1")


def test_a_missing_field_without_a_flag_names_it(session_worker: Any, tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    text = session_record_text("s").replace(
        "<nx:reservationEnd>2026-03-04T13:30:00-05:00</nx:reservationEnd>", ""
    )
    record.write_text(text, encoding="utf-8")
    done = enqueue(str(record), "--destination", "alpha")
    assert done.returncode == 2
    assert "dt_to (nx:summary/nx:reservationEnd; give --end)" in done.stderr
    given = enqueue(str(record), "--end", "2026-03-04T14:00:00-05:00", "--destination", "alpha")
    assert given.returncode == 0, given.stderr


def test_a_missing_record_says_so(session_worker: Any, tmp_path: Path) -> None:
    done = enqueue(str(tmp_path / "nowhere.xml"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr
