"""Shared fixtures: one real Redis and one real worker for the session, and factories
for tests that need a Redis or a worker of their own.

The test process is a client like a LIMS: it does not have the test plugins
installed, so it plans over the destinations the worker publishes. Helpers and
constants live in ``tests.support`` and ``tests.samples``, never here.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.dashboard_support import Dashboard, running_dashboard
from tests.samples import write_record
from tests.support import (
    PROJECT_ROOT,
    WEBHOOK_SECRET,
    RedisServer,
    StartRedis,
    StartWorker,
    WorkerProcess,
    free_port,
    install_test_plugins,
    running_redis,
    running_worker,
    worker_env,
)
from tests.webhook_receiver import WebhookReceiver

# The app reads its settings when first imported: point it at the test Redis first.
_REDIS_PORT = free_port()
_BROKER_URL = f"redis://127.0.0.1:{_REDIS_PORT}/0"
for _name in [name for name in os.environ if name.startswith("NX_")]:
    del os.environ[_name]
os.environ["NX_EXPORT_BROKER_URL"] = _BROKER_URL


def _fresh_path(directory: Path, stem: str, suffix: str = "") -> Path:
    """``directory/stem``, or ``stem-2``, ``stem-3``... when a test starts several."""
    path, number = directory / f"{stem}{suffix}", 1
    while path.exists():
        number += 1
        path = directory / f"{stem}-{number}{suffix}"
    return path


@pytest.fixture(scope="session", autouse=True)
def records_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder every test's records are written below: the workers' NX_RECORDS_PATH.

    Destinations run in this process too read records only below it.
    """
    support.RECORDS_ROOT = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NX_RECORDS_PATH", str(support.RECORDS_ROOT))
        yield support.RECORDS_ROOT


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis"), port=_REDIS_PORT) as server:
        yield server
        # Results still waited on unsubscribe when collected: let them while Redis is up.
        gc.collect()


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_test_plugins(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def archive_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive")


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
    log_path = tmp_path_factory.mktemp("logs") / "worker.log"
    with running_worker(env, log_path, name="session") as worker:
        yield worker


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start Redis servers of the test's own; each one is stopped when the test ends."""
    with ExitStack() as started:

        def start(password: str | None = None) -> RedisServer:
            directory = _fresh_path(tmp_path, "redis")
            return started.enter_context(running_redis(directory, password=password))

        yield start


@pytest.fixture
def start_worker(
    redis_server: RedisServer, plugin_path: Path, start_redis: StartRedis, tmp_path: Path
) -> Iterator[StartWorker]:
    """Start ``nx-export worker`` processes of the test's own, ready to take tasks.

    Each worker uses the session Redis unless given ``redis``, has the test
    plugins installed when ``plugins`` is true, and gets ``settings`` as its
    ``NX_*`` environment (``worker.env``, for clients of the same Redis), with
    the tests' records folder as ``NX_RECORDS_PATH`` unless ``records_root`` is
    false or ``settings`` choose their own rule. Every
    worker still running is stopped when the test ends, before any Redis that
    ``start_redis`` started for it.
    """
    with ExitStack() as started:

        def start(
            name: str,
            *,
            redis: RedisServer | None = None,
            plugins: bool = False,
            pool: str = "threads",
            concurrency: int = 8,
            ready_timeout: float = 30,
            cwd: Path = PROJECT_ROOT,
            records_root: bool = True,
            **settings: str,
        ) -> WorkerProcess:
            env = worker_env(
                (redis or redis_server).url, plugin_path if plugins else None, **settings
            )
            log_path = _fresh_path(tmp_path, name, ".log")
            return started.enter_context(
                running_worker(env, log_path, name, ready_timeout, pool=pool,
                               concurrency=concurrency, cwd=cwd, records_root=records_root)
            )  # fmt: skip

        yield start


@pytest.fixture(scope="module")
def dashboard(
    redis_server: RedisServer,
    session_worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    """``nx-export dashboard`` on the session Redis, for a module's tests."""
    with running_dashboard(redis_server.url, tmp_path_factory.mktemp("dashboard")) as server:
        yield server


@pytest.fixture
def app(session_worker: WorkerProcess) -> Any:
    from worker.app import app

    return app


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return write_record(tmp_path / "record.xml", title="Test record")


@pytest.fixture
def export_log(tmp_path: Path) -> Path:
    return tmp_path / "exports.jsonl"


# -- the fast tier ------------------------------------------------------------------------

# A test that uses one of these runs a real worker: not in the fast tier.
WORKER_FIXTURES = {"session_worker", "app", "start_worker"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="Only the fast tier: pure units and tests without a worker or a browser "
        "(what to run on every change; the whole suite before a commit).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "processes: starts worker, CLI, web or browser processes (not --fast)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    slow = [
        item
        for item in items
        if WORKER_FIXTURES & set(getattr(item, "fixturenames", ()))
        or item.get_closest_marker("processes")
    ]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]
