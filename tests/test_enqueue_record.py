"""``nx-export enqueue RECORD``: the record alone says which session it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import PROJECT_ROOT, worker_env

RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>Lamella</nx:title>
  <nx:id>{session}</nx:id>
  <nx:summary>
    <nx:experimenter>Ada Lovelace</nx:experimenter>
    <nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument>
    <nx:reservationStart>2026-03-04T09:00:00-05:00</nx:reservationStart>
    <nx:reservationEnd>2026-03-04T13:30:00-05:00</nx:reservationEnd>
  </nx:summary>
</nx:Experiment>
"""


def enqueue(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "enqueue", *arguments],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        env=worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
    )  # fmt: skip


def test_a_record_alone_is_enough(session_worker: Any, tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    record.write_text(RECORD.format(session="2026-03-04_titan_0001"), encoding="utf-8")
    done = enqueue(str(record), "--destination", "alpha", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["session_identifier"] == "2026-03-04_titan_0001"
    assert job["instrument_pid"] == "FEI-Titan-TEM-635816"
    assert job["destinations"]["alpha"]["state"] == "SUCCESS"


def test_flags_override_the_record(session_worker: Any, tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    record.write_text(RECORD.format(session="from-record"), encoding="utf-8")
    done = enqueue(str(record), "--session-id", "from-flag", "--instrument", "JEOL-1",
                   "--destination", "alpha", "--wait", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["session_identifier"], job["instrument_pid"]) == ("from-flag", "JEOL-1")


def test_a_missing_field_without_a_flag_names_it(session_worker: Any, tmp_path: Path) -> None:
    record = tmp_path / "r.xml"
    text = RECORD.format(session="s").replace(
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
