"""Secrets are blanked before an error is cut, in every form and in any 8-character run."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from urllib.parse import quote

import pytest

from destinations.toolkit.http import redact, snippet
from tasks.messages import redact_message
from tasks.store.job_store import job_key
from tests.samples import enqueue_arguments
from tests.support import StartRedis, StartWorker, every_redis_value, nx_export, worker_env
from worker.sandbox import FakeCDCS

# The longest part of a secret that may be shown: shorter runs match too much text.
MIN_RUN = 8
TOKEN = "Zq3-" + "k9Xw_T7pLm2RvN8sYb4HcJ6dFg1QeUa5WzKoPiMnBtVxCyDr"  # 52 characters


def runs_of(secret: str) -> list[str]:
    """Every run of MIN_RUN characters of ``secret``: none may be left anywhere."""
    return [secret[start : start + MIN_RUN] for start in range(len(secret) - MIN_RUN + 1)]


def leaked(secret: str, text: str) -> list[str]:
    return [run for run in runs_of(secret) if run in text]


def echoed_at(position: int, secret: str = TOKEN, length: int = 400) -> str:
    """A service's error body with ``secret`` starting at character ``position``."""
    body = ("." * position + secret).ljust(length, ".")
    return body


@pytest.mark.parametrize("position", [100, 164, 180, 192])
def test_a_secret_the_cut_runs_through_leaves_no_prefix(
    position: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NX_CDCS_TOKEN", TOKEN)
    short = snippet(echoed_at(position))
    assert len(short) <= 200
    assert leaked(TOKEN, short) == []


def test_every_run_of_eight_and_no_run_of_seven_is_blanked() -> None:
    inside = f"a {TOKEN[5:13]} b {TOKEN[20:40]} c {TOKEN[-8:]} d {TOKEN[:7]} e"
    blanked = redact(inside, [TOKEN])
    assert leaked(TOKEN, blanked) == []
    assert blanked == f"a *** b *** c *** d {TOKEN[:7]} e"
    # Secrets of 4 to 7 characters have no 8-character runs: blanked whole only.
    assert redact("key=abcd and abc", ["abcd"]) == "key=*** and abc"


@pytest.mark.parametrize(
    "form",
    [
        json.dumps("p\"a/s\\s-wörd+1 2&x=y")[1:-1],
        quote("p\"a/s\\s-wörd+1 2&x=y", safe=""),
        quote("p\"a/s\\s-wörd+1 2&x=y", safe="").replace("%20", "+"),
        base64.b64encode("p\"a/s\\s-wörd+1 2&x=y".encode()).decode(),
        base64.urlsafe_b64encode("p\"a/s\\s-wörd+1 2&x=y".encode()).decode().rstrip("="),
    ],
)
def test_escaped_and_encoded_forms_are_blanked(form: str) -> None:
    secret = "p\"a/s\\s-wörd+1 2&x=y"
    assert leaked(form, redact(f"error: {form[:30]}|{form[-12:]} end", [secret])) == []


def test_stored_messages_are_redacted_before_being_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NX_ELABFTW_API_KEY", TOKEN)
    text = "x" * 190 + TOKEN
    assert leaked(TOKEN, snippet(text)) == []
    # A message cut by someone else is still blanked down to 7 characters.
    assert leaked(TOKEN, redact_message(text[:200])) == []


def test_an_echoed_token_reaches_no_store_status_or_log(
    start_redis: StartRedis, start_worker: StartWorker, record: Path
) -> None:
    """A CDCS that echoes the token near the 200-character cut leaks none of it."""
    token = "cdcs-" + secrets.token_urlsafe(45)  # 65 characters, not hex: no chance match
    redis = start_redis()
    with FakeCDCS(token=token) as cdcs:
        for position in (100, 164, 199, 250):
            cdcs.fail_next(503, on="POST /rest/data/", body=echoed_at(position, token))
        worker = start_worker(
            "echo", redis=redis,
            NX_CDCS_URL=cdcs.root_url, NX_CDCS_TOKEN=token,
            NX_EXPORT_BACKOFF_SECONDS="0.1", NX_EXPORT_MAX_ATTEMPTS="4",
        )  # fmt: skip
        # The client has no secrets: it shows what is stored, as an operator would see it.
        client = worker_env(redis.url, None)
        done = nx_export(
            *enqueue_arguments(record, "--destination", "cdcs", "--wait", "--json"), env=client
        )
        assert done.returncode == 1, done.stderr
        job_id = json.loads(done.stdout)["id"]
        status = nx_export("status", job_id, "--json", env=client)
        worker.stop()
    assert status.returncode == 1, status.stderr
    history = json.loads(status.stdout)["destinations"]["cdcs"]["history"]
    assert [entry["outcome"] for entry in history] == ["retry", "retry", "retry", "failure"]
    assert all("HTTP 503" in entry["error"] for entry in history)
    store = redis.client()
    task_metas = [store.get(key) or b"" for key in store.scan_iter("celery-task-meta-*")]
    assert task_metas, "the destination's task stored its outcome"
    job_hash = store.hgetall(job_key(job_id))
    assert job_hash, "the job is stored"
    places = {
        "job hash": b"\n".join(k + b"=" + v for k, v in job_hash.items()).decode(),
        "celery-task-meta": b"\n".join(task_metas).decode(),
        "redis": b"\n".join(every_redis_value(store)).decode(errors="replace"),
        "status": status.stdout + status.stderr,
        "enqueue": done.stdout + done.stderr,
        "worker log": worker.log(),
    }
    for name, text in places.items():
        assert leaked(token, text) == [], f"part of the token is in the {name}"
