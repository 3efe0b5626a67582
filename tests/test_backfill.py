"""``nx-export backfill DIR``: a facility's history, each record enqueued once."""

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
  <nx:title>History</nx:title>
  <nx:id>{session}</nx:id>
  <nx:summary>
    <nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument>
    <nx:reservationStart>{day}T09:00:00-05:00</nx:reservationStart>
    <nx:reservationEnd>{day}T13:30:00-05:00</nx:reservationEnd>
  </nx:summary>
</nx:Experiment>
"""


def history(root: Path) -> Path:
    for index, day in enumerate(("2025-01-10", "2025-06-11", "2026-02-12")):
        folder = root / day[:4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"session-{index}.xml").write_text(
            RECORD.format(session=f"backfill-{os.getpid()}-{index}", day=day), encoding="utf-8"
        )
    (root / "2026" / "broken.xml").write_text("not a record", encoding="utf-8")
    return root


def run_backfill(folder: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "backfill", str(folder), "--destination", "alpha",
         "--json", *extra],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        env=worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_two_backfills_export_each_record_once(
    session_worker: Any, app: Any, tmp_path: Path
) -> None:
    from tasks.jobs import get_job

    folder = history(tmp_path / "records")
    jobs_before = app.backend.client.zcard("nxexport:jobs")
    status, first = run_backfill(folder)
    assert status == 2  # the broken file is refused
    assert len(first["enqueued"]) == 3 and first["already_done"] == []
    (refused,) = first["refused"]
    assert refused["file"].endswith("broken.xml") and "is not XML" in refused["reason"]
    for entry in first["enqueued"]:
        assert get_job(entry["job_id"], app=app).wait(timeout=60).satisfied
    status, second = run_backfill(folder)
    assert status == 2
    assert second["enqueued"] == []
    assert sorted(e["job_id"] for e in second["already_done"]) == sorted(
        e["job_id"] for e in first["enqueued"]
    )
    assert app.backend.client.zcard("nxexport:jobs") == jobs_before + 3


def test_dry_run_and_since_enqueue_nothing_old(
    session_worker: Any, app: Any, tmp_path: Path
) -> None:
    folder = history(tmp_path / "records")
    (folder / "2026" / "broken.xml").unlink()
    jobs_before = app.backend.client.zcard("nxexport:jobs")
    status, report = run_backfill(folder, "--dry-run", "--since", "2025-06-01T00:00:00+00:00")
    assert status == 0
    assert report["dry_run"] is True
    assert len(report["enqueued"]) == 2 and report["skipped_before_since"] == 1
    assert app.backend.client.zcard("nxexport:jobs") == jobs_before
