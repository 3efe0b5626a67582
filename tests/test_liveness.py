"""Every job ends: unserved destinations, stuck exports, unsent canvases, errors outside the
export, vanished jobs and Redis restarts never leave a job (or its follower) waiting forever."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.store.model import StoredJob
from tests.private_cluster import Cluster, enqueue_arguments
from tests.samples import RECORD, make_context
from tests.support import read_log, wait_for
from worker.sandbox import FakeCDCS

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes


@pytest.fixture
def record(tmp_path: Path) -> Path:
    path = tmp_path / "liveness.xml"
    path.write_text(RECORD.format(title="liveness"), encoding="utf-8")
    return path


@pytest.fixture
def cluster(tmp_path: Path, plugin_path: Path) -> Iterator[Cluster]:
    # Heartbeats every second: a stopped worker stops counting after two seconds.
    cluster = Cluster(tmp_path, plugin_path, NX_EXPORT_HEARTBEAT_SECONDS="1")
    yield cluster
    cluster.close()


def test_a_job_ends_at_its_deadline_when_no_live_worker_serves_a_destination(
    cluster: Cluster, record: Path
) -> None:
    with FakeCDCS() as cdcs:
        # The only worker with CDCS enabled publishes it, then stops for good.
        cluster.worker("cdcs", NX_CDCS_URL=cdcs.root_url, NX_CDCS_TOKEN=cdcs.token).stop()
    cluster.worker("plugins", NX_TEST_ALPHA_BEHAVIOUR="sleep:8")
    time.sleep(3)  # more than two of the stopped worker's heartbeats
    done = cluster.cli(
        *enqueue_arguments(record, "unserved", "--destination", "cdcs"), "--wait", "--json",
        NX_EXPORT_JOB_DEADLINE="3", timeout=90,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "warning: no live worker serves cdcs" in done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "finished" and job["satisfied"] is False
    assert job["destinations"]["cdcs"]["state"] == "FAILURE"
    assert job["destinations"]["cdcs"]["error"] == "no worker took export.cdcs within 3 s"

    stuck = cluster.cli(
        *enqueue_arguments(record, "stuck", "--destination", "alpha"), "--wait", "--json",
        NX_EXPORT_JOB_DEADLINE="2", timeout=90,
    )  # fmt: skip
    assert stuck.returncode == 1, stuck.stderr
    assert "warning" not in stuck.stderr
    alpha = json.loads(stuck.stdout)["destinations"]["alpha"]
    assert (alpha["state"], alpha["error"]) == ("FAILURE", "still running after 2 s")

    retried = cluster.cli("retry", job["id"], "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["runs"] == 2


def test_a_run_ended_by_its_deadline_stays_ended_when_a_worker_comes_back(
    cluster: Cluster, record: Path
) -> None:
    with FakeCDCS() as cdcs:
        settings = {"NX_CDCS_URL": cdcs.root_url, "NX_CDCS_TOKEN": cdcs.token}
        # The only worker with CDCS enabled publishes it, then stops: the task waits.
        cluster.worker("cdcs", **settings).stop()
        cluster.worker("plugins")
        time.sleep(3)  # more than two of the stopped worker's heartbeats
        done = cluster.cli(
            *enqueue_arguments(record, "ended", "--destination", "cdcs"), "--wait", "--json",
            NX_EXPORT_JOB_DEADLINE="3", timeout=90,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        job_id = json.loads(done.stdout)["id"]

        def told() -> dict[str, Any]:
            shown = json.loads(cluster.cli("status", job_id, "--json").stdout)
            listed = json.loads(cluster.cli("jobs", "--failed", "--json").stdout)
            return {"satisfied": shown["satisfied"], "cdcs": shown["destinations"]["cdcs"]["state"],
                    "listed": job_id in [job["id"] for job in listed]}  # fmt: skip

        ended = {"satisfied": False, "cdcs": "FAILURE", "listed": True}
        assert told() == ended
        # A worker serving CDCS comes back and takes the task its queue still held.
        back = cluster.worker("cdcs-back", **settings)
        wait_for(lambda: "not exported" in back.log(), timeout=60)
        assert cdcs.records == {}  # nothing exported after the run ended
        assert told() == ended  # the job, its list and its verdict say the same
        retried = cluster.cli("retry", job_id, "--wait", "--json", timeout=90)
        assert retried.returncode == 0, retried.stderr
        assert json.loads(retried.stdout)["satisfied"] is True
        assert len(cdcs.records) == 1


def test_a_job_whose_canvas_was_never_sent_still_runs(
    cluster: Cluster, record: Path, tmp_path: Path
) -> None:
    cluster.worker("sweeper")
    log = tmp_path / "exports.jsonl"
    job_id = str(uuid.uuid4())
    # What a client writes before it sends the canvas: it died right after.
    cluster.store().create(
        StoredJob(
            id=job_id,
            strategy="all",
            destinations=["alpha"],
            context=make_context(record, log),
            finish_task_id=str(uuid.uuid4()),
        )
    )
    status = cluster.cli("status", job_id, "--watch", "--json", timeout=60)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["satisfied"] is True
    assert [line["name"] for line in read_log(log)] == ["alpha"]


def test_a_run_finished_by_a_worker_that_died_before_announcing_it_is_announced(
    cluster: Cluster, record: Path
) -> None:
    from tasks.nexuslims.bridge import BRIDGE_QUEUE, BRIDGE_SEEN
    from tasks.store.keys import ANNOUNCE

    store, job_id = cluster.store(), str(uuid.uuid4())
    store.client.set(BRIDGE_SEEN, "1")  # a bridge worker exists: the run is sent to its queue
    # What export.finish writes before its result is stored and the run announced:
    # its worker died right after.
    store.create(StoredJob(id=job_id, strategy="all", destinations=["alpha"],
                           context=make_context(record), finish_task_id="finish-1"))  # fmt: skip
    store.start_attempt(job_id, "alpha", "task-1")
    store.record_result(job_id, "alpha", {"success": True, "destination_name": "alpha"})
    assert store.mark_finished(job_id, True, "finish-1") is not None
    assert store.client.zscore(ANNOUNCE, job_id) is not None
    cluster.worker("sweeper")

    def announced() -> list[dict[str, Any]]:
        raws = store.client.lrange(BRIDGE_QUEUE, 0, -1)
        headers = [json.loads(raw)["headers"] for raw in raws]
        return [h for h in headers if f"job={job_id} " in h["argsrepr"]]

    (message,) = wait_for(announced, timeout=30)
    assert message["task"] == "export.nexuslims"
    wait_for(lambda: store.client.zscore(ANNOUNCE, job_id) is None, timeout=10)
    time.sleep(3)  # more sweeps: it was announced once
    assert len(announced()) == 1


def test_an_error_outside_the_export_still_ends_the_job(app: Any, record: Path) -> None:
    from tasks.jobs import get_job
    from worker import enqueue_export

    # "prepared" waits for alpha and for its own slow prepare step.
    context = make_context(record)
    context["metadata"]["behaviour"]["prepared:prepare"] = "sleep:3"
    job = enqueue_export(context, destinations=["alpha", "prepared"], app=app)
    wait_for(lambda: get_job(job.id, app=app).destinations["alpha"].succeeded, timeout=30)
    # alpha's stored result goes bad before "prepared" reads it.
    client, key = app.backend.client, f"nxexport:job:{job.id}"
    entry = json.loads(client.hget(key, "dest:alpha"))
    entry["result"]["record_id"] = {"not": "a string"}
    client.hset(key, "dest:alpha", json.dumps(entry))
    finished = job.wait(timeout=40)
    assert finished.finished and not finished.satisfied
    prepared = finished.destinations["prepared"]
    assert prepared.state == "FAILURE"
    assert "prepared failed outside its export: ValidationError" in (prepared.error or "")


def test_followers_say_when_the_job_is_gone(cluster: Cluster, record: Path) -> None:
    cluster.worker("slow", NX_TEST_ALPHA_BEHAVIOUR="sleep:10")
    client = cluster.redis.client()
    waiting = cluster.popen_cli(
        *enqueue_arguments(record, "vanishing", "--destination", "alpha"), "--wait"
    )
    assert waiting.stdout is not None
    job_id = waiting.stdout.readline().strip()
    watching = cluster.popen_cli("status", job_id, "--watch")
    # Both follow the job before it goes (a loaded machine takes seconds to start them);
    # alpha is still exporting then.
    time.sleep(5)
    client.delete(f"nxexport:job:{job_id}")
    for follower in (waiting, watching):
        _, err = follower.communicate(timeout=60)
        assert follower.returncode == 1, err
        assert "Traceback" not in err
        assert f"error: job {job_id} is gone" in err


def test_a_redis_restart_costs_no_job_its_finish(
    cluster: Cluster, record: Path, tmp_path: Path
) -> None:
    # A message Redis did not keep across the restart is found and sent again within seconds.
    cluster.worker("blip", NX_TEST_ALPHA_BEHAVIOUR="sleep:1", NX_TEST_BETA_BEHAVIOUR="sleep:1",
                   NX_EXPORT_LOST_TASK_SECONDS="5")  # fmt: skip
    log = tmp_path / "exports.jsonl"
    contexts = [make_context(record, log) for _ in range(20)]
    job_ids = cluster.enqueue([{"context": c, "destinations": ["alpha", "beta"]} for c in contexts])
    time.sleep(1.0)  # jobs running and queued
    cluster.redis.stop()
    time.sleep(3.0)
    cluster.redis.start()
    unfinished = cluster.wait_finished(job_ids, timeout=120)
    assert unfinished == [], [
        {n: e.state for n, e in cluster.record(j).destinations.items()} for j in unfinished
    ]
    outcomes = {job_id: cluster.record(job_id).outcomes() for job_id in job_ids}
    failed = {
        job_id: {n: e.error for n, e in cluster.record(job_id).destinations.items() if e.error}
        for job_id, outcome in outcomes.items()
        if outcome != {"alpha": True, "beta": True}
    }
    assert failed == {}
    runs = Counter((line["session"], line["name"]) for line in read_log(log))
    assert len(runs) == 40 and set(runs.values()) == {1}, runs


def test_a_worker_holding_retries_survives_a_redis_restart(
    cluster: Cluster, record: Path, tmp_path: Path
) -> None:
    # Retries wait for their countdown in the worker, unacknowledged, when Redis goes.
    # Held retries come back by the visibility timeout; a message the restart lost
    # anyway is the lost-task sweep's, here within 20 s (5 minutes by default).
    worker = cluster.worker(
        "holding", NX_EXPORT_BACKOFF_SECONDS="2", NX_EXPORT_VISIBILITY_TIMEOUT="12",
        NX_EXPORT_LOST_TASK_SECONDS="20",
    )  # fmt: skip
    log = tmp_path / "exports.jsonl"
    contexts = [make_context(record, log, alpha="transient:3") for _ in range(10)]
    job_ids = cluster.enqueue([{"context": c, "destinations": ["alpha"]} for c in contexts])
    # Every job's first attempt failed: their retries wait 1 to 3 s in the worker.
    wait_for(lambda: len(read_log(log)) >= 10, timeout=30)
    cluster.redis.stop()
    time.sleep(3.0)
    cluster.redis.start()
    unfinished = cluster.wait_finished(job_ids, timeout=120)
    assert unfinished == [], (
        [cluster.record(job_id).destinations for job_id in unfinished], worker.log()[-3000:]
    )
    assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
    assert "Unrecoverable error" not in worker.log()
    assert all(cluster.record(job_id).outcomes() == {"alpha": True} for job_id in job_ids)
