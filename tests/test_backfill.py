"""``nx-export backfill DIR``: a facility's history, each record enqueued once."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from tests.samples import session_record_text
from tests.support import nx_export, worker_env


def history(root: Path) -> Path:
    """Three sessions never exported (the export ledger keeps every session exported)."""
    fresh = uuid.uuid4().hex[:8]
    for index, day in enumerate(("2025-01-10", "2025-06-11", "2026-02-12")):
        folder = root / day[:4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"session-{index}.xml").write_text(
            session_record_text(f"backfill-{os.getpid()}-{fresh}-{index}", day=day),
            encoding="utf-8",
        )
    (root / "2026" / "broken.xml").write_text("not a record", encoding="utf-8")
    return root


def run_backfill(folder: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = nx_export("backfill", str(folder), "--destination", "alpha", "--json", *extra,
                     timeout=120)  # fmt: skip
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
    assert first["already_exported"] == []
    (refused,) = first["refused"]
    assert refused["file"].endswith("broken.xml") and "is not XML" in refused["reason"]
    for entry in first["enqueued"]:
        assert get_job(entry["job_id"], app=app).wait(timeout=60).satisfied
    status, second = run_backfill(folder)
    assert status == 2
    assert second["enqueued"] == [] and second["already_done"] == []
    # Exported: the export ledger names the job that did it, at each destination.
    assert sorted(e["destinations"]["alpha"]["job_id"] for e in second["already_exported"]) == (
        sorted(e["job_id"] for e in first["enqueued"])
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
    # In text too, each file it would enqueue, not only how many.
    text = nx_export("backfill", str(folder), "--destination", "alpha", "--dry-run",
                     "--since", "2025-06-01T00:00:00+00:00", timeout=120)  # fmt: skip
    assert text.returncode == 0, text.stderr
    for entry in report["enqueued"]:
        assert f"  would enqueue {entry['file']} (session {entry['session']})" in text.stdout
    assert "session-0.xml" not in text.stdout  # before --since


def test_a_link_out_of_the_records_folder_is_refused_dry_run_or_not(
    session_worker: Any, app: Any, tmp_path: Path
) -> None:
    folder = history(tmp_path / "records")
    (folder / "2026" / "broken.xml").unlink()
    outside = tmp_path / "elsewhere" / "secret.xml"
    outside.parent.mkdir()
    outside.write_text(session_record_text(f"outside-{os.getpid()}"), encoding="utf-8")
    (folder / "2026" / "linked.xml").symlink_to(outside)
    env = {**worker_env(os.environ["NX_EXPORT_BROKER_URL"], None), "NX_RECORDS_PATH": str(folder)}
    jobs_before = app.backend.client.zcard("nxexport:jobs")
    for extra in (("--dry-run",), ()):
        done = nx_export("backfill", str(folder), "--destination", "alpha", "--json", *extra,
                         env=env, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        report = json.loads(done.stdout)
        (refused,) = report["refused"]
        assert refused["file"].endswith("linked.xml")
        assert "leaves NX_RECORDS_PATH" in refused["reason"]  # through the symlink
        assert len(report["enqueued"]) + len(report["already_done"]) == 3
    assert app.backend.client.zcard("nxexport:jobs") == jobs_before + 3


def test_what_is_named_like_a_record_but_cannot_be_read_is_refused_with_the_reason(
    session_worker: Any, tmp_path: Path
) -> None:
    folder = history(tmp_path / "records")
    (folder / "2026" / "broken.xml").unlink()
    odd = folder / "odd"
    odd.mkdir()
    os.mkfifo(odd / "pipe.xml")
    (odd / "folder.xml").mkdir()
    (odd / "dangling.xml").symlink_to(odd / "gone")
    expected = {
        odd / "pipe.xml": f"record {odd / 'pipe.xml'} is not a regular file",
        odd / "folder.xml": f"record {odd / 'folder.xml'} is not a regular file",
        odd / "dangling.xml": f"record file {odd / 'dangling.xml'} does not exist",
    }
    if os.geteuid() != 0:  # root reads a file whatever its mode
        locked = odd / "locked.xml"
        locked.write_text(session_record_text("locked"), encoding="utf-8")
        locked.chmod(0)
        expected[locked] = f"cannot read the record file {locked}: Permission denied"
    status, report = run_backfill(folder, "--dry-run")
    assert status == 2
    assert {Path(e["file"]): e["reason"] for e in report["refused"]} == expected
    assert len(report["enqueued"]) == 3
    text = nx_export("backfill", str(folder), "--destination", "alpha", "--dry-run", timeout=120)
    assert text.returncode == 2, text.stderr
    assert f"refused: {len(expected)}" in text.stdout
    for path, reason in expected.items():
        assert f"  refused {path}: {reason}\n" in text.stdout
