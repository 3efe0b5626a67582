"""Shared fixtures: one real Redis and one real worker for the session.

The test process is a client like a LIMS: it does not have the test plugins
installed, so it plans over the destinations the worker publishes.
"""

from __future__ import annotations

import gc
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import RedisServer, WorkerProcess, free_port, install_test_plugins, worker_env
from tests.webhook_receiver import WebhookReceiver

# The app reads its settings when first imported: point it at the test Redis first.
_REDIS_PORT = free_port()
_BROKER_URL = f"redis://127.0.0.1:{_REDIS_PORT}/0"
for _name in [name for name in os.environ if name.startswith("NX_")]:
    del os.environ[_name]
os.environ["NX_EXPORT_BROKER_URL"] = _BROKER_URL

RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>{title}</nx:title>
  <nx:summary><nx:instrument pid="FEI-Titan-TEM-635816">FEI Titan TEM</nx:instrument></nx:summary>
</nx:Experiment>
"""


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=_REDIS_PORT).start()
    yield server
    # Results still waited on unsubscribe when collected: let them while Redis is up.
    gc.collect()
    server.stop()


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_test_plugins(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def archive_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive")


WEBHOOK_SECRET = "webhook-secret-for-tests"


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


@pytest.fixture(scope="session")
def callback_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("callback") / "finished.jsonl"


@pytest.fixture(scope="session")
def session_worker(
    redis_server: RedisServer,
    plugin_path: Path,
    archive_path: Path,
    webhook_receiver: WebhookReceiver,
    callback_log: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    env = worker_env(
        redis_server.url,
        plugin_path,
        NX_EXPORT_LOCAL_PATH=str(archive_path),
        NX_EXPORT_BACKOFF_SECONDS="0.1",
        NX_EXPORT_BETA_MAX_ATTEMPTS="2",
        NX_EXPORT_WEBHOOK_URL=webhook_receiver.url,
        NX_EXPORT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        NX_EXPORT_CALLBACK_TASK="lims.export_finished",
        NX_TEST_CALLBACK_LOG=str(callback_log),
    )
    worker = WorkerProcess(
        env, tmp_path_factory.mktemp("logs") / "worker.log", name="session"
    ).start()
    yield worker
    worker.stop()


@pytest.fixture
def app(session_worker: WorkerProcess) -> Any:
    from worker.app import app

    return app


@pytest.fixture
def record(tmp_path: Path) -> Path:
    path = tmp_path / "record.xml"
    path.write_text(RECORD.format(title="Test record"), encoding="utf-8")
    return path


@pytest.fixture
def export_log(tmp_path: Path) -> Path:
    return tmp_path / "exports.jsonl"


def make_context(record: Path, log: Path | None = None, **behaviour: str) -> dict[str, Any]:
    """A context for a fresh session; ``behaviour`` tells the test destinations what to do."""
    metadata: dict[str, Any] = {"behaviour": behaviour}
    if log:
        metadata["log"] = str(log)
    return {
        "xml_file_path": str(record),
        "session_identifier": f"session-{uuid.uuid4().hex[:8]}",
        "instrument_pid": "FEI-Titan-TEM-635816",
        "dt_from": "2026-03-04T09:00:00-05:00",
        "dt_to": "2026-03-04T13:30:00-05:00",
        "user": "ada",
        "metadata": metadata,
    }


def read_log(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def wait_for(condition: Any, timeout: float = 20, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
