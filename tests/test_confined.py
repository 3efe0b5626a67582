"""Reading a caller's files within their folder, same-origin links, Retry-After, redaction.

Units against real files, a real Redis and real settings; the worker-side
behaviour is in ``test_confined_worker``.
"""

from __future__ import annotations

import json
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from destinations.builtin.local import LocalArchiveDestination
from destinations.contract import ExportContext
from destinations.errors import PermanentExportError
from destinations.files.confined import ConfinedReadError, open_confined
from destinations.files.previews import image_type, read_previews
from destinations.toolkit.http import require_same_origin
from tasks.export.retry_policy import retry_delay
from tasks.store.job_store import JobStore
from tasks.store.model import StoredJob
from tests.samples import RECORD
from worker.settings import WorkerSettings, destination_policy

# A 1x1 PNG.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


def test_a_file_inside_the_root_is_read(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "r.xml").write_bytes(b"<r/>")
    (root / "alias.xml").symlink_to(root / "sub" / "r.xml")
    assert open_confined(root / "sub" / "r.xml", root, 100) == b"<r/>"
    assert open_confined(root / "alias.xml", root, 100) == b"<r/>"  # a link that stays inside


def test_a_file_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.xml"
    outside.write_bytes(b"secret")
    with pytest.raises(ConfinedReadError) as refused:
        open_confined(outside, root, 100)
    assert str(refused.value) == f"record {outside} is outside NX_RECORDS_PATH ({root})"
    with pytest.raises(ConfinedReadError, match="is outside NX_RECORDS_PATH"):
        open_confined(f"{root}/../outside.xml", root, 100)


def test_a_symlink_leaving_the_root_is_not_followed(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.xml").write_bytes(b"secret")
    (root / "link.xml").symlink_to(tmp_path / "outside.xml")
    (root / "dir").symlink_to(tmp_path)
    for path in (root / "link.xml", root / "dir" / "outside.xml"):
        with pytest.raises(ConfinedReadError) as refused:
            open_confined(path, root, 100)
        assert str(refused.value) == (
            f"record {path} leaves NX_RECORDS_PATH ({root}) through a symlink"
        )


def test_only_regular_files_are_read(root: Path) -> None:
    fifo = root / "pipe.xml"
    os.mkfifo(fifo)  # opening it for reading would block forever
    (root / "folder.xml").mkdir()
    for path in (fifo, root / "folder.xml"):
        with pytest.raises(ConfinedReadError, match=f"record {path} is not a regular file"):
            open_confined(path, root, 100)
    with pytest.raises(ConfinedReadError, match="is not a regular file"):
        open_confined("/dev/zero", None, 100)


def test_size_is_checked_before_and_while_reading(root: Path) -> None:
    (root / "big.xml").write_bytes(b"x" * 101)
    with pytest.raises(ConfinedReadError) as refused:
        open_confined(root / "big.xml", root, 100)
    assert str(refused.value) == (
        f"record file {root / 'big.xml'} is 101 bytes, "
        "larger than NX_EXPORT_MAX_RECORD_BYTES (100)"
    )
    # /proc reports a size of 0: the read itself stops at the limit.
    with pytest.raises(ConfinedReadError, match="larger than NX_EXPORT_MAX_RECORD_BYTES"):
        open_confined("/proc/self/environ", None, 4)


def test_a_missing_file_names_the_path(root: Path) -> None:
    with pytest.raises(ConfinedReadError, match=r"the record file .*gone\.xml: No such"):
        open_confined(root / "gone.xml", root, 100)


def test_images_are_recognised_by_content_not_name() -> None:
    assert image_type(PNG_BYTES) == "image/png"
    assert image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert image_type(b"GIF89a...") == image_type(b"GIF87a...") == "image/gif"
    assert image_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_type(b"NX_CDCS_TOKEN=abc") is None
    assert image_type(b"<svg/>") is None


def test_without_nx_data_path_no_preview_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NX_DATA_PATH", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env either
    (tmp_path / "p.png").write_bytes(PNG_BYTES)
    previews, notes = read_previews([str(tmp_path / "p.png")])
    assert previews == []
    assert notes == ["previews not included: NX_DATA_PATH is not set on the worker"]
    assert read_previews(["", ""]) == ([], [])


def test_a_link_to_another_origin_is_refused() -> None:
    root = httpx.URL("https://cdcs.example.org/")
    require_same_origin(
        httpx.URL("https://cdcs.example.org/rest/data/query/?page=2"), root,
        destination="cdcs", call="find record by title", what="link to",
    )  # fmt: skip
    for other in (
        "http://cdcs.example.org/rest/data/query/?page=2",  # plain http behind a TLS proxy
        "https://cdcs.example.org:8443/rest/data/query/",
        "https://elsewhere.example.org/rest/data/query/",
    ):
        with pytest.raises(PermanentExportError, match="cdcs: find record by title: link to an"):
            require_same_origin(
                httpx.URL(other), root,
                destination="cdcs", call="find record by title", what="link to",
            )  # fmt: skip


def test_retry_after_is_honoured_beyond_the_backoff_cap_up_to_its_own() -> None:
    rng = random.Random(1)
    assert retry_delay(0, 2, 600, retry_after=1200, rng=rng, retry_after_max=1800) == 1200
    assert retry_delay(0, 2, 600, retry_after=7200, rng=rng, retry_after_max=1800) == 1800
    assert 1 <= retry_delay(0, 2, 600, retry_after=None, rng=rng, retry_after_max=1800) <= 2
    assert retry_delay(0, 2, 600, retry_after=1200, rng=rng) == 600  # no ceiling given


def test_the_retry_after_ceiling_stays_below_half_the_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NX_EXPORT_VISIBILITY_TIMEOUT", "1200")
    settings = WorkerSettings()
    assert settings.retry_after_max_seconds == 1800
    assert destination_policy("cdcs", settings, {}.get).retry_after_max == 600
    override = {"NX_EXPORT_CDCS_RETRY_AFTER_MAX_SECONDS": "120"}
    assert destination_policy("cdcs", settings, override.get).retry_after_max == 120


def test_retry_errors_are_stored_redacted(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_PLUGIN_API_TOKEN", "plugin-token-4f2a9c")
    store = JobStore(redis_server.client(), 60)
    store.create(StoredJob(id="job-redaction", destinations=["plugin"]))
    store.record_retry(
        "job-redaction", "plugin",
        "503 from https://api.example.org/v1/items?sig=c2ln&key=abc; token plugin-token-4f2a9c",
        1.0,
    )  # fmt: skip
    raw = redis_server.client().hget("nxexport:job:job-redaction", "dest:plugin")
    assert b"plugin-token-4f2a9c" not in raw and b"sig=" not in raw
    stored = json.loads(raw)
    assert stored["error"] == stored["history"][0]["error"]
    assert stored["error"].startswith("503 from https://api.example.org/v1/items?… ")


def test_the_local_archive_reads_only_inside_nx_records_path(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "record.xml"
    record.write_text(RECORD.format(title="t"))
    monkeypatch.setenv("NX_EXPORT_LOCAL_PATH", str(tmp_path / "archive"))
    monkeypatch.setenv("NX_RECORDS_PATH", str(root))
    context = ExportContext(
        xml_file_path=record, session_identifier="s-1", instrument_pid="FEI-Titan-TEM-635816",
        dt_from=datetime(2026, 3, 4, 9), dt_to=datetime(2026, 3, 4, 13),
    )  # fmt: skip
    result = LocalArchiveDestination().export(context)
    assert not result.success
    assert result.error_message == f"record {record} is outside NX_RECORDS_PATH ({root})"
    assert not (tmp_path / "archive" / "FEI-Titan-TEM-635816").exists()


def test_the_retry_delay_has_equal_jitter_between_half_and_all_of_the_doubled_delay() -> None:
    rng = random.Random(7)
    delays = [retry_delay(3, 2, 600, rng=rng) for _ in range(2000)]
    # Retry 4 of a 2 s backoff: 16 s doubled; never sooner than half of it, never later.
    assert min(delays) >= 8 and max(delays) <= 16
    # Spread over the whole range, not stuck at one end.
    assert min(delays) < 8.5 and max(delays) > 15.5
