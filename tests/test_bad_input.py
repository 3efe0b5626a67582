"""Every bad record or request: a specific message, exit status 2, nothing queued, worker alive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from destinations.files.record import RecordError, check_record
from tests.samples import enqueue_arguments, record_text
from tests.support import nx_export, worker_env

XXE = """<?xml version="1.0"?>
<!DOCTYPE nx:Experiment [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">&secret;</nx:Experiment>
"""
BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">&lol3;</nx:Experiment>
"""
# The sample record's structure; a schema without its summary refuses it.
SCHEMA = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
           targetNamespace="https://data.nist.gov/od/dm/nexus/experiment/v1.0"
           elementFormDefault="qualified">
  <xs:element name="Experiment">
    <xs:complexType><xs:sequence>
      <xs:element name="title" type="xs:string"/>
      {summary}
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>
"""
SUMMARY = """<xs:element name="summary"><xs:complexType><xs:sequence>
        <xs:any namespace="##targetNamespace" processContents="lax" maxOccurs="unbounded"/>
      </xs:sequence></xs:complexType></xs:element>"""

def run_enqueue(record: Path, **env_extra: str) -> Any:
    env = {**worker_env(os.environ["NX_EXPORT_BROKER_URL"], None), **env_extra}
    return nx_export(*enqueue_arguments(record, "--destination", "alpha"), env=env)


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (b"\xff\xfe<nx:Experiment/>", {}, "is not UTF-8"),
        (XXE.encode(), {}, "declares XML entities, which are refused"),
        (BOMB.encode(), {}, "declares XML entities, which are refused"),
        (record_text("x" * 500).encode(), {"NX_EXPORT_MAX_RECORD_BYTES": "100"},
         "larger than NX_EXPORT_MAX_RECORD_BYTES (100)"),
        (record_text("t").encode(), {"NX_RECORDS_PATH": "/srv/records"},
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
    record = tmp_path / "record.xml"
    record.write_text(record_text("has a summary the schema does not allow"))
    without_summary = tmp_path / "experiment.xsd"
    without_summary.write_text(SCHEMA.format(summary=""))
    done = run_enqueue(record, NX_EXPORT_RECORD_SCHEMA=str(without_summary))
    assert done.returncode == 2
    assert "is not valid against experiment.xsd" in done.stderr
    with_summary = tmp_path / "with-summary.xsd"
    with_summary.write_text(SCHEMA.format(summary=SUMMARY))
    accepted = run_enqueue(record, NX_EXPORT_RECORD_SCHEMA=str(with_summary))
    assert accepted.returncode == 0, accepted.stderr


def test_entities_are_refused_without_being_expanded(tmp_path: Path) -> None:
    record = tmp_path / "bomb.xml"
    record.write_text(BOMB)
    with pytest.raises(RecordError, match="entities"):
        check_record(record, max_bytes=10_000)


def test_unreadable_record_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root in CI, where permissions cannot make a file unreadable.
    record = tmp_path / "record.xml"
    record.write_text(record_text("t"))

    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(record):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(RecordError, match=r"cannot read the record file .*: Permission denied"):
        check_record(record, max_bytes=10_000)


def test_record_below_records_path_is_accepted(tmp_path: Path) -> None:
    record = tmp_path / "inside" / "record.xml"
    record.parent.mkdir()
    record.write_text(record_text("t"))
    check_record(record, max_bytes=10_000, records_root=tmp_path)
    with pytest.raises(RecordError, match="outside NX_RECORDS_PATH"):
        check_record(record, max_bytes=10_000, records_root=tmp_path / "elsewhere")
