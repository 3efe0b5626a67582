"""The call log: kept in Redis per job and destination, and how an attempt resumes from it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from destinations.contract import ExportContext, MemoryCallLog
from destinations.toolkit.resume import SENT, Resume, is_sent
from tasks.store.call_log import RedisCallLog, call_log_key
from tests.support import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def context(attempt: int = 1) -> ExportContext:
    return ExportContext(
        xml_file_path=Path("/records/r.xml"), session_identifier="s-1", instrument_pid="i",
        dt_from=datetime(2026, 3, 4, 9), dt_to=datetime(2026, 3, 4, 10),
        metadata={"export_attempt": attempt},
    )  # fmt: skip


def test_the_redis_log_is_shared_by_every_attempt_of_a_job_and_expires_with_it(
    client: redis.Redis,
) -> None:
    job = uuid.uuid4().hex
    first = RedisCallLog(client, job, "labarchives", retention=3600)
    assert first.get("page") is None
    first.record("page", "101")
    later = RedisCallLog(client, job, "labarchives", retention=3600)  # another worker
    assert later.get("page") == "101"
    assert RedisCallLog(client, job, "cdcs", retention=3600).get("page") is None
    assert 0 < client.ttl(call_log_key(job, "labarchives")) <= 3600


def test_a_context_without_a_worker_gets_a_log_in_memory() -> None:
    ctx = context()
    assert isinstance(ctx.call_log, MemoryCallLog)
    ctx.call_log.record("k", "v")
    assert ctx.call_log.get("k") == "v"


def test_a_create_is_logged_as_sent_before_the_call_and_its_id_after() -> None:
    ctx = context()
    resume = Resume(ctx)
    seen: list[str | None] = []

    def create() -> str:
        seen.append(ctx.call_log.get("page"))
        return "101"

    assert resume.create("page", create) == "101"
    assert is_sent(seen[0]) and ctx.call_log.get("page") == "101"


def test_an_attempt_looks_up_only_what_went_out_without_an_answer() -> None:
    ctx = context()
    Resume(ctx).log.record("entry", SENT)
    ctx.metadata["export_attempt"] = 2
    resume = Resume(ctx)
    assert resume.may_exist("entry")
    assert not resume.may_exist("attachment")  # never sent: create it, no search

    def never() -> str:
        raise AssertionError("the log says it exists")

    ctx.call_log.record("page", "101")
    assert resume.obtain("page", never, lambda: None) == ("101", True)
    assert resume.obtain("entry", lambda: "new", lambda: "found") == ("found", True)
    assert resume.obtain("attachment", lambda: "new", lambda: "found") == ("new", False)


def test_without_a_log_of_earlier_attempts_a_retry_looks_everything_up() -> None:
    resume = Resume(context(attempt=2))
    assert resume.unknown_past and resume.may_exist("page")
    assert not Resume(context(attempt=1)).may_exist("page")
