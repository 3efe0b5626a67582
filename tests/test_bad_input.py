"""Every bad record or request: a specific message, exit status 2, nothing queued, worker alive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from destinations.record import RecordError, check_record
from tests.conftest import RECORD
from tests.support import worker_env
from tests.test_cli import enqueue_arguments, nx_export

XXE = """<?xml version="1.0"?>
<!DOCTYPE nx:Experiment [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">&secret;</nx:Experiment>
"""
BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">&lol3;</nx:Experiment>
"""
SCHEMA = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
           targetNamespace="https://data.nist.gov/od/dm/nexus/experiment/v1.0"
           elementFormDefault="qualified">
  <xs:element name="Experiment">
    <xs:complexType><xs:sequence>
      <xs:element name="title" type="xs:string"/>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>
"""
VALID_FOR_SCHEMA = (
    '<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">'
    "<nx:title>ok</nx:title></nx:Experiment>"
)


def run_enqueue(record: Path, **env_extra: str) -> Any:
    env = {**worker_env(os.environ["NX_EXPORT_BROKER_URL"], None), **env_extra}
    return nx_export(*enqueue_arguments(record, "--destination", "alpha"), env=env)


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (b"\xff\xfe<nx:Experiment/>", {}, "is not UTF-8"),
        (XXE.encode(), {}, "declares XML entities, which are refused"),
        (BOMB.encode(), {}, "declares XML entities, which are refused"),
        (RECORD.format(title="x" * 500).encode(), {"NX_EXPORT_MAX_RECORD_BYTES": "100"},
         "larger than NX_EXPORT_MAX_RECORD_BYTES (100)"),
        (RECORD.format(title="t").encode(), {"NX_RECORDS_PATH": "/srv/records"},
         "is outside NX_RECORDS_PATH"),
    ],
)  # fmt: skip
def test_bad_record_exits_2_and_leaves_the_worker_running(
    session_worker: Any, app: Any, tmp_path: Path, content: bytes, env: dict[str, str], message: str
) -> None:
    record = tmp_path / "record.xml"
    record.write_bytes(content)
    jobs_before = app.backend.client.zcard("nxexport:jobs")
    done = run_enqueue(record, **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert app.backend.client.zcard("nxexport:jobs") == jobs_before
    assert session_worker.process.poll() is None


def test_record_invalid_against_the_configured_schema_is_refused(
    session_worker: Any, tmp_path: Path
) -> None:
    schema = tmp_path / "experiment.xsd"
    schema.write_text(SCHEMA)
    record = tmp_path / "record.xml"
    record.write_text(RECORD.format(title="has a summary the schema does not allow"))
    done = run_enqueue(record, NX_EXPORT_RECORD_SCHEMA=str(schema))
    assert done.returncode == 2
    assert "is not valid against experiment.xsd" in done.stderr
    record.write_text(VALID_FOR_SCHEMA)
    assert run_enqueue(record, NX_EXPORT_RECORD_SCHEMA=str(schema)).returncode == 0


def test_entities_are_refused_without_being_expanded(tmp_path: Path) -> None:
    record = tmp_path / "bomb.xml"
    record.write_text(BOMB)
    with pytest.raises(RecordError, match="entities"):
        check_record(record, max_bytes=10_000)


def test_unreadable_record_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root in CI, where permissions cannot make a file unreadable.
    record = tmp_path / "record.xml"
    record.write_text(RECORD.format(title="t"))

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(RecordError, match="cannot be read: Permission denied"):
        check_record(record, max_bytes=10_000)


def test_record_below_records_path_is_accepted(tmp_path: Path) -> None:
    record = tmp_path / "inside" / "record.xml"
    record.parent.mkdir()
    record.write_text(RECORD.format(title="t"))
    check_record(record, max_bytes=10_000, records_root=tmp_path)
    with pytest.raises(RecordError, match="outside NX_RECORDS_PATH"):
        check_record(record, max_bytes=10_000, records_root=tmp_path / "elsewhere")
