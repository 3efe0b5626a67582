"""The LabArchives destination against a fake LabArchives on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from destinations.builtin.labarchives.client import sign
from destinations.builtin.labarchives.destination import LabArchivesDestination, notebook_base_url
from destinations.contract import Activity, ExportContext, ExportResult
from destinations.errors import TransientExportError
from destinations.toolkit.rate_limit import MinIntervalLimiter
from worker.sandbox import FakeLabArchives

pytest_plugins = ["tests.fakes.fixtures"]

Context = Callable[..., ExportContext]
SESSION = "2026-03-04_FEI-Titan-TEM-635816_0001"
PAGE = f"2026-03-04 \u2014 {SESSION}"


def titles(fake: FakeLabArchives) -> list[str]:
    return [node["display_text"] for node in fake.nodes.values()]


def test_the_signature_matches_an_independent_computation() -> None:
    message = b"0123456789ABCDEF" + b"insert_node" + b"1772632800000"
    digest = hmac.new(b"s3cr3t-pass", message, hashlib.sha512).digest()
    expected = base64.b64encode(digest).decode()
    assert sign("0123456789ABCDEF", "s3cr3t-pass", "insert_node", "1772632800000") == expected


def test_every_call_is_signed_with_a_fresh_expiry_in_milliseconds(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    LabArchivesDestination().export(make_export_context())
    assert fake_labarchives.requests and fake_labarchives.signature_failures == []
    for logged in fake_labarchives.requests:
        method = logged.path.rsplit("/", 1)[-1]
        expires = logged.query["expires"]
        assert abs(int(expires) - time.time() * 1000) < 60_000
        message = f"{fake_labarchives.akid}{method}{expires}".encode()
        digest = hmac.new(fake_labarchives.password.encode(), message, hashlib.sha512).digest()
        assert logged.query["sig"] == base64.b64encode(digest).decode()
        assert logged.query["uid"] == fake_labarchives.uid


def test_export_writes_the_nexuslims_layout(
    fake_labarchives: FakeLabArchives, make_export_context: Context, nexus_record: Path
) -> None:
    result = LabArchivesDestination().export(make_export_context())

    assert result.success, result.error_message
    assert titles(fake_labarchives) == ["NexusLIMS Records", "FEI-Titan-TEM-635816", PAGE]
    root, instrument, page = fake_labarchives.nodes.values()
    assert (root["parent"], instrument["parent"], page["parent"]) == (
        "0", root["tree_id"], instrument["tree_id"],
    )
    assert not page["is_folder"]
    text, attachment = fake_labarchives.entries
    assert text["part_type"] == "text entry" and text["pid"] == page["tree_id"]
    assert attachment["caption"] == "NexusLIMS XML record"
    assert attachment["filename"] == nexus_record.name
    assert attachment["content"] == nexus_record.read_bytes()
    assert result.record_id == text["eid"]
    assert result.record_url == f"{fake_labarchives.url}/#/nb-1/{page['tree_id']}"


def test_the_summary_has_session_details_cdcs_link_and_previews(
    fake_labarchives: FakeLabArchives,
    make_export_context: Context,
    preview_image: Path,
    cdcs_success: ExportResult,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NX_DATA_PATH", str(preview_image.parent))
    context = make_export_context(activities=[Activity(previews=[str(preview_image), "/gone.png"])])
    context.add_result("cdcs", cdcs_success)
    LabArchivesDestination().export(context)
    html = fake_labarchives.entries[0]["entry_data"]
    for text in (SESSION, "FEI-Titan-TEM-635816", "ada", "2026-03-04T09:00:00"):
        assert text in html
    assert '<a href="https://cdcs.example.org/data?id=abc123">View in CDCS</a>' in html
    encoded = base64.b64encode(preview_image.read_bytes()).decode()
    assert f'src="data:image/png;base64,{encoded}"' in html
    assert html.count("<img") == 1


def test_user_strings_are_escaped_in_the_summary(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    LabArchivesDestination().export(make_export_context(user="<script>alert(1)</script>"))
    html = fake_labarchives.entries[0]["entry_data"]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_folders_are_reused_across_sessions(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    LabArchivesDestination().export(make_export_context())
    LabArchivesDestination().export(make_export_context(session_identifier="another-session"))
    assert titles(fake_labarchives) == [
        "NexusLIMS Records", "FEI-Titan-TEM-635816", PAGE, "2026-03-04 \u2014 another-session",
    ]


def test_without_a_notebook_id_the_inbox_is_used(
    fake_labarchives: FakeLabArchives, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NX_LABARCHIVES_NOTEBOOK_ID")
    result = LabArchivesDestination().export(make_export_context())
    assert result.success, result.error_message
    assert fake_labarchives.nodes == {}
    assert [(e["nbid"], e["pid"]) for e in fake_labarchives.entries] == [("0", "0"), ("0", "0")]
    assert result.record_url == fake_labarchives.url


def test_the_record_url_points_at_the_notebook_site() -> None:
    main = notebook_base_url("https://api.labarchives.com/api")
    assert main == "https://mynotebook.labarchives.com"
    regional = notebook_base_url("https://au-api.labarchives.com/api/")
    assert regional == "https://au-api.labarchives.com"


def test_a_base_url_with_trailing_slash_builds_clean_paths(
    fake_labarchives: FakeLabArchives, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_LABARCHIVES_URL", f"{fake_labarchives.api_url}/")
    assert LabArchivesDestination().export(make_export_context()).success
    assert all("//" not in r.path for r in fake_labarchives.requests)


def test_a_retry_after_success_creates_nothing_new(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    first = LabArchivesDestination().export(make_export_context())
    before = len(fake_labarchives.requests_to("insert_node")), len(fake_labarchives.entries)
    again = LabArchivesDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success and again.record_id == first.record_id
    assert again.record_url == first.record_url
    assert again.metadata["found_existing"] is True
    after = len(fake_labarchives.requests_to("insert_node")), len(fake_labarchives.entries)
    assert after == before


def test_a_retry_after_a_failed_attachment_completes_the_same_page(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.fail_next(503, on="add_attachment")
    with pytest.raises(TransientExportError, match="attach XML record"):
        LabArchivesDestination().export(make_export_context())
    again = LabArchivesDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success
    assert titles(fake_labarchives).count(PAGE) == 1
    assert [e["part_type"] for e in fake_labarchives.entries] == ["text entry", "Attachment"]


def test_a_connection_dropped_after_the_entry_does_not_duplicate_it(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.drop_after_create_next(on="add_entry")
    with pytest.raises(TransientExportError):
        LabArchivesDestination().export(make_export_context())
    assert LabArchivesDestination().find_existing(make_export_context()) is not None
    again = LabArchivesDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success
    assert [e["part_type"] for e in fake_labarchives.entries] == ["text entry", "Attachment"]


def test_find_existing_finds_nothing_before_the_first_export(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    assert LabArchivesDestination().find_existing(make_export_context()) is None
    assert fake_labarchives.nodes == {}


@pytest.mark.parametrize("legacy", [False, True])
def test_a_wrong_password_is_refused_credentials_without_secrets(
    fake_labarchives: FakeLabArchives,
    make_export_context: Context,
    monkeypatch: pytest.MonkeyPatch,
    legacy: bool,
) -> None:
    fake_labarchives.legacy_errors = legacy
    monkeypatch.setenv("NX_LABARCHIVES_ACCESS_PASSWORD", "not-the-password")
    result = LabArchivesDestination().export(make_export_context())
    message = str(result.error_message)
    assert not result.success
    assert "credentials were refused" in message and "4506" in message
    assert fake_labarchives.akid not in message and "not-the-password" not in message
    assert "sig=" not in message


def test_a_notebook_without_access_is_a_permission_failure(
    fake_labarchives: FakeLabArchives, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_LABARCHIVES_NOTEBOOK_ID", "nb-someone-else")
    result = LabArchivesDestination().export(make_export_context())
    assert not result.success and "permission refused" in str(result.error_message)


def test_any_5xx_asks_for_a_retry(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.fail_next(500, on="insert_node")
    with pytest.raises(TransientExportError, match="HTTP 500"):
        LabArchivesDestination().export(make_export_context())


def test_an_html_error_page_with_5xx_asks_for_a_retry(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.html_error_next(500)
    with pytest.raises(TransientExportError):
        LabArchivesDestination().export(make_export_context())


def test_an_html_page_instead_of_xml_is_a_failure(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.html_error_next(200, on="get_tree_level")
    result = LabArchivesDestination().export(make_export_context())
    assert not result.success
    assert "expected XML, got text/html" in str(result.error_message)


def test_a_malformed_answer_is_a_failure(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.malformed_next(on="insert_node")
    result = LabArchivesDestination().export(make_export_context())
    assert not result.success and "unexpected answer" in str(result.error_message)


def test_a_read_timeout_asks_for_a_retry(
    fake_labarchives: FakeLabArchives, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "0.2")
    fake_labarchives.stall_next(1.0, on="add_entry")
    with pytest.raises(TransientExportError, match="timed out"):
        LabArchivesDestination().export(make_export_context())


def test_a_redirect_to_another_host_is_not_followed(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    with FakeLabArchives() as elsewhere:
        fake_labarchives.redirect_to = elsewhere.url
        result = LabArchivesDestination().export(make_export_context())
    assert not result.success
    assert "redirected to another host" in str(result.error_message)
    assert fake_labarchives.akid not in str(result.error_message)
    assert elsewhere.requests == []


def test_calls_are_spaced_by_the_minimum_interval(
    fake_labarchives: FakeLabArchives, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the limiter promises is when each call may leave; the fake's arrival times
    # also carry the network's and the scheduler's jitter, so the calls are timed where
    # the limiter lets them go.
    monkeypatch.setenv("NX_LABARCHIVES_MIN_CALL_INTERVAL", "0.15")
    starts: list[float] = []

    class TimedLimiter(MinIntervalLimiter):
        def wait(self) -> None:
            super().wait()
            starts.append(self.last_start)

    LabArchivesDestination(limiter=TimedLimiter(0.15)).export(make_export_context())
    assert len(starts) == len(fake_labarchives.requests) >= 5  # every call went through it
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.15


def test_the_limiter_spaces_calls_across_threads() -> None:
    limiter = MinIntervalLimiter(0.05)
    stamps: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        limiter.wait()
        with lock:
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    assert min(b - a for a, b in itertools.pairwise(stamps)) >= 0.045


def test_a_missing_record_file_is_a_failure(
    fake_labarchives: FakeLabArchives, make_export_context: Context, tmp_path: Path
) -> None:
    context = make_export_context(xml_file_path=tmp_path / "gone.xml")
    result = LabArchivesDestination().export(context)
    assert not result.success and "cannot read the record file" in str(result.error_message)
    assert fake_labarchives.requests == []


def test_enabled_only_with_all_credentials(
    fake_labarchives: FakeLabArchives, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LabArchivesDestination().enabled
    monkeypatch.delenv("NX_LABARCHIVES_USER_ID")
    assert not LabArchivesDestination().enabled


def test_validate_config_accepts_a_working_setup(fake_labarchives: FakeLabArchives) -> None:
    assert LabArchivesDestination().validate_config() == (True, None)


def test_the_check_finds_or_creates_the_root_folder_once(
    fake_labarchives: FakeLabArchives,
) -> None:
    assert LabArchivesDestination().validate_config() == (True, None)
    assert LabArchivesDestination().validate_config() == (True, None)
    assert titles(fake_labarchives) == ["NexusLIMS Records"]
    assert len(fake_labarchives.requests_to("insert_node")) == 1


def test_after_the_check_a_new_instrument_costs_five_calls(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    destination = LabArchivesDestination()
    assert destination.validate_config() == (True, None)
    checked = len(fake_labarchives.requests)
    assert destination.export(make_export_context()).success
    calls = [r.path.rsplit("/", 1)[-1] for r in fake_labarchives.requests[checked:]]
    # The root folder is remembered: only the instrument's level is listed.
    assert calls == [
        "get_tree_level", "insert_node", "insert_node", "add_entry", "add_attachment",
    ]
    assert titles(fake_labarchives) == ["NexusLIMS Records", "FEI-Titan-TEM-635816", PAGE]


def test_validate_config_names_a_notebook_without_access(
    fake_labarchives: FakeLabArchives, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_LABARCHIVES_NOTEBOOK_ID", "nb-someone-else")
    ok, message = LabArchivesDestination().validate_config()
    assert not ok and "permission refused" in str(message)
    assert fake_labarchives.nodes == {}


def test_validate_config_names_a_missing_setting(
    fake_labarchives: FakeLabArchives, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NX_LABARCHIVES_ACCESS_PASSWORD")
    ok, message = LabArchivesDestination().validate_config()
    assert not ok and "setting missing" in str(message)
    assert "NX_LABARCHIVES_ACCESS_PASSWORD" in str(message)


def test_validate_config_names_refused_credentials(
    fake_labarchives: FakeLabArchives, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_LABARCHIVES_ACCESS_KEY_ID", "akid_wrong_0001")
    ok, message = LabArchivesDestination().validate_config()
    assert not ok and "credentials were refused" in str(message)
    assert "akid_wrong_0001" not in str(message)


def test_validate_config_names_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeLabArchives() as stopped:
        monkeypatch.setenv("NX_LABARCHIVES_URL", stopped.api_url)
        monkeypatch.setenv("NX_LABARCHIVES_ACCESS_KEY_ID", stopped.akid)
        monkeypatch.setenv("NX_LABARCHIVES_ACCESS_PASSWORD", stopped.password)
        monkeypatch.setenv("NX_LABARCHIVES_USER_ID", stopped.uid)
    monkeypatch.setenv("NX_LABARCHIVES_MIN_CALL_INTERVAL", "0")
    ok, message = LabArchivesDestination().validate_config()
    assert not ok and "host unreachable" in str(message)
    # The place: host and port tried, and the setting they came from.
    assert f":{urlsplit(stopped.api_url).port} from NX_LABARCHIVES_URL" in str(message)


def test_validate_config_names_an_unexpected_answer(fake_labarchives: FakeLabArchives) -> None:
    fake_labarchives.fail_next(200, body="<users><name>x</name></users>", content_type="text/xml")
    ok, message = LabArchivesDestination().validate_config()
    assert not ok and "unexpected answer" in str(message)


def test_a_plain_401_without_xml_is_still_refused_credentials(
    fake_labarchives: FakeLabArchives, make_export_context: Context
) -> None:
    fake_labarchives.html_error_next(401)
    result = LabArchivesDestination().export(make_export_context())
    assert not result.success and "credentials were refused" in str(result.error_message)
