"""Plain Celery for ``bench.failover``: a chord of three no-op tasks, the worker's Redis settings.

Run as ``celery -A bench.failover_bare worker``; ``BENCH_BROKER_URL``,
``BENCH_MASTER_NAME``, ``BENCH_SENTINEL_PASSWORD`` and ``BENCH_LOG`` (a file each task
and callback appends a line to) come from the environment.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery

URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
LOG = os.environ.get("BENCH_LOG", os.devnull)
# The same connection settings as worker.app's (without its job store, leases and sweep).
CONNECTION = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "socket_keepalive": True,
              "health_check_interval": 10}  # fmt: skip
SENTINEL = {
    "master_name": os.environ.get("BENCH_MASTER_NAME"),
    "sentinel_kwargs": {"socket_timeout": 10.0, "socket_connect_timeout": 5.0,
                        "password": os.environ.get("BENCH_SENTINEL_PASSWORD")},
}  # fmt: skip

app = Celery("bench_failover_bare", broker=URL, backend=URL)
app.conf.update(
    broker_transport_options={**CONNECTION, **SENTINEL, "visibility_timeout": 3600},
    result_backend_transport_options=SENTINEL,
    redis_socket_timeout=10.0, redis_socket_connect_timeout=5.0, redis_socket_keepalive=True,
    redis_backend_health_check_interval=10, result_backend_always_retry=True,
    result_backend_max_retries=30, result_backend_base_sleep_between_retries_ms=100,
    result_backend_max_sleep_between_retries_ms=2000, task_acks_late=True,
    task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    task_publish_retry_policy={"max_retries": 15, "interval_start": 0.2,
                               "interval_step": 0.5, "interval_max": 2.0},
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
)  # fmt: skip


def _log(**line: Any) -> None:
    with open(LOG, "a", encoding="utf-8") as stream:
        stream.write(json.dumps({**line, "at": time.time()}) + "\n")


@app.task(name="bare.noop")
def noop(job: str, part: int) -> int:
    time.sleep(0.3)  # as long as the failover test's destinations take
    _log(kind="part", job=job, part=part)
    return part


@app.task(name="bare.done")
def done(results: list[int], job: str) -> None:
    _log(kind="done", job=job)
