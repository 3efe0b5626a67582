"""A worker without ``NX_RECORDS_PATH`` exports no record a caller names, unless opted out.

Whoever reaches the broker names the record a worker reads. Without a records
folder, a worker would read any file it can — its own ``/proc/self/environ``,
credentials included — and export it. Here a client that skips its own checks
names that file, as any client of the broker can.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

from destinations.names import JOB_QUEUE
from tests.samples import enqueue_arguments, make_context, write_record
from tests.support import (
    PROJECT_ROOT,
    StartRedis,
    StartWorker,
    every_redis_value,
    nx_export,
    worker_env,
)

# A client of the broker that does not check the record it names before enqueuing it.
HOSTILE_CLIENT = """
import json, sys
import tasks.jobs
tasks.jobs.check_record = lambda *args, **kwargs: b""
from worker.app import app
job = tasks.jobs.enqueue_export(json.loads(sys.argv[1]), destinations=["local"], app=app)
print(job.id)
"""
REFUSING = "WARNING: records: NX_RECORDS_PATH is not set: every record is refused"


def hostile_enqueue(env: dict[str, str], record: str) -> str:
    context = {**make_context(Path(record)), "metadata": {}}
    done = subprocess.run(
        [sys.executable, "-c", HOSTILE_CLIENT, json.dumps(context)],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def finished_job(job_id: str, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    status = nx_export("status", job_id, "--watch", "--json", env=env, timeout=60)
    return json.loads(status.stdout), status.stdout + status.stderr


def test_a_worker_without_records_path_exports_no_named_file(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    token = f"cdcs-token-{uuid.uuid4().hex}"
    archive = tmp_path / "archive"
    redis = start_redis()
    worker = start_worker("rootless", redis=redis, records_root=False,
                          NX_EXPORT_LOCAL_PATH=str(archive), NX_CDCS_TOKEN=token)  # fmt: skip
    client = worker_env(redis.url, None, NX_EXPORT_LOCAL_PATH=str(archive))
    assert REFUSING in worker.log()

    job, shown = finished_job(hostile_enqueue(client, "/proc/self/environ"), client)
    local = job["destinations"]["local"]
    assert local["state"] == "FAILURE", job
    assert local["error"].startswith(
        "record /proc/self/environ not read: NX_RECORDS_PATH is not set on this worker"
    ), local["error"]
    # export.record's own check on the worker refuses a record as plain as can be.
    record = write_record(tmp_path / "records" / "plain.xml", title="plain")
    started = Celery("client", broker=redis.url, backend=redis.url).send_task(
        "export.record", kwargs={"context": make_context(record), "destinations": ["local"]},
        queue=JOB_QUEUE,
    )  # fmt: skip
    started.get(timeout=30, propagate=False)
    assert started.failed()
    assert "NX_RECORDS_PATH is not set on this worker" in str(started.result)

    archived = b"".join(path.read_bytes() for path in archive.rglob("*") if path.is_file())
    worker.stop()
    places = {
        "the archive": archived,
        "the job": shown.encode(),
        "redis": b"\n".join(every_redis_value(redis.client())),
        "the worker log": worker.log().encode(),
    }
    for place, held in places.items():
        assert token.encode() not in held, f"the CDCS token is in {place}"


def test_a_worker_opted_out_reads_records_from_anywhere_and_says_so(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    redis = start_redis()
    worker = start_worker("anywhere", redis=redis, records_root=False,
                          NX_EXPORT_LOCAL_PATH=str(archive),
                          NX_EXPORT_ALLOW_ANY_RECORD_PATH="true")  # fmt: skip
    assert (
        "WARNING: records: NX_RECORDS_PATH is not set and NX_EXPORT_ALLOW_ANY_RECORD_PATH "
        "is true: records are read from anywhere"
    ) in worker.log()
    record = write_record(tmp_path / "anywhere" / "record.xml", title="anywhere")
    client = worker_env(redis.url, None, NX_EXPORT_LOCAL_PATH=str(archive))
    arguments = enqueue_arguments(record, "--destination", "local", "--wait", "--json",
                                  session=f"anywhere-{uuid.uuid4().hex[:8]}")  # fmt: skip
    enqueued = nx_export(*arguments, env=client)
    assert enqueued.returncode == 0, enqueued.stderr
    assert json.loads(enqueued.stdout)["destinations"]["local"]["state"] == "SUCCESS"
    assert [path.read_bytes() for path in archive.rglob("*.xml")] == [record.read_bytes()]

