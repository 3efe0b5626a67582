"""Which CDCS record is the session's: titles, nx:id and content checksums (pure)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from destinations.builtin.cdcs.records import OLDER, SAME, SessionRecord, content_checksum
from destinations.contract import ExportContext

NS = "https://data.nist.gov/od/dm/nexus/experiment/v1.0"
PLAIN = f'<nx:Experiment xmlns:nx="{NS}"><nx:title>T</nx:title></nx:Experiment>'


def nexus(session: str, title: str = "T") -> str:
    return (f'<nx:Experiment xmlns:nx="{NS}"><nx:title>{title}</nx:title>'
            f"<nx:id>{session}</nx:id></nx:Experiment>")  # fmt: skip


def context(session: str, path: str = "/records/rec.xml") -> ExportContext:
    return ExportContext(
        xml_file_path=Path(path), session_identifier=session, instrument_pid="i",
        dt_from=datetime(2026, 3, 4, 9), dt_to=datetime(2026, 3, 4, 10),
    )  # fmt: skip


def test_a_record_that_names_no_session_gets_it_in_the_title() -> None:
    assert SessionRecord.of(context("s-1"), PLAIN).title == "rec (s-1)"
    assert SessionRecord.of(context("rec"), PLAIN).title == "rec"
    assert SessionRecord.of(context("s-1"), nexus("s-1")).title == "rec"


def test_a_record_of_another_session_is_never_the_sessions() -> None:
    ours = SessionRecord.of(context("s-1"), nexus("s-1"))
    theirs = {"id": "9", "title": "rec", "xml_content": nexus("s-2")}
    assert ours.verdict(theirs) is None
    assert ours.verdict({"id": "9", "title": "rec", "xml_content": PLAIN}) is None
    plain = SessionRecord.of(context("s-1"), PLAIN)
    assert plain.verdict({"id": "9", "title": "rec (s-2)", "xml_content": PLAIN}) is None


def test_same_session_same_content_or_an_earlier_build() -> None:
    ours = SessionRecord.of(context("s-1"), nexus("s-1", "second"))
    assert ours.verdict({"id": "1", "title": "rec", "xml_content": nexus("s-1", "second")}) == SAME
    assert ours.verdict({"id": "1", "title": "rec", "xml_content": nexus("s-1", "first")}) == OLDER


def test_the_checksum_ignores_how_the_service_reserialised_the_xml() -> None:
    spaced = (f'<?xml version="1.0"?>\n<nx:Experiment xmlns:nx="{NS}">\n'
              "  <nx:title>T</nx:title>\n</nx:Experiment>\n")  # fmt: skip
    prefixed = f'<e:Experiment xmlns:e="{NS}"><e:title>T</e:title></e:Experiment>'
    assert content_checksum(spaced) == content_checksum(PLAIN) == content_checksum(prefixed)
    assert content_checksum(PLAIN) != content_checksum(PLAIN.replace(">T<", ">U<"))
