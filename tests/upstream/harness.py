"""pytest plugin running NexusLIMS's own exporter tests against a real worker.

Loaded as ``-p tests.upstream.harness`` in a pytest process of its own (see
tests/test_nexuslims_upstream.py), with NexusLIMS's settings already in the
environment: NexusLIMS reads them when first imported. It starts a Redis, a
worker whose destinations are relays (tests/upstream/relay.py) and the relay's
HTTP endpoint on 127.0.0.1, and writes each test's outcome to the JSON file
named by ``NEXUSLIMS_UPSTREAM_REPORT``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from werkzeug.wrappers import Request, Response

from tests.support import RedisServer, WorkerProcess, free_port, worker_env
from tests.upstream.relay import RELAY_URL
from worker.sandbox.server import ServerThread

WORK_DIR = Path(os.environ["NEXUSLIMS_UPSTREAM_DIR"])
REPORT = os.environ.get("NEXUSLIMS_UPSTREAM_REPORT")
# Every destination name NexusLIMS's exporter tests use; the worker has a relay for each.
RELAYED = ("cdcs", "labarchives", "elabftw", "dest1", "dest2", "dest3", "dest4",
           "success_dest", "failure_dest")  # fmt: skip
CATALOG_KEY = "nxexport:catalog"

# The client side (worker.compat, in this process) reads the broker URL on first use.
_REDIS_PORT = free_port()
os.environ["NX_EXPORT_BROKER_URL"] = f"redis://127.0.0.1:{_REDIS_PORT}/0"

Export = Callable[[Any], Any]


class Relay:
    """What the current test's destinations do: name -> a callable taking NexusLIMS's context."""

    def __init__(self) -> None:
        self.exports: dict[str, Export] = {}

    def answer(self, name: str, message: dict[str, Any]) -> dict[str, Any]:
        from tasks.messages import result_to_json

        export = self.exports.get(name)
        if export is None:
            return {"raised": f"the test has no destination {name!r}"}
        try:
            result = export(nexuslims_context(message))
        except Exception as error:  # the test's destination raised: the worker raises it too
            return {"raised": f"{type(error).__name__}: {error}"}
        return {"result": result_to_json(result, name)}

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = Request(environ).get_json()
        answer = self.answer(body["name"], body["context"])
        response = Response(json.dumps(answer), content_type="application/json")
        return response(environ, start_response)


RELAY = Relay()


def nexuslims_context(message: dict[str, Any]) -> Any:
    """NexusLIMS's ``ExportContext`` for a context the worker relayed."""
    from nexusLIMS.exporters.base import ExportContext

    return ExportContext(
        xml_file_path=Path(message["xml_file_path"]),
        session_identifier=message["session_identifier"],
        instrument_pid=message["instrument_pid"],
        dt_from=datetime.fromisoformat(message["dt_from"]),
        dt_to=datetime.fromisoformat(message["dt_to"]),
        user=message.get("user"),
        metadata=dict(message.get("metadata") or {}),
        previous_results={
            name: nexuslims_result(data) for name, data in message["previous_results"].items()
        },
    )


def nexuslims_result(data: dict[str, Any]) -> Any:
    from nexusLIMS.exporters.base import ExportResult

    fields = {**data, "timestamp": datetime.fromisoformat(data["timestamp"])}
    fields["metadata"] = dict(fields.get("metadata") or {})
    return ExportResult(**fields)


def offer(destinations: list[tuple[str, int]], exports: dict[str, Export]) -> None:
    """Make these the destinations the worker offers, in this order (NexusLIMS's registration).

    The worker has a relay for every name; the catalogue it publishes is replaced
    with the test's names and priorities, as a worker configured with exactly
    those destinations would publish.
    """
    from tasks import catalog

    unknown = [name for name, _ in destinations if name not in RELAYED]
    if unknown:
        raise AssertionError(f"harness: add {unknown} to RELAYED")
    entries = {name: {"priority": int(p), "depends_on": []} for name, p in destinations}
    client = redis.Redis.from_url(os.environ["NX_EXPORT_BROKER_URL"])
    with client.pipeline() as pipe:
        pipe.delete(CATALOG_KEY)
        pipe.hset(
            CATALOG_KEY, "upstream", json.dumps({"published_at": time.time(), "entries": entries})
        )
        pipe.execute()
    catalog._cache.clear()  # the client would otherwise plan over what it read 2 s ago
    RELAY.exports = dict(exports)


@pytest.fixture(scope="session", autouse=True)
def upstream_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    from nexusLIMS.db.engine import create_transient_sqlite_engine
    from sqlmodel import SQLModel

    engine = create_transient_sqlite_engine(os.environ["NX_DB_PATH"])
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    redis_server = RedisServer(WORK_DIR / "redis", port=_REDIS_PORT).start()
    relay_server = ServerThread(RELAY.wsgi).start()
    plugins = ",".join(f"tests.upstream.relay:{name}" for name in RELAYED)
    env = worker_env(
        redis_server.url,
        None,
        NX_EXPORT_PLUGINS=plugins,
        NX_EXPORT_BACKOFF_SECONDS="0.1",
        # NexusLIMS's tests write their records below their temporary folders.
        NX_RECORDS_PATH=str(tmp_path_factory.getbasetemp()),
        **{RELAY_URL: relay_server.url},
    )
    worker = WorkerProcess(env, WORK_DIR / "worker.log", name="upstream").start()
    try:
        yield worker
    finally:
        worker.stop()
        relay_server.stop()
        redis_server.stop()


@pytest.fixture(autouse=True)
def fresh_jobs() -> None:
    """Each test starts as a fresh LIMS would: no job of an earlier test to be found again."""
    client = redis.Redis.from_url(os.environ["NX_EXPORT_BROKER_URL"])
    stale = [key for key in client.scan_iter("nxexport:*") if key != CATALOG_KEY.encode()]
    if stale:
        client.delete(*stale)
    RELAY.exports = {}


@pytest.fixture
def test_database(tmp_path: Path) -> Path:
    """NexusLIMS's integration fixture: an empty database with its schema."""
    from nexusLIMS.db.engine import create_transient_sqlite_engine
    from sqlmodel import SQLModel

    path = tmp_path / "nexuslims.db"
    engine = create_transient_sqlite_engine(path)
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    return path


_outcomes: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        entry = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
        if report.outcome != "passed" and entry["outcome"] == "passed":
            crash = getattr(report.longrepr, "reprcrash", None)
            entry["outcome"] = report.outcome
            entry["message"] = crash.message if crash is not None else str(report.longrepr)[-500:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if REPORT:
        Path(REPORT).write_text(json.dumps(_outcomes, indent=1))
