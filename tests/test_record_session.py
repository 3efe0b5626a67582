"""Reading a session's id, instrument, times and user from its NexusLIMS record."""

from __future__ import annotations

from pathlib import Path

import pytest

from destinations.files.record import RecordError
from destinations.files.record_session import FIELD_SOURCES, read_record_session
from tests.samples import session_record_text

SESSION = "2026-03-04_FEI-Titan-TEM-635816_0001"



def test_every_field_is_read(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text(session_record_text(SESSION, user=" Zoë Ødegård "), encoding="utf-8")
    session = read_record_session(path)
    assert session.session_identifier == "2026-03-04_FEI-Titan-TEM-635816_0001"
    assert session.instrument_pid == "FEI-Titan-TEM-635816"
    assert session.dt_from == "2026-03-04T09:00:00-05:00"
    assert session.dt_to == "2026-03-04T13:30:00-05:00"
    assert session.user == "Zoë Ødegård"
    assert session.missing() == []


def test_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    text = session_record_text(SESSION).replace(f"<nx:id>{SESSION}</nx:id>", "")
    path.write_text(text.replace(' pid="FEI-Titan-TEM-635816"', ""), encoding="utf-8")
    session = read_record_session(path)
    assert session.missing() == ["session_identifier", "instrument_pid"]
    assert FIELD_SOURCES["instrument_pid"] == "nx:summary/nx:instrument/@pid"


def test_an_unparsable_record_is_a_record_error(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text("<nx:Experiment", encoding="utf-8")
    with pytest.raises(RecordError, match="cannot be parsed"):
        read_record_session(path)
