"""Pytest fixtures for the destination tests: started fakes and export contexts.

Test modules load them with ``pytest_plugins = ["tests.fakes.fixtures"]``.
Each fake fixture starts a fresh fake, points the destination's ``NX_*``
variables at it, shortens the HTTP timeouts, and fails the test if any request
path contained ``//``. Fixture names are prefixed to avoid clashing with other
suites' fixtures, since plugins register theirs for the whole session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from destinations.contract import Activity, ExportContext, ExportResult
from tests.samples import INSTRUMENT, PNG_BYTES, write_record
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives

SESSION_ID = "2026-03-04_FEI-Titan-TEM-635816_0001"


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a misbehaving fake from holding a test for a minute."""
    monkeypatch.setenv("NX_HTTP_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "5")


@pytest.fixture
def nexus_record(tmp_path: Path) -> Path:
    """A small NexusLIMS record on disk."""
    return write_record(tmp_path / f"{SESSION_ID}.xml")


@pytest.fixture
def preview_image(tmp_path: Path) -> Path:
    """A tiny preview image."""
    path = tmp_path / "survey_001.dm4.thumb.png"
    path.write_bytes(PNG_BYTES)
    return path


@pytest.fixture
def make_export_context(nexus_record: Path) -> Callable[..., ExportContext]:
    """Build an export context for the record; keyword arguments override fields."""

    def build(**overrides: Any) -> ExportContext:
        fields: dict[str, Any] = {
            "xml_file_path": nexus_record,
            "session_identifier": SESSION_ID,
            "instrument_pid": INSTRUMENT,
            "dt_from": datetime(2026, 3, 4, 9, 0),
            "dt_to": datetime(2026, 3, 4, 13, 30),
            "user": "ada",
            "metadata": {"export_attempt": 1, "export_job_id": "job-1"},
            "activities": [Activity(files=["/data/survey_001.dm4"], previews=[])],
        }
        fields.update(overrides)
        return ExportContext(**fields)

    return build


@pytest.fixture
def cdcs_success() -> ExportResult:
    """A successful CDCS result, as the notebooks read it."""
    return ExportResult(
        success=True,
        destination_name="cdcs",
        record_id="abc123",
        record_url="https://cdcs.example.org/data?id=abc123",
    )


@pytest.fixture
def fake_cdcs(monkeypatch: pytest.MonkeyPatch, short_timeouts: None) -> Iterator[FakeCDCS]:
    """A running fake CDCS, with ``NX_CDCS_*`` pointing at it; no ``//`` path allowed."""
    with FakeCDCS() as fake:
        monkeypatch.setenv("NX_CDCS_URL", fake.root_url)
        monkeypatch.setenv("NX_CDCS_TOKEN", fake.token)
        yield fake
    assert fake.double_slash_paths == [], "a request path contained '//'"


@pytest.fixture
def fake_elabftw(monkeypatch: pytest.MonkeyPatch, short_timeouts: None) -> Iterator[FakeELabFTW]:
    """A running fake eLabFTW, with ``NX_ELABFTW_*`` pointing at it."""
    with FakeELabFTW() as fake:
        monkeypatch.setenv("NX_ELABFTW_URL", fake.url)
        monkeypatch.setenv("NX_ELABFTW_API_KEY", fake.api_key)
        yield fake
    assert fake.double_slash_paths == [], "a request path contained '//'"


@pytest.fixture
def fake_labarchives(
    monkeypatch: pytest.MonkeyPatch, short_timeouts: None
) -> Iterator[FakeLabArchives]:
    """A running fake LabArchives with notebook ``nb-1``, calls unthrottled."""
    with FakeLabArchives() as fake:
        monkeypatch.setenv("NX_LABARCHIVES_URL", fake.api_url)
        monkeypatch.setenv("NX_LABARCHIVES_ACCESS_KEY_ID", fake.akid)
        monkeypatch.setenv("NX_LABARCHIVES_ACCESS_PASSWORD", fake.password)
        monkeypatch.setenv("NX_LABARCHIVES_USER_ID", fake.uid)
        monkeypatch.setenv("NX_LABARCHIVES_NOTEBOOK_ID", "nb-1")
        monkeypatch.setenv("NX_LABARCHIVES_MIN_CALL_INTERVAL", "0")
        yield fake
    assert fake.double_slash_paths == [], "a request path contained '//'"
