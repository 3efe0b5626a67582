"""A record path swapped for a FIFO never holds a worker's pool slot.

Opening a FIFO for reading blocks until a writer comes, which for a swapped-in
FIFO is never: a worker that opened one in a pool thread would keep that slot
forever, go on heartbeating, run nothing new and never finish a warm shutdown.
Here a worker with two slots is sent records while another process keeps
swapping a FIFO and a regular file at the same path, as fast as it can.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery

from destinations.names import JOB_QUEUE
from tests.samples import make_context, write_record
from tests.support import StartRedis, StartWorker, nx_export, worker_env

# A FIFO, then the record again, put in place at ``record`` in turn, until killed.
SWAPPER = """
import os, sys
record, regular = sys.argv[1], sys.argv[2]
spare = record + ".swap"
while True:
    os.link(regular, spare)
    os.rename(spare, record)
    os.mkfifo(spare)
    os.rename(spare, record)
"""
# Records sent while the path is swapped: each has a chance of landing between a
# check and the open that follows it.
SENT = 200


@contextmanager
def swapping(record: Path) -> Iterator[None]:
    """``record`` is a FIFO and the record in turn for the block; a FIFO after it."""
    # A copy, not a link: renaming a link of the same file over it would do nothing.
    regular = record.with_suffix(".original")
    shutil.copy(record, regular)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(record), str(regular)])
    try:
        yield
    finally:
        swapper.kill()
        swapper.wait()
        Path(f"{record}.swap").unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        os.mkfifo(record)


def send_record(client: Celery, record: Path) -> Any:
    """``export.record`` as any client of the broker sends it, checked by nobody before."""
    kwargs = {"context": make_context(record), "destinations": ["local"],
              "strategy": "best_effort"}  # fmt: skip
    return client.send_task("export.record", kwargs=kwargs, queue=JOB_QUEUE)


def active_tasks(client: Celery) -> list[str]:
    """The tasks running in the worker's pool slots, by name and id."""
    active = client.control.inspect(timeout=5).active() or {}
    return [f"{task['name']} {task['id']}" for tasks in active.values() for task in tasks]


def job_of(started: Any, env: dict[str, str]) -> dict[str, Any]:
    status = nx_export("status", started.get(timeout=5)["job_id"], "--watch", "--json", env=env)
    return dict(json.loads(status.stdout))


def test_a_record_swapped_for_a_fifo_never_holds_a_pool_slot(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    records, archive = tmp_path / "records", tmp_path / "archive"
    redis = start_redis()
    worker = start_worker("fifo", redis=redis, concurrency=2, NX_RECORDS_PATH=str(records),
                          NX_EXPORT_LOCAL_PATH=str(archive))  # fmt: skip
    client = Celery("client", broker=redis.url, backend=redis.url)
    env = worker_env(redis.url, None, NX_RECORDS_PATH=str(records),
                     NX_EXPORT_LOCAL_PATH=str(archive))  # fmt: skip
    swapped = write_record(records / "swapped.xml", title="swapped")
    with swapping(swapped):
        sent = [send_record(client, swapped) for _ in range(SENT)]
        deadline = time.monotonic() + 90
        while not all(started.ready() for started in sent) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert all(started.ready() for started in sent), f"pool slots held by {active_tasks(client)}"
    # Each one read the record, or refused what was there instead, and let its slot go.
    refusals = [str(started.result) for started in sent if started.failed()]
    assert all("not a regular file" in reason for reason in refusals), refusals
    # The path stays a FIFO: the record's check on the worker names the reason.
    fifo_job = send_record(client, swapped)
    fifo_job.get(timeout=30, propagate=False)
    assert fifo_job.failed()
    assert f"record {swapped} is not a regular file" in str(fifo_job.result)
    # Both slots are free: a later record is exported.
    later = write_record(records / "later.xml", title="later")
    done = job_of(send_record(client, later), env)
    assert done["destinations"]["local"]["state"] == "SUCCESS", done
    assert active_tasks(client) == []
    # A warm shutdown waits for running tasks: none is stuck, so it ends promptly.
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    worker.process.wait(timeout=30)
    assert time.monotonic() - stopping < 30


def test_enqueue_refuses_a_fifo_named_as_the_record_at_once(
    redis_server: Any, tmp_path: Path
) -> None:
    fifo = tmp_path / "record.xml"
    os.mkfifo(fifo)
    done = nx_export("enqueue", str(fifo), "--destination", "local", timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"record {fifo} is not a regular file" in done.stderr
