"""Records beyond the parsers' limits, and archive names that must not collide or hide."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from destinations.builtin.local import LocalArchiveDestination
from destinations.contract import ExportContext
from destinations.files.record import RecordError, check_record
from tests.samples import enqueue_arguments
from tests.support import nx_export, worker_env

NS = "https://data.nist.gov/od/dm/nexus/experiment/v1.0"
SCHEMA = f"""<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="{NS}"
           elementFormDefault="qualified">
  <xs:element name="Experiment"><xs:complexType><xs:sequence>
    <xs:any processContents="skip" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>
"""
DEEP = f'<nx:Experiment xmlns:nx="{NS}">' + "<a>" * 3000 + "</a>" * 3000 + "</nx:Experiment>"


def test_a_deeply_nested_record_is_a_record_error(tmp_path: Path) -> None:
    schema, record = tmp_path / "s.xsd", tmp_path / "deep.xml"
    schema.write_text(SCHEMA)
    record.write_text(DEEP)
    with pytest.raises(RecordError, match=r"cannot be checked against s\.xsd: Excessive depth"):
        check_record(record, max_bytes=10**7, schema=schema)


def test_a_deep_record_exits_2_with_a_message(session_worker: Any, tmp_path: Path) -> None:
    schema, record = tmp_path / "s.xsd", tmp_path / "deep.xml"
    schema.write_text(SCHEMA)
    record.write_text(DEEP)
    env = worker_env(os.environ["NX_EXPORT_BROKER_URL"], None, NX_EXPORT_RECORD_SCHEMA=str(schema))
    done = nx_export(*enqueue_arguments(record, "--destination", "alpha"), env=env)
    assert done.returncode == 2, done.stderr
    assert "Excessive depth" in done.stderr
    assert "Traceback" not in done.stderr


def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session: str) -> Path:
    monkeypatch.setenv("NX_EXPORT_LOCAL_PATH", str(tmp_path / "archive"))
    record = tmp_path / "r.xml"
    record.write_text(f'<nx:Experiment xmlns:nx="{NS}"/>')
    moment = datetime(2026, 3, 4, 9)
    context = ExportContext(record, session, "FEI-Titan", moment, moment)
    result = LocalArchiveDestination().export(context)
    assert result.success, result.error_message
    assert result.record_id is not None
    return tmp_path / "archive" / result.record_id


@pytest.mark.parametrize(("first", "second"), [("a/b", "a_b"), ("a%2Fb", "a/b"), ("x y", "x_y")])
def test_different_sessions_never_share_an_archive_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, second: str
) -> None:
    assert archive(tmp_path, monkeypatch, first) != archive(tmp_path, monkeypatch, second)


@pytest.mark.parametrize("session", [".hidden", "..", "../up", "."])
def test_archive_names_are_never_hidden_or_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session: str
) -> None:
    written = archive(tmp_path, monkeypatch, session)
    assert not written.name.startswith(".")
    assert written.parent.parent == tmp_path / "archive"
