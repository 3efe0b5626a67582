"""The eLabFTW destination against a fake eLabFTW on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from destinations.builtin.elabftw import ELabFTWDestination
from destinations.contract import ExportContext, ExportResult
from destinations.errors import TransientExportError
from worker.sandbox import FakeELabFTW

pytest_plugins = ["tests.fakes.fixtures"]

Context = Callable[..., ExportContext]
SESSION = "2026-03-04_FEI-Titan-TEM-635816_0001"


def only_experiment(fake: FakeELabFTW) -> dict[str, object]:
    assert len(fake.experiments) == 1
    return next(iter(fake.experiments.values()))


def test_export_creates_an_experiment_with_the_xml_attached(
    fake_elabftw: FakeELabFTW, make_export_context: Context, nexus_record: Path
) -> None:
    context = make_export_context()
    result = ELabFTWDestination().export(context)

    assert result.success, result.error_message
    experiment = only_experiment(fake_elabftw)
    assert result.record_id == str(experiment["id"])
    expected_url = f"{fake_elabftw.url}/experiments.php?mode=view&id={experiment['id']}"
    assert result.record_url == expected_url
    assert experiment["title"] == f"NexusLIMS - FEI-Titan-TEM-635816 - {context.session_identifier}"
    assert experiment["content_type"] == 1
    assert experiment["tags"] == [
        "NexusLIMS", "FEI-Titan-TEM-635816", "ada", f"nx-session:{context.session_identifier}",
    ]
    [upload] = fake_elabftw.uploads
    assert upload["real_name"] == nexus_record.name
    assert upload["comment"] == "NexusLIMS XML record"
    assert upload["content"] == nexus_record.read_bytes()


def test_the_body_lists_the_session_details(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    ELabFTWDestination().export(make_export_context())
    body = str(only_experiment(fake_elabftw)["body"])
    assert "Session Details" in body
    for text in ("2026-03-04_FEI-Titan-TEM-635816_0001", "FEI-Titan-TEM-635816", "ada",
                 "2026-03-04T09:00:00", "2026-03-04T13:30:00", "attached"):
        assert text in body


def test_extra_fields_follow_the_elabftw_schema(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    ELabFTWDestination().export(make_export_context())
    metadata = only_experiment(fake_elabftw)["metadata"]
    assert isinstance(metadata, dict)
    fields = metadata["extra_fields"]
    assert fields["Session ID"]["value"] == "2026-03-04_FEI-Titan-TEM-635816_0001"
    assert fields["Session ID"]["group_id"] == 1 and fields["Session ID"]["position"] == 1
    assert fields["Start Time"] == {
        "type": "datetime-local", "value": "2026-03-04T09:00", "position": 3, "group_id": 1,
    }
    assert fields["End Time"]["value"] == "2026-03-04T13:30"
    assert metadata["elabftw"]["display_main_text"] is True
    assert "CDCS Record" not in fields


def test_the_cdcs_record_is_linked_when_cdcs_succeeded(
    fake_elabftw: FakeELabFTW, make_export_context: Context, cdcs_success: ExportResult
) -> None:
    context = make_export_context()
    context.add_result("cdcs", cdcs_success)
    ELabFTWDestination().export(context)
    experiment = only_experiment(fake_elabftw)
    assert '<a href="https://cdcs.example.org/data?id=abc123">View in CDCS</a>' in str(
        experiment["body"]
    )
    metadata = experiment["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["extra_fields"]["CDCS Record"]["value"] == cdcs_success.record_url
    assert metadata["extra_fields"]["CDCS Record"]["type"] == "url"


def test_a_failed_cdcs_export_is_not_linked(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    context = make_export_context()
    context.add_result("cdcs", ExportResult(success=False, destination_name="cdcs",
                                            error_message="down"))
    ELabFTWDestination().export(context)
    assert "View in CDCS" not in str(only_experiment(fake_elabftw)["body"])


def test_user_strings_are_escaped_in_the_body(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    context = make_export_context(user="<script>alert(1)</script>")
    context.add_result("cdcs", ExportResult(
        success=True, destination_name="cdcs", record_url='https://c/data?id=1"><script>x',
    ))
    ELabFTWDestination().export(context)
    body = str(only_experiment(fake_elabftw)["body"])
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_category_and_status_are_sent_when_set(
    fake_elabftw: FakeELabFTW, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_ELABFTW_EXPERIMENT_CATEGORY", "4")
    monkeypatch.setenv("NX_ELABFTW_EXPERIMENT_STATUS", "2")
    ELabFTWDestination().export(make_export_context())
    experiment = only_experiment(fake_elabftw)
    assert (experiment["category"], experiment["status"]) == (4, 2)


def test_empty_category_means_unset(
    fake_elabftw: FakeELabFTW, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_ELABFTW_EXPERIMENT_CATEGORY", "")
    assert ELabFTWDestination().export(make_export_context()).success
    assert only_experiment(fake_elabftw)["category"] is None


def test_a_root_with_trailing_slash_builds_clean_paths(
    fake_elabftw: FakeELabFTW, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_ELABFTW_URL", f"{fake_elabftw.url}/")
    result = ELabFTWDestination().export(make_export_context())
    assert result.success, result.error_message
    assert "//experiments.php" not in str(result.record_url)
    assert all("//" not in r.path for r in fake_elabftw.requests)


def test_a_wrong_key_is_a_failure_without_the_key(
    fake_elabftw: FakeELabFTW, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_ELABFTW_API_KEY", "9-wrongwrongwrong")
    result = ELabFTWDestination().export(make_export_context())
    assert not result.success
    assert "credentials were refused" in str(result.error_message)
    assert "wrongwrongwrong" not in str(result.error_message)
    assert fake_elabftw.experiments == {}


def test_503_on_create_asks_for_a_retry(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    fake_elabftw.fail_next(503, on="POST /api/v2/experiments")
    with pytest.raises(TransientExportError):
        ELabFTWDestination().export(make_export_context())
    assert fake_elabftw.experiments == {}


def test_500_is_a_failure_result(fake_elabftw: FakeELabFTW, make_export_context: Context) -> None:
    fake_elabftw.fail_next(500, on="POST /api/v2/experiments")
    result = ELabFTWDestination().export(make_export_context())
    assert not result.success and "HTTP 500" in str(result.error_message)


def test_a_read_timeout_asks_for_a_retry(
    fake_elabftw: FakeELabFTW, make_export_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "0.2")
    fake_elabftw.stall_next(1.0, on="POST /api/v2/experiments")
    with pytest.raises(TransientExportError, match="timed out"):
        ELabFTWDestination().export(make_export_context())


def test_a_create_answer_without_location_is_a_failure(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    fake_elabftw.malformed_next(on="POST /api/v2/experiments")
    result = ELabFTWDestination().export(make_export_context())
    assert not result.success
    assert "no id in the Location header" in str(result.error_message)


def test_an_html_error_page_is_a_failure(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    fake_elabftw.html_error_next(200, on="GET /api/v2/experiments")
    result = ELabFTWDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert not result.success
    assert "expected JSON, got text/html" in str(result.error_message)


def test_a_redirect_to_another_host_is_not_followed(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    with FakeELabFTW(api_key=fake_elabftw.api_key) as elsewhere:
        fake_elabftw.redirect_to = elsewhere.url
        result = ELabFTWDestination().export(make_export_context())
    assert not result.success
    assert "redirected to another host" in str(result.error_message)
    assert elsewhere.requests == []


def test_a_retry_after_success_creates_nothing_new(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    first = ELabFTWDestination().export(make_export_context())
    again = ELabFTWDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success and again.record_id == first.record_id
    assert again.metadata["found_existing"] is True
    assert len(fake_elabftw.experiments) == 1 and len(fake_elabftw.uploads) == 1


def test_a_retry_after_a_failed_upload_attaches_to_the_same_experiment(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    fake_elabftw.fail_next(503, on="/uploads")
    with pytest.raises(TransientExportError, match="attach XML record"):
        ELabFTWDestination().export(make_export_context())
    assert fake_elabftw.uploads == []
    again = ELabFTWDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success
    assert len(fake_elabftw.experiments) == 1
    assert [u["experiment_id"] for u in fake_elabftw.uploads] == [int(str(again.record_id))]


def test_a_connection_dropped_after_create_does_not_duplicate(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    fake_elabftw.drop_after_create_next(on="POST /api/v2/experiments")
    with pytest.raises(TransientExportError):
        ELabFTWDestination().export(make_export_context())
    again = ELabFTWDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert again.success
    assert len(fake_elabftw.experiments) == 1 and len(fake_elabftw.uploads) == 1


def test_other_sessions_are_not_mistaken_for_this_one(
    fake_elabftw: FakeELabFTW, make_export_context: Context
) -> None:
    # Its id contains this session's id, so the text search finds it too.
    ELabFTWDestination().export(make_export_context(session_identifier=f"{SESSION}-b"))
    ELabFTWDestination().export(make_export_context(metadata={"export_attempt": 2}))
    assert len(fake_elabftw.experiments) == 2


def test_a_missing_record_file_is_a_failure(
    fake_elabftw: FakeELabFTW, make_export_context: Context, tmp_path: Path
) -> None:
    result = ELabFTWDestination().export(make_export_context(xml_file_path=tmp_path / "gone.xml"))
    assert not result.success and "cannot read the record file" in str(result.error_message)
    assert fake_elabftw.experiments == {}


def test_enabled_only_with_url_and_key(
    fake_elabftw: FakeELabFTW, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ELabFTWDestination().enabled
    monkeypatch.setenv("NX_ELABFTW_API_KEY", "")
    assert not ELabFTWDestination().enabled


def test_validate_config_accepts_a_working_setup(fake_elabftw: FakeELabFTW) -> None:
    assert ELabFTWDestination().validate_config() == (True, None)


def test_validate_config_names_a_missing_setting(
    fake_elabftw: FakeELabFTW, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NX_ELABFTW_URL")
    ok, message = ELabFTWDestination().validate_config()
    assert not ok and "setting missing" in str(message) and "NX_ELABFTW_URL" in str(message)


def test_validate_config_names_refused_credentials(
    fake_elabftw: FakeELabFTW, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_ELABFTW_API_KEY", f"Bearer {fake_elabftw.api_key}")
    ok, message = ELabFTWDestination().validate_config()
    assert not ok and "credentials were refused" in str(message)
    assert fake_elabftw.api_key not in str(message)


def test_validate_config_names_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeELabFTW() as stopped:
        monkeypatch.setenv("NX_ELABFTW_URL", stopped.url)
        monkeypatch.setenv("NX_ELABFTW_API_KEY", stopped.api_key)
    ok, message = ELabFTWDestination().validate_config()
    assert not ok and "host unreachable" in str(message)
    # The place: host and port tried, and the setting they came from.
    assert f":{urlsplit(stopped.url).port} from NX_ELABFTW_URL" in str(message)


def test_validate_config_names_an_unexpected_answer(fake_elabftw: FakeELabFTW) -> None:
    fake_elabftw.malformed_next()
    ok, message = ELabFTWDestination().validate_config()
    assert not ok and "unexpected answer" in str(message)
