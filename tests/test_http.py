"""The shared HTTP layer: URLs, classification of failures, redirects, secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from destinations.errors import PermanentExportError, TransientExportError
from destinations.toolkit import http
from destinations.toolkit.http import (
    CredentialsRefused,
    HostUnreachable,
    HttpSettings,
    UnexpectedAnswer,
    join_url,
    parse_json,
    parse_retry_after,
    parse_xml,
    request,
)
from worker.sandbox.server import FakeService

pytest_plugins = ["tests.fakes.fixtures"]

SECRET = "tok-3f9a0c1d2e7b"


class EchoService(FakeService):
    """Answers every authorised call with what it received, as JSON."""

    def check_auth(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") not in (None, f"Token {SECRET}"):
            return Response("bad token", status=401)
        return None

    def route(self, request: Request) -> Response:
        echo = {
            "method": request.method,
            "path": request.path,
            "authorization": request.headers.get("Authorization"),
            "user_agent": request.headers.get("User-Agent"),
        }
        return Response(json.dumps(echo), content_type="application/json")


@pytest.fixture
def echo(short_timeouts: None) -> Iterator[EchoService]:
    with EchoService() as service:
        yield service


def call(url: str, **kwargs: object) -> httpx.Response:
    return request(
        "GET", url, destination="test", call="echo",
        headers={"Authorization": f"Token {SECRET}"}, **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("root", ["http://h:8000/cdcs", "http://h:8000/cdcs/"])
@pytest.mark.parametrize("part", ["rest/data/", "/rest/data/"])
def test_join_url_has_one_slash_whatever_the_root(root: str, part: str) -> None:
    assert join_url(root, part) == "http://h:8000/cdcs/rest/data/"


def test_join_url_joins_several_parts_without_double_slashes() -> None:
    joined = join_url("https://elab.example.org/", "/api/v2/", "experiments", "12", "uploads")
    assert joined == "https://elab.example.org/api/v2/experiments/12/uploads"


def test_calls_carry_the_worker_user_agent(echo: EchoService) -> None:
    answer = parse_json(call(f"{echo.url}/x"), destination="test", call="echo")
    assert answer["user_agent"].startswith("nexuslims-export-worker/")


def test_one_client_per_process_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = HttpSettings()
    first = http.get_client(settings)
    assert http.get_client(settings) is first
    monkeypatch.setattr(http.os, "getpid", lambda: -1)  # as in a forked child
    assert http.get_client(settings) is not first


def test_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NX_HTTP_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "7.5")
    client = http.get_client(HttpSettings())
    assert (client.timeout.connect, client.timeout.read) == (3.0, 7.5)


def test_an_unreadable_cert_bundle_is_a_permanent_error(
    echo: EchoService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NX_CERT_BUNDLE_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(PermanentExportError, match="NX_CERT_BUNDLE_FILE"):
        call(f"{echo.url}/x")


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_transient(echo: EchoService, status: int) -> None:
    echo.fail_next(status)
    with pytest.raises(TransientExportError, match=f"test: echo: HTTP {status}"):
        call(f"{echo.url}/x")


def test_429_is_transient_with_retry_after_seconds(echo: EchoService) -> None:
    echo.fail_next(429, retry_after="17")
    with pytest.raises(TransientExportError) as caught:
        call(f"{echo.url}/x")
    assert caught.value.retry_after == 17


def test_retry_after_may_be_an_http_date() -> None:
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    delay = parse_retry_after(in_a_minute)
    assert delay is not None and 55 < delay <= 60
    assert parse_retry_after("soon") is None


def test_other_5xx_are_permanent_unless_all_5xx_are_transient(echo: EchoService) -> None:
    echo.fail_next(500, count=2)
    with pytest.raises(PermanentExportError, match="HTTP 500"):
        call(f"{echo.url}/x")
    with pytest.raises(TransientExportError, match="HTTP 500"):
        call(f"{echo.url}/x", all_5xx_transient=True)


def test_404_is_permanent(echo: EchoService) -> None:
    echo.fail_next(404, body="no such thing")
    with pytest.raises(PermanentExportError, match=r"HTTP 404 \(GET /x\): no such thing"):
        call(f"{echo.url}/x")


def test_refused_credentials_say_so_without_the_token(echo: EchoService) -> None:
    echo.fail_next(401, body=f"token {SECRET} is not valid")
    with pytest.raises(CredentialsRefused, match="credentials were refused") as caught:
        call(f"{echo.url}/x")
    assert SECRET not in str(caught.value)


def test_query_string_secrets_never_appear_in_messages(echo: EchoService) -> None:
    echo.fail_next(400, body="bad request for sig=SIGNATURE123 akid=AKID456")
    with pytest.raises(PermanentExportError) as caught:
        request(
            "GET", f"{echo.url}/api/tree_tools/get_tree_level", destination="labarchives",
            call="list", params={"akid": "AKID456", "sig": "SIGNATURE123", "nbid": "1"},
        )
    message = str(caught.value)
    assert "SIGNATURE123" not in message and "AKID456" not in message
    assert "/api/tree_tools/get_tree_level" in message


def test_httpx_request_log_lines_have_no_query(
    echo: EchoService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        request("GET", f"{echo.url}/api/x", destination="t", call="c", params={"sig": "SIG999"})
    assert "/api/x" in caplog.text
    assert "SIG999" not in caplog.text


def test_an_unreachable_host_is_transient() -> None:
    with EchoService() as stopped:
        url = stopped.url
    with pytest.raises(HostUnreachable, match="host unreachable"):
        call(f"{url}/x")


def test_a_slow_answer_times_out_as_transient(
    echo: EchoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_HTTP_READ_TIMEOUT", "0.2")
    echo.stall_next(2.0)
    with pytest.raises(HostUnreachable, match="timed out"):
        call(f"{echo.url}/x")


def test_a_dropped_connection_is_transient(echo: EchoService) -> None:
    echo.drop_after_create_next()
    with pytest.raises(TransientExportError, match="connection lost"):
        call(f"{echo.url}/x")
    assert echo.requests[0].status == 0


def test_an_html_page_where_json_was_expected_is_permanent(echo: EchoService) -> None:
    echo.html_error_next(200)
    response = call(f"{echo.url}/x")
    with pytest.raises(UnexpectedAnswer, match="expected JSON, got text/html"):
        parse_json(response, destination="test", call="echo")


def test_malformed_json_is_permanent(echo: EchoService) -> None:
    echo.malformed_next()
    response = call(f"{echo.url}/x")
    with pytest.raises(UnexpectedAnswer, match="malformed JSON"):
        parse_json(response, destination="test", call="echo")


def test_xml_with_entities_is_refused(echo: EchoService) -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;&a;</x>'
    echo.fail_next(200, body=bomb, content_type="text/xml")
    response = call(f"{echo.url}/x")
    with pytest.raises(UnexpectedAnswer, match="expected XML"):
        parse_xml(response, destination="test", call="echo")


def test_same_host_redirects_are_followed_with_credentials(echo: EchoService) -> None:
    echo.redirect_next(f"{echo.url}/moved")
    answer = parse_json(call(f"{echo.url}/x"), destination="test", call="echo")
    assert answer["path"] == "/moved"
    assert answer["authorization"] == f"Token {SECRET}"


def test_a_redirect_to_another_host_is_refused_and_never_followed(echo: EchoService) -> None:
    with EchoService() as elsewhere:
        echo.redirect_to = elsewhere.url
        with pytest.raises(PermanentExportError, match="redirected to another host"):
            call(f"{echo.url}/x")
        assert elsewhere.requests == []


def test_fakes_reject_double_slashes(echo: EchoService) -> None:
    with pytest.raises(PermanentExportError, match="HTTP 400"):
        call(f"{echo.url}//x")
    assert echo.double_slash_paths == ["//x"]
