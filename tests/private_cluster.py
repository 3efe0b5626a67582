"""A private Redis with its own workers, for tests that restart, stop or starve them.

The test process talks to it as operators and LIMS processes do: through
``nx-export`` and a small enqueuing script in subprocesses, and reads job
records straight from Redis. Nothing it leaves behind reaches other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tasks.store.job_store import JobStore
from tasks.store.model import JobRecord
from tests.support import PROJECT_ROOT, RedisServer, WorkerProcess, worker_env

# Enqueues the jobs read from stdin ([{"context", "destinations", "strategy"}]) and
# prints their ids: one process for many jobs, as a LIMS would.
ENQUEUE_SCRIPT = """
import json, sys
from worker import enqueue_export
jobs = [enqueue_export(r["context"], strategy=r.get("strategy"), destinations=r["destinations"])
        for r in json.load(sys.stdin)]
print(json.dumps([job.id for job in jobs]))
"""


def enqueue_arguments(record: Path, session: str, *extra: str) -> list[str]:
    return [
        "enqueue", str(record), "--session-id", session, "--instrument", "FEI-Titan-TEM-635816",
        "--start", "2026-03-04T09:00:00", "--end", "2026-03-04T10:00:00", *extra,
    ]  # fmt: skip


class Cluster:
    """One Redis (AOF on) in ``directory``, the workers started on it, and a CLI bound to it."""

    def __init__(self, directory: Path, plugin_path: Path | None, **env: str) -> None:
        self.directory = directory
        self.redis = RedisServer(directory / "redis").start()
        self.env = worker_env(self.redis.url, plugin_path, **env)
        self.workers: list[WorkerProcess] = []

    def worker(
        self, name: str, pool: str = "threads", concurrency: int = 8, **env: str
    ) -> WorkerProcess:
        process = WorkerProcess(
            {**self.env, **env}, self.directory / f"{name}.log", name=name, pool=pool,
            concurrency=concurrency,
        )  # fmt: skip
        self.workers.append(process)
        return process.start(ready_timeout=60)

    def cli(self, *arguments: str, timeout: float = 120, **env: str) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *arguments], capture_output=True, text=True,
            env={**self.env, **env}, cwd=PROJECT_ROOT, timeout=timeout,
        )  # fmt: skip

    def popen_cli(self, *arguments: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *arguments], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**self.env, **env}, cwd=PROJECT_ROOT,
        )  # fmt: skip

    def enqueue(self, requests: list[dict[str, Any]], **env: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", ENQUEUE_SCRIPT], input=json.dumps(requests),
            capture_output=True, text=True, env={**self.env, **env}, cwd=PROJECT_ROOT, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))

    def store(self) -> JobStore:
        return JobStore(self.redis.client(), 3600)

    def record(self, job_id: str) -> JobRecord:
        record = self.store().load(job_id)
        assert record is not None, f"job {job_id} is gone"
        return record

    def wait_finished(self, job_ids: list[str], timeout: float) -> list[str]:
        """Wait for the jobs to finish; return those still unfinished after ``timeout``."""
        deadline = time.monotonic() + timeout
        pending = list(job_ids)
        while pending and time.monotonic() < deadline:
            pending = [job_id for job_id in pending if self.record(job_id).job.finished_at is None]
            time.sleep(0.2)
        return pending

    def close(self) -> None:
        for process in self.workers:
            process.stop()
        self.redis.stop()
