"""The CDCS destination against a fake CDCS on loopback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from destinations.builtin.cdcs import destination as cdcs_module
from destinations.builtin.cdcs.destination import CDCSDestination
from destinations.contract import ExportContext, ReservationEvent
from destinations.errors import TransientExportError
from worker.sandbox import FakeCDCS

pytest_plugins = ["tests.fakes.fixtures"]

Context = Callable[..., ExportContext]


@pytest.fixture(autouse=True)
def fresh_template_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty per-process template cache (ports get reused)."""
    monkeypatch.setattr(cdcs_module, "_id_cache", {})


def test_export_uploads_the_record_and_assigns_the_public_workspace(
    fake_cdcs: FakeCDCS, make_export_context: Context, nexus_record: Path
) -> None:
    result = CDCSDestination().export(make_export_context())

    assert result.success, result.error_message
    record = fake_cdcs.records[str(result.record_id)]
    assert record["title"] == nexus_record.stem == "2026-03-04_FEI-Titan-TEM-635816_0001"
    assert record["xml_content"] == nexus_record.read_text()
    assert record["template"] == fake_cdcs.template_id
    assert record["workspace"] == "ws-public"
    assert result.record_url == f"{fake_cdcs.url}/data?id={result.record_id}"


def test_a_root_without_trailing_slash_builds_the_same_paths(
    fake_cdcs: FakeCDCS, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_CDCS_URL", fake_cdcs.url)
    result = CDCSDestination().export(make_export_context())
    assert result.success, result.error_message
    assert result.record_url == f"{fake_cdcs.url}/data?id={result.record_id}"
    assert len(fake_cdcs.requests_to("POST /rest/data/")) == 1


def test_workspace_assignment_can_be_turned_off(
    fake_cdcs: FakeCDCS, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_CDCS_ASSIGN_TO_PUBLIC_WORKSPACE", "false")
    result = CDCSDestination().export(make_export_context())
    assert fake_cdcs.records[str(result.record_id)]["workspace"] is None
    assert fake_cdcs.requests_to("/rest/workspace/") == []


def test_the_template_id_is_looked_up_once_per_process(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    CDCSDestination().export(make_export_context())
    CDCSDestination().export(make_export_context())
    assert len(fake_cdcs.records) == 2
    assert len(fake_cdcs.requests_to("/rest/template-version-manager/")) == 1


def test_the_template_id_is_looked_up_again_when_the_cache_expired(
    fake_cdcs: FakeCDCS, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cdcs_module, "TEMPLATE_CACHE_SECONDS", 0.0)
    CDCSDestination().export(make_export_context())
    CDCSDestination().export(make_export_context())
    assert len(fake_cdcs.requests_to("/rest/template-version-manager/")) == 2


def test_a_wrong_token_is_a_failure_that_names_refused_credentials(
    fake_cdcs: FakeCDCS, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_CDCS_TOKEN", "wrong-token-123")
    result = CDCSDestination().export(make_export_context())
    assert not result.success
    assert "credentials were refused" in str(result.error_message)
    assert "HTTP 401" in str(result.error_message)
    assert "wrong-token-123" not in str(result.error_message)


def test_503_on_upload_asks_for_a_retry(fake_cdcs: FakeCDCS, make_export_context: Context) -> None:
    fake_cdcs.fail_next(503, on="POST /rest/data/")
    with pytest.raises(TransientExportError, match="upload record"):
        CDCSDestination().export(make_export_context())
    assert fake_cdcs.records == {}


def test_429_passes_on_retry_after(fake_cdcs: FakeCDCS, make_export_context: Context) -> None:
    fake_cdcs.fail_next(429, on="POST /rest/data/", retry_after="30")
    with pytest.raises(TransientExportError) as caught:
        CDCSDestination().export(make_export_context())
    assert caught.value.retry_after == 30


def test_500_is_a_failure_result_not_a_retry(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    fake_cdcs.fail_next(500, on="POST /rest/data/", body="Internal error")
    result = CDCSDestination().export(make_export_context())
    assert not result.success
    assert "HTTP 500" in str(result.error_message)


def test_a_read_timeout_asks_for_a_retry(
    fake_cdcs: FakeCDCS, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "0.2")
    fake_cdcs.stall_next(1.0, on="POST /rest/data/")
    with pytest.raises(TransientExportError, match="timed out"):
        CDCSDestination().export(make_export_context())


def test_a_malformed_answer_is_a_failure(fake_cdcs: FakeCDCS, make_export_context: Context) -> None:
    fake_cdcs.malformed_next(on="POST /rest/data/")
    result = CDCSDestination().export(make_export_context())
    assert not result.success
    assert "malformed JSON" in str(result.error_message)


def test_an_html_page_instead_of_json_is_a_failure(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    fake_cdcs.html_error_next(200, on="/rest/template-version-manager/")
    result = CDCSDestination().export(make_export_context())
    assert not result.success
    assert "expected JSON, got text/html" in str(result.error_message)


def test_an_html_gateway_error_asks_for_a_retry(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    fake_cdcs.html_error_next(502, on="POST /rest/data/")
    with pytest.raises(TransientExportError, match="HTTP 502"):
        CDCSDestination().export(make_export_context())


def test_a_redirect_to_another_host_is_not_followed(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    with FakeCDCS() as elsewhere:
        fake_cdcs.redirect_to = elsewhere.url
        result = CDCSDestination().export(make_export_context())
    assert not result.success
    assert "redirected to another host" in str(result.error_message)
    assert elsewhere.requests == []


def test_a_retry_finds_the_record_instead_of_uploading_again(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    first = CDCSDestination().export(make_export_context())
    again = CDCSDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success and again.record_id == first.record_id
    assert again.metadata["found_existing"] is True
    assert len(fake_cdcs.records) == 1


def test_a_connection_dropped_after_upload_does_not_duplicate_the_record(
    fake_cdcs: FakeCDCS, make_export_context: Context
) -> None:
    fake_cdcs.paged_queries = True
    fake_cdcs.drop_after_create_next(on="POST /rest/data/")
    with pytest.raises(TransientExportError, match="connection lost"):
        CDCSDestination().export(make_export_context())
    again = CDCSDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success
    assert list(fake_cdcs.records) == [again.record_id]
    assert fake_cdcs.records[str(again.record_id)]["workspace"] == "ws-public"


def test_a_first_attempt_does_not_search(fake_cdcs: FakeCDCS, make_export_context: Context) -> None:
    CDCSDestination().export(make_export_context())
    assert fake_cdcs.requests_to("/rest/data/query/") == []


def test_user_owned_records_go_to_the_sessions_user(
    fake_cdcs: FakeCDCS, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_CDCS_USER_OWNED_RECORDS", "true")
    event = ReservationEvent("ada", "ada@example.org", "Ada", "Lovelace")
    result = CDCSDestination().export(make_export_context(reservation_event=event))
    assert [u["username"] for u in fake_cdcs.users] == ["ada"]
    assert fake_cdcs.records[str(result.record_id)]["owner"] == fake_cdcs.users[0]["id"]


def test_user_ownership_failure_only_warns(
    fake_cdcs: FakeCDCS,
    make_export_context: Context,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NX_CDCS_USER_OWNED_RECORDS", "true")
    fake_cdcs.superuser = False
    with caplog.at_level(logging.WARNING, logger="destinations.builtin.cdcs.destination"):
        result = CDCSDestination().export(make_export_context())
    assert result.success
    assert fake_cdcs.records[str(result.record_id)]["owner"] == "1"
    assert "stays admin-owned" in caplog.text


def test_a_missing_record_file_is_a_failure(
    fake_cdcs: FakeCDCS, make_export_context: Context, tmp_path: Path
) -> None:
    context = make_export_context(xml_file_path=tmp_path / "gone.xml")
    result = CDCSDestination().export(context)
    assert not result.success
    assert "cannot read the record file" in str(result.error_message)


def test_enabled_only_with_url_and_token(
    fake_cdcs: FakeCDCS, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CDCSDestination().enabled
    monkeypatch.delenv("NX_CDCS_TOKEN")
    assert not CDCSDestination().enabled


def test_validate_config_accepts_a_working_setup(fake_cdcs: FakeCDCS) -> None:
    assert CDCSDestination().validate_config() == (True, None)


def test_validate_config_names_a_missing_setting(
    fake_cdcs: FakeCDCS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NX_CDCS_TOKEN")
    ok, message = CDCSDestination().validate_config()
    assert not ok and "setting missing" in str(message) and "NX_CDCS_TOKEN" in str(message)


def test_validate_config_names_refused_credentials(
    fake_cdcs: FakeCDCS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_CDCS_TOKEN", "nope-nope")
    ok, message = CDCSDestination().validate_config()
    assert not ok and "credentials were refused" in str(message)


def test_validate_config_names_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeCDCS() as stopped:
        monkeypatch.setenv("NX_CDCS_URL", stopped.root_url)
        monkeypatch.setenv("NX_CDCS_TOKEN", stopped.token)
    ok, message = CDCSDestination().validate_config()
    assert not ok and "host unreachable" in str(message)
    # The place: host and port tried, and the setting they came from.
    assert f":{urlsplit(stopped.root_url).port} from NX_CDCS_URL" in str(message)


def test_validate_config_names_an_unexpected_answer(fake_cdcs: FakeCDCS) -> None:
    fake_cdcs.html_error_next(200)
    ok, message = CDCSDestination().validate_config()
    assert not ok and "unexpected answer" in str(message)
