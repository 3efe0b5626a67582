"""LabArchives at facility scale: one call per second across processes, folder ids shared in Redis.

Against the test Redis and a fake LabArchives; each test uses its own fake, so
its own limiter and cache keys.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from destinations.builtin.labarchives.destination import LabArchivesDestination
from destinations.contract import ExportContext
from destinations.errors import TransientExportError
from destinations.toolkit.rate_limit import RedisCallLimiter
from tests.samples import INSTRUMENT
from tests.support import PROJECT_ROOT, RedisServer, StartWorker
from worker.sandbox import FakeLabArchives

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

pytest_plugins = ["tests.fakes.fixtures"]

Context = Callable[..., ExportContext]

# Exports sessions named on the command line with a Redis-backed destination; prints the results.
CHILD = """
import json, sys
from datetime import datetime
from pathlib import Path
import redis
from destinations.contract import ExportContext
from destinations.builtin.labarchives.destination import LabArchivesDestination

destination = LabArchivesDestination()
destination.use_redis(redis.Redis.from_url(sys.argv[1]))
results = []
for session in sys.argv[3:]:
    context = ExportContext(
        xml_file_path=Path(sys.argv[2]), session_identifier=session,
        instrument_pid="FEI-Titan-TEM-635816", dt_from=datetime(2026, 3, 4, 9),
        dt_to=datetime(2026, 3, 4, 13, 30), metadata={"export_job_id": session},
    )
    result = destination.export(context)
    results.append([result.success, result.error_message])
print(json.dumps(results))
"""


@pytest.fixture
def shared_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def la_redis(
    fake_labarchives: FakeLabArchives, shared_redis: redis.Redis
) -> Callable[[], LabArchivesDestination]:
    """Destinations sharing the test Redis, as every worker would."""

    def build() -> LabArchivesDestination:
        destination = LabArchivesDestination()
        destination.use_redis(shared_redis)
        return destination

    return build


def gaps(fake: FakeLabArchives) -> list[float]:
    times = sorted(r.time for r in fake.requests)
    return [b - a for a, b in itertools.pairwise(times)]


def test_two_processes_never_call_less_than_a_second_apart(
    fake_labarchives: FakeLabArchives,
    redis_server: RedisServer,
    nexus_record: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NX_LABARCHIVES_MIN_CALL_INTERVAL", "1")
    monkeypatch.setenv("NX_LABARCHIVES_MAX_CALL_WAIT", "60")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                redis_server.url,
                str(nexus_record),
                f"{name}-1",
                f"{name}-2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert all(ok for ok, _ in json.loads(out)), out
    folders = [n["display_text"] for n in fake_labarchives.nodes.values() if n["is_folder"]]
    assert folders == ["NexusLIMS Records", "FEI-Titan-TEM-635816"]
    # Finding the root, creating it and the instrument folder, then three calls a record.
    assert len(fake_labarchives.requests) == 3 + 4 * 3
    assert min(gaps(fake_labarchives)) >= 1.0


def test_the_second_record_to_an_instrument_costs_three_calls(
    fake_labarchives: FakeLabArchives,
    la_redis: Callable[[], LabArchivesDestination],
    make_export_context: Context,
) -> None:
    assert la_redis().export(make_export_context()).success
    before = len(fake_labarchives.requests)
    # Another worker: the folder ids come from Redis.
    assert la_redis().export(make_export_context(session_identifier="second")).success
    calls = [r.path.rsplit("/", 1)[-1] for r in fake_labarchives.requests[before:]]
    assert calls == ["insert_node", "add_entry", "add_attachment"]


def test_a_deleted_folder_is_found_again(
    fake_labarchives: FakeLabArchives,
    la_redis: Callable[[], LabArchivesDestination],
    make_export_context: Context,
) -> None:
    assert la_redis().export(make_export_context()).success
    (instrument,) = [
        k for k, n in fake_labarchives.nodes.items() if n["parent"] != "0" and n["is_folder"]
    ]
    del fake_labarchives.nodes[instrument]
    result = la_redis().export(make_export_context(session_identifier="after-delete"))
    assert result.success, result.error_message
    folders = [n for n in fake_labarchives.nodes.values() if n["is_folder"]]
    assert [n["display_text"] for n in folders] == ["NexusLIMS Records", "FEI-Titan-TEM-635816"]
    assert result.metadata["page_tree_id"] in fake_labarchives.nodes


def test_a_long_wait_is_deferred_with_the_slots_kept_for_the_retry(
    fake_labarchives: FakeLabArchives,
    shared_redis: redis.Redis,
    la_redis: Callable[[], LabArchivesDestination],
    make_export_context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert la_redis().export(make_export_context()).success
    monkeypatch.setenv("NX_LABARCHIVES_MIN_CALL_INTERVAL", "0.5")
    monkeypatch.setenv("NX_LABARCHIVES_MAX_CALL_WAIT", "1")
    destination = la_redis()
    limiter = destination.limiter
    assert isinstance(limiter, RedisCallLimiter)
    limiter.reserve(6)  # other workers' calls: 3.6 s of slots
    before = len(fake_labarchives.requests)
    context = make_export_context(session_identifier="busy", metadata={"export_job_id": "j-1"})
    with pytest.raises(TransientExportError, match="waiting for a call slot") as raised:
        destination.export(context)
    assert raised.value.retry_after is not None and 2.5 < raised.value.retry_after < 3.6
    assert len(fake_labarchives.requests) == before
    time.sleep(raised.value.retry_after)
    # The retry uses the kept slots and, since its call log shows nothing was sent,
    # looks nothing up (the worker hands every attempt of a job the same log).
    retry = make_export_context(
        session_identifier="busy", metadata={"export_job_id": "j-1", "export_attempt": 2}
    )
    retry.call_log = context.call_log
    result = destination.export(retry)
    assert result.success, result.error_message
    calls = [r.path.rsplit("/", 1)[-1] for r in fake_labarchives.requests[before:]]
    assert calls == ["insert_node", "add_entry", "add_attachment"]


def test_without_a_job_id_a_long_wait_is_slept(shared_redis: redis.Redis) -> None:
    limiter = RedisCallLimiter(shared_redis, f"test:limiter:{time.time_ns()}", 0.2, 0.1)
    limiter.reserve(3)
    started = time.monotonic()
    slots = limiter.reserve(1)
    slots.wait()
    assert time.monotonic() - started >= 3 * limiter.interval - 0.02


def test_unused_slots_are_given_back(shared_redis: redis.Redis) -> None:
    key = f"test:limiter:{time.time_ns()}"
    limiter = RedisCallLimiter(shared_redis, key, 0.4, 10)
    slots = limiter.reserve(5)
    slots.wait()
    slots.release()
    started = time.monotonic()
    limiter.reserve(1).wait()
    assert time.monotonic() - started < 0.7


def test_two_workers_share_the_spacing(
    app: Any,
    fake_labarchives: FakeLabArchives,
    start_worker: StartWorker,
    nexus_record: Path,
) -> None:
    from worker import enqueue_export

    settings = {k: v for k, v in os.environ.items() if k.startswith("NX_LABARCHIVES_")}
    settings["NX_LABARCHIVES_MIN_CALL_INTERVAL"] = "1"
    workers = [start_worker(name, **settings) for name in ("la-left", "la-right")]
    jobs = [
        enqueue_export(
            {
                "xml_file_path": str(nexus_record),
                "session_identifier": f"s-{n}",
                "instrument_pid": INSTRUMENT,
                "dt_from": "2026-03-04T09:00:00",
                "dt_to": "2026-03-04T10:00:00",
            },
            destinations=["labarchives"],
            app=app,
        )
        for n in range(4)
    ]
    assert all(job.wait(timeout=120).satisfied for job in jobs)
    for worker in workers:
        worker.stop()
    assert min(gaps(fake_labarchives)) >= 1.0, [
        (round(r.time, 3), r.query["expires"], r.path.rsplit("/", 1)[-1])
        for r in fake_labarchives.requests
    ]
    # Each worker checks its settings and finds (the first one creates) the root folder
    # when it starts; then the instrument's folder once, then three calls a record.
    names = [r.path.rsplit("/", 1)[-1] for r in fake_labarchives.requests]
    assert names[:6].count("user_info_via_id") == 2 and names[:6].count("insert_node") == 1
    assert len(names) == 2 * 2 + 1 + 2 + 4 * 3
    assert [n["display_text"] for n in fake_labarchives.nodes.values()][:2] == [
        "NexusLIMS Records", INSTRUMENT,
    ]
