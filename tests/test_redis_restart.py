"""Redis restarts in the middle of a run: queued jobs complete, everyone reconnects."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.samples import enqueue_arguments, write_record
from tests.support import (
    StartRedis,
    StartWorker,
    nx_export,
    nx_export_in_background,
    read_log,
    running_redis,
    wait_for,
)

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

DESTINATIONS = ("--destination", "local", "--destination", "alpha")


def test_jobs_survive_a_redis_restart(
    tmp_path: Path, start_redis: StartRedis, start_worker: StartWorker
) -> None:
    redis = start_redis()
    archive = tmp_path / "archive"
    worker = start_worker(
        "restart",
        redis=redis,
        plugins=True,
        concurrency=2,
        ready_timeout=60,
        NX_EXPORT_LOCAL_PATH=str(archive),
        NX_EXPORT_VISIBILITY_TIMEOUT="6",
        NX_TEST_ALPHA_BEHAVIOUR="sleep:0.5",
    )
    env = worker.env
    record = write_record(tmp_path / "record.xml", title="restart")
    job_ids = [
        json.loads(
            nx_export(
                *enqueue_arguments(record, *DESTINATIONS, "--json", session=f"restart-{n}"), env=env
            ).stdout
        )["job_id"]
        for n in range(6)
    ]
    waiting_arguments = enqueue_arguments(
        record, *DESTINATIONS, "--wait", "--json", "--timeout", "90", session="restart-wait"
    )
    with nx_export_in_background(*waiting_arguments, env=env) as waiting:
        # The client has enqueued and waits (a loaded machine takes seconds to start it);
        # the worker is busy with the first jobs; the rest wait in Redis.
        wait_for(lambda: redis.client().exists("nxexport:idx:session:restart-wait"), timeout=60)
        time.sleep(0.5)
        redis.stop()
        time.sleep(1.0)
        redis.start()
        out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert json.loads(out)["satisfied"] is True
    for job_id in job_ids:
        status = nx_export("status", job_id, "--watch", "--json", env=env, timeout=120)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["satisfied"] is True
    worker.stop()
    # The restart really happened under the running worker.
    assert "Connection to broker lost" in worker.log()
    archived = sorted(path.stem for path in archive.rglob("*.xml"))
    assert archived == sorted([f"restart-{n}" for n in range(6)] + ["restart-wait"])


def test_redis_killed_while_a_dependent_is_added_still_ends_the_job(
    tmp_path: Path, start_worker: StartWorker
) -> None:
    # alpha's outcome is stored and the chord counts linked; then Redis dies before
    # linked's message is published (tests/plugins: NX_TEST_KILL_REDIS_ON_ADD_TO_CHORD).
    log = tmp_path / "exports.jsonl"
    with running_redis(tmp_path / "redis", fsync="always") as redis:
        assert redis.process is not None
        worker = start_worker(
            "adding", redis=redis, plugins=True,
            NX_TEST_KILL_REDIS_ON_ADD_TO_CHORD=str(redis.process.pid),
            NX_TEST_EXPORT_LOG=str(log), NX_EXPORT_HEARTBEAT_SECONDS="2",
            NX_EXPORT_LOST_TASK_SECONDS="10", NX_EXPORT_VISIBILITY_TIMEOUT="6",
        )  # fmt: skip
        record = write_record(tmp_path / "record.xml", title="redis killed while adding")
        arguments = enqueue_arguments(record, "--destination", "alpha", "--destination",
                                      "linked", "--json", session="redis-killed")  # fmt: skip
        enqueued = nx_export(*arguments, env=worker.env)
        assert enqueued.returncode == 0, enqueued.stderr
        job_id = json.loads(enqueued.stdout)["job_id"]
        wait_for(lambda: redis.process is not None and redis.process.poll() is not None, 30)
        time.sleep(2)  # the worker finds Redis gone
        redis.start()
        status = nx_export("status", job_id, "--watch", "--json", env=worker.env, timeout=120)
        assert status.returncode == 0, status.stderr + worker.log()[-3000:]
        job = json.loads(status.stdout)
        assert {n: d["state"] for n, d in job["destinations"].items()} == {
            "alpha": "SUCCESS", "linked": "SUCCESS",
        }, job  # fmt: skip
        assert sorted(run["name"] for run in read_log(log)) == ["alpha", "linked"]
        assert worker.process is not None and worker.process.poll() is None
