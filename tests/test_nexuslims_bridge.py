"""The NexusLIMS outcome bridge: finished runs written into NexusLIMS's own database.

Against the real ``nexuslims==2.8.0`` models (skipped without them), on a
SQLite database each test creates, a worker of its own that reaches it
(``NX_DB_PATH``), the fake CDCS and eLabFTW, and NexusLIMS's side played by
client processes and the ``nx-export`` command line.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.nexuslims_support import (
    nexuslims_settings,
    nx_export,
    prepare_database,
    private_worker,
    record_spec,
    record_status,
    require_nexuslims,
    run_client,
    run_script,
    upload_log,
)
from tests.samples import make_context
from tests.support import (
    PROJECT_ROOT,
    WorkerProcess,
    running_redis,
    running_worker,
    wait_for,
    worker_env,
)
from worker.sandbox import FakeCDCS, FakeELabFTW

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

ELABFTW_CREATE = "POST /api/v2/experiments"
# The bridge's queue, and the key that says a bridge worker was seen (see tasks.store.keys).
BRIDGE_QUEUE = "nx-export.nexuslims"
BRIDGE_SEEN = "nxexport:nexuslims:bridge"

# Sends a finished job's outcome to the bridge again, as a redelivery would, and
# prints what the bridge task answered.
RESEND = """
import json, sys
from worker.app import app
from tasks.nexuslims.delivery import send_outcome
from tasks.runtime import job_store
run = job_store(app).require(sys.argv[1]).job.runs
print(json.dumps(send_outcome(app, sys.argv[1], run).get(timeout=120)))
"""


@dataclass
class Bridge:
    env: dict[str, str]
    database: Path
    cdcs: FakeCDCS
    elab: FakeELabFTW

    def job_ids(self) -> list[str]:
        listed = nx_export(self.env, "jobs", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        return [job["id"] for job in json.loads(listed.stdout)]

    def resend(self, job_id: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", RESEND, job_id],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=PROJECT_ROOT,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    require_nexuslims(tmp_path / "probe")
    with FakeCDCS() as cdcs, FakeELabFTW() as elab:
        nexuslims = nexuslims_settings(tmp_path / "nexuslims")
        settings = {
            "NX_CDCS_URL": cdcs.root_url,
            "NX_CDCS_TOKEN": cdcs.token,
            "NX_ELABFTW_URL": elab.url,
            "NX_ELABFTW_API_KEY": elab.api_key,
            **nexuslims,
        }
        with private_worker(tmp_path, "bridge", **settings) as env:
            yield Bridge(env, Path(nexuslims["NX_DB_PATH"]), cdcs, elab)


def test_a_failed_session_is_built_not_exported_then_completed_by_retry(
    bridge: Bridge, tmp_path: Path
) -> None:
    session = "2026-03-04_titan_0101"
    prepare_database(bridge.env, [session])
    bridge.elab.fail_next(500, on=ELABFTW_CREATE)  # a permanent failure: tried once
    spec = record_spec(tmp_path, session)
    out = run_client(bridge.env, [spec], wait=False)
    # Returned at once, nothing known yet; the bridge marks the session.
    assert out[spec["file"]] == {"satisfied": False, "results": []}
    wait_for(lambda: record_status(bridge.database, session) == {"BUILT_NOT_EXPORTED"}, 60)
    first = upload_log(bridge.database, session)
    assert [(name, ok) for name, ok, _ in first] == [("cdcs", True), ("elabftw", False)]
    assert "HTTP 500" in str(first[1][2])

    (job_id,) = bridge.job_ids()
    retried = nx_export(bridge.env, "retry", job_id, "--wait", "--json")
    assert retried.returncode == 0, retried.stdout[-2000:] + retried.stderr[-2000:]

    # No SQL by hand: the retry's outcome reaches NexusLIMS through the bridge.
    wait_for(lambda: record_status(bridge.database, session) == {"COMPLETED"}, 60)
    rows = upload_log(bridge.database, session)
    assert rows[:2] == first
    assert [(name, ok) for name, ok, _ in rows[2:]] == [("elabftw", True)]
    assert len(bridge.cdcs.records) == len(bridge.elab.experiments) == 1


def test_a_redelivered_outcome_is_written_once(bridge: Bridge, tmp_path: Path) -> None:
    session = "2026-03-04_titan_0102"
    prepare_database(bridge.env, [session])
    run_client(bridge.env, [record_spec(tmp_path, session)], wait=False)
    wait_for(lambda: record_status(bridge.database, session) == {"COMPLETED"}, 60)
    rows = upload_log(bridge.database, session)
    assert [(name, ok) for name, ok, _ in rows] == [("cdcs", True), ("elabftw", True)]
    (job_id,) = bridge.job_ids()

    assert bridge.resend(job_id) == {"written": 0, "already_written": True}
    # As if the worker had died between the database commit and setting its key.
    client = redis.Redis.from_url(bridge.env["NX_EXPORT_BROKER_URL"])
    assert client.delete(f"nxexport:nexuslims:done:{job_id}:1") == 1
    answer = bridge.resend(job_id)
    assert answer["written"] == 0 and answer["exported"] is True
    assert upload_log(bridge.database, session) == rows


def test_waiting_client_and_bridge_write_each_result_once(bridge: Bridge, tmp_path: Path) -> None:
    session = "2026-03-04_titan_0103"
    prepare_database(bridge.env, [session])
    spec = record_spec(tmp_path, session)
    out = run_client(bridge.env, [spec])
    assert out[spec["file"]]["satisfied"]
    wait_for(lambda: record_status(bridge.database, session) == {"COMPLETED"}, 60)
    rows = upload_log(bridge.database, session)
    assert [(name, ok) for name, ok, _ in rows] == [("cdcs", True), ("elabftw", True)]


def test_the_bridge_corrects_a_record_still_running_at_the_timeout(
    bridge: Bridge, tmp_path: Path
) -> None:
    session = "2026-03-04_titan_0104"
    prepare_database(bridge.env, [session])
    bridge.cdcs.create_latency = 5  # far longer than the client waits
    spec = record_spec(tmp_path, session)
    out = run_client(bridge.env, [spec], timeout=0.5)[spec["file"]]
    assert not out["satisfied"]
    assert all("still running" in str(r["error_message"]) for r in out["results"])
    # export_records logged what it knew at its timeout.
    assert [name for name, ok, _ in upload_log(bridge.database, session) if not ok] == [
        "cdcs",
        "elabftw",
    ]
    wait_for(lambda: record_status(bridge.database, session) == {"COMPLETED"}, 60)
    rows = upload_log(bridge.database, session)
    assert [(name, ok) for name, ok, _ in rows[2:]] == [("cdcs", True), ("elabftw", True)]


def test_without_a_bridge_worker_the_outcome_waits_in_the_job_store_not_a_queue(
    app: Any, record: Path
) -> None:
    from tasks.nexuslims.bridge import BRIDGE_QUEUE, BRIDGE_SEEN, WAITING
    from tasks.store.keys import ANNOUNCE
    from worker import enqueue_export

    # The session's worker cannot reach NexusLIMS's database, and no worker that can
    # has said so: nothing is queued for a bridge, the run waits for one instead.
    client = app.backend.client
    assert not client.exists(BRIDGE_SEEN)
    job = enqueue_export(make_context(record), destinations=["alpha"], app=app).wait(timeout=30)
    assert job.satisfied
    # Offered once the finish's own result is stored, so just after the job is seen finished.
    wait_for(lambda: client.zscore(WAITING, f"{job.id}:1") is not None, timeout=10)
    assert client.zscore(ANNOUNCE, job.id) is None
    queued = [json.loads(raw)["headers"]["argsrepr"] for raw in client.lrange(BRIDGE_QUEUE, 0, -1)]
    assert not [text for text in queued if f"job={job.id} " in text]
    assert 0 < client.ttl(WAITING) <= int(app.conf.result_expires.total_seconds())


def test_runs_finished_before_any_bridge_worker_are_written_once_one_starts(
    tmp_path: Path,
) -> None:
    from tasks.nexuslims.bridge import BRIDGE_QUEUE, WAITING

    require_nexuslims(tmp_path / "probe")
    sessions = ["2026-03-04_titan_0201", "2026-03-04_titan_0202"]
    with FakeCDCS() as cdcs, FakeELabFTW() as elab, running_redis(tmp_path / "redis") as server:
        nexuslims = nexuslims_settings(tmp_path / "nexuslims")
        settings = {
            "NX_CDCS_URL": cdcs.root_url, "NX_CDCS_TOKEN": cdcs.token, "NX_ELABFTW_URL": elab.url,
            "NX_ELABFTW_API_KEY": elab.api_key, "NX_EXPORT_HEARTBEAT_SECONDS": "1", **nexuslims,
        }  # fmt: skip
        env = worker_env(server.url, None, **settings)
        prepare_database(env, sessions)
        plain = {key: value for key, value in env.items() if key != "NX_DB_PATH"}
        client = server.client()
        with running_worker(plain, tmp_path / "plain.log", name="plain"):
            run_client(env, [record_spec(tmp_path, s) for s in sessions], wait=False)
            wait_for(lambda: client.zcard(WAITING) == 2, timeout=60)
        assert client.llen(BRIDGE_QUEUE) == 0
        assert all(record_status(Path(nexuslims["NX_DB_PATH"]), s) == {"TO_BE_BUILT"}
                   for s in sessions)  # fmt: skip

        with running_worker(env, tmp_path / "bridge.log", name="bridge"):
            database = Path(nexuslims["NX_DB_PATH"])
            for session in sessions:
                wait_for(lambda s=session: record_status(database, s) == {"COMPLETED"}, 60)
            # Each leaves the set just after its commit.
            wait_for(lambda: client.zcard(WAITING) == 0, timeout=10)
            rows = {s: upload_log(database, s) for s in sessions}
            assert all([(n, ok) for n, ok, _ in r] == [("cdcs", True), ("elabftw", True)]
                       for r in rows.values())  # fmt: skip
            time.sleep(2.5)  # more heartbeats: nothing is sent or written again
            assert {s: upload_log(database, s) for s in sessions} == rows


def test_only_a_worker_reaching_nexuslims_consumes_the_bridge_queue(
    app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tasks.nexuslims.bridge import BRIDGE_QUEUE
    from tasks.nexuslims.database import bridge_available, importable
    from worker.app import all_queues

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("NX_DB_PATH", raising=False)
    bridge_available.cache_clear()
    try:
        assert BRIDGE_QUEUE not in all_queues()
        if importable():
            monkeypatch.setenv("NX_DB_PATH", str(tmp_path / "nexuslims.db"))
            bridge_available.cache_clear()
            assert BRIDGE_QUEUE in all_queues()
    finally:
        bridge_available.cache_clear()


@dataclass
class Cluster:
    """One Redis, NexusLIMS's database and settings: workers with and without it come and go."""

    env: dict[str, str]
    client: redis.Redis
    database: Path
    elab: FakeELabFTW

    def plain_env(self) -> dict[str, str]:
        """A worker that cannot reach NexusLIMS's database: it exports, it is no bridge."""
        return {key: value for key, value in self.env.items() if key != "NX_DB_PATH"}


@contextmanager
def bridge_cluster(tmp_path: Path, **extra: str) -> Iterator[Cluster]:
    require_nexuslims(tmp_path / "probe")
    with FakeCDCS() as cdcs, FakeELabFTW() as elab, running_redis(tmp_path / "redis") as server:
        nexuslims = nexuslims_settings(tmp_path / "nexuslims")
        env = worker_env(server.url, None, NX_CDCS_URL=cdcs.root_url, NX_CDCS_TOKEN=cdcs.token,
                         NX_ELABFTW_URL=elab.url, NX_ELABFTW_API_KEY=elab.api_key,
                         **nexuslims, **extra)  # fmt: skip
        yield Cluster(env, server.client(), Path(nexuslims["NX_DB_PATH"]), elab)


def holds_bridge_message(client: redis.Redis) -> bool:
    """A worker took an export.nexuslims message and has not acknowledged it."""
    return any(b'"export.nexuslims"' in raw for raw in client.hvals("unacked"))


# Publishes export.nexuslims as any client of the broker could, and prints what the bridge answered.
FORGE = """
import json, sys
from celery import Celery
client = Celery(broker=sys.argv[1], backend=sys.argv[1])
result = client.send_task("export.nexuslims", args=json.loads(sys.argv[2]),
                          queue="nx-export.nexuslims")
print(json.dumps(result.get(timeout=120)))
"""

ATTACKER_URL = "https://attacker.example/records/1"


def forge(env: dict[str, str], *args: Any) -> dict[str, Any]:
    return run_script(FORGE, env, env["NX_EXPORT_BROKER_URL"], json.dumps(list(args)))


def test_a_forged_outcome_writes_nothing(bridge: Bridge, tmp_path: Path) -> None:
    session, victim = "2026-03-04_titan_0105", "2026-03-04_titan_0106"
    prepare_database(bridge.env, [session, victim])
    run_client(bridge.env, [record_spec(tmp_path, session)], wait=False)
    wait_for(lambda: record_status(bridge.database, session) == {"COMPLETED"}, 60)
    rows = upload_log(bridge.database, session)
    (job_id,) = bridge.job_ids()

    made_up = [{"success": True, "destination_name": name, "record_id": "forged",
                "record_url": ATTACKER_URL} for name in ("cdcs", "elabftw")]  # fmt: skip
    outcome = {"run": 1, "session_identifier": victim, "strategy": "all", "results": made_up}
    unknown = str(uuid.uuid4())
    # The previous version's message shape, with a job no one ran, and the new one.
    forgeries = [
        [{**outcome, "job_id": unknown}],
        [unknown, 1],
        [{**outcome, "run": 2, "job_id": job_id}],
        [job_id, 2],
        [job_id, "1"],
        [{"results": made_up}],
    ]
    for args in forgeries:
        answer = forge(bridge.env, *args)
        assert answer["written"] == 0 and "refused" in answer, (args, answer)
    # A real job and run: only the job store's outcome counts, and it is written already.
    assert forge(bridge.env, {**outcome, "job_id": job_id}) == {
        "written": 0,
        "already_written": True,
    }
    assert record_status(bridge.database, victim) == {"TO_BE_BUILT"}
    assert upload_log(bridge.database, victim) == []
    assert upload_log(bridge.database, session) == rows
    with closing(sqlite3.connect(bridge.database)) as db:
        forged = db.execute("SELECT 1 FROM upload_log WHERE record_url LIKE '%attacker%'")
        assert not forged.fetchall()


def test_an_older_run_delivered_late_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    session = "2026-03-04_titan_0107"
    with bridge_cluster(tmp_path) as cluster:
        env, client, database = cluster.env, cluster.client, cluster.database
        prepare_database(env, [session])
        client.set(BRIDGE_SEEN, "1")  # a bridge worker was seen: runs are queued for it
        with running_worker(cluster.plain_env(), tmp_path / "plain.log", name="plain"):
            cluster.elab.fail_next(500, on=ELABFTW_CREATE)
            run_client(env, [record_spec(tmp_path, session)], wait=False)
            # Run 1's message (BUILT_NOT_EXPORTED), held back as a slow delivery would be.
            wait_for(lambda: client.llen(BRIDGE_QUEUE) == 1, 60)
            held = client.rpop(BRIDGE_QUEUE)
            (job_id,) = [job["id"] for job in json.loads(nx_export(env, "jobs", "--json").stdout)]
            retried = nx_export(env, "retry", job_id, "--wait", "--json")
            assert retried.returncode == 0, retried.stdout[-2000:] + retried.stderr[-2000:]
            wait_for(lambda: client.llen(BRIDGE_QUEUE) == 1, 30)
        with running_worker(env, tmp_path / "bridge.log", name="bridge"):
            wait_for(lambda: record_status(database, session) == {"COMPLETED"}, 60)
            rows = upload_log(database, session)
            assert [(name, ok) for name, ok, _ in rows] == [("cdcs", True), ("elabftw", True)]
            # Run 1 arrives after run 2 was written.
            held_id = json.loads(held)["headers"]["id"]
            client.lpush(BRIDGE_QUEUE, held)
            wait_for(lambda: client.exists(f"celery-task-meta-{held_id}"), 60)
            time.sleep(1)
        assert record_status(database, session) == {"COMPLETED"}
        assert upload_log(database, session) == rows  # the newest row is still the last


def test_a_bridge_worker_frozen_then_killed_loses_no_outcome(tmp_path: Path) -> None:
    session = "2026-03-04_titan_0108"
    heartbeat = 2.0
    with bridge_cluster(tmp_path, NX_EXPORT_HEARTBEAT_SECONDS=f"{heartbeat:g}") as cluster:
        env, client, database = cluster.env, cluster.client, cluster.database
        prepare_database(env, [session])
        with running_worker(cluster.plain_env(), tmp_path / "plain.log", name="plain"):
            frozen = WorkerProcess(env, tmp_path / "frozen.log", "frozen").start()
            try:
                # NexusLIMS holds its database: the bridge worker takes the outcome and waits.
                with closing(sqlite3.connect(database, isolation_level=None)) as holder:
                    holder.execute("BEGIN IMMEDIATE")  # its readers go on, writers wait
                    run_client(env, [record_spec(tmp_path, session)], wait=False)
                    wait_for(lambda: holds_bridge_message(client), 60)
                    frozen.signal_tree(signal.SIGSTOP)
                    time.sleep(heartbeat)
                    frozen.kill()
                    holder.execute("ROLLBACK")
            finally:
                frozen.kill()
            print(f"after the kill: queue {client.llen(BRIDGE_QUEUE)}, "
                  f"unacked {client.hlen('unacked')}")  # fmt: skip
            # The frozen worker's session lock expires by itself (LOCK_SECONDS, 10 s).
            lock = f"nxexport:nexuslims:lock:{session}"
            wait_for(lambda: not client.exists(lock), 30)
            assert record_status(database, session) == {"TO_BE_BUILT"}
            with running_worker(env, tmp_path / "bridge.log", name="bridge"):
                started = time.monotonic()
                wait_for(lambda: record_status(database, session) == {"COMPLETED"}, 60)
                took = time.monotonic() - started
        print(f"marked {took:.2f} s after the new bridge worker was ready")
        assert took <= 2 * heartbeat
        rows = upload_log(database, session)
        assert [(name, ok) for name, ok, _ in rows] == [("cdcs", True), ("elabftw", True)]
