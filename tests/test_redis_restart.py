"""Redis restarts in the middle of a run: queued jobs complete, everyone reconnects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import RECORD
from tests.support import PROJECT_ROOT, RedisServer, WorkerProcess, worker_env


def cli(env: dict[str, str], *arguments: str, timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *arguments],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=timeout,
    )  # fmt: skip


def enqueue_arguments(record: Path, session: str) -> list[str]:
    return [
        "enqueue", str(record), "--session-id", session, "--instrument", "FEI-Titan-TEM-635816",
        "--start", "2026-03-04T09:00:00", "--end", "2026-03-04T10:00:00",
        "--destination", "local", "--destination", "alpha",
    ]  # fmt: skip


def test_jobs_survive_a_redis_restart(tmp_path: Path, plugin_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    archive = tmp_path / "archive"
    env = worker_env(
        redis.url,
        plugin_path,
        NX_EXPORT_LOCAL_PATH=str(archive),
        NX_EXPORT_VISIBILITY_TIMEOUT="6",
        NX_TEST_ALPHA_BEHAVIOUR="sleep:0.5",
    )
    record = tmp_path / "record.xml"
    record.write_text(RECORD.format(title="restart"), encoding="utf-8")
    worker = WorkerProcess(env, tmp_path / "worker.log", name="restart", concurrency=2)
    waiting = None
    try:
        worker.start(ready_timeout=60)
        job_ids = [
            json.loads(cli(env, *enqueue_arguments(record, f"restart-{n}"), "--json").stdout)[
                "job_id"
            ]
            for n in range(6)
        ]
        waiting = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *enqueue_arguments(record, "restart-wait"),
             "--wait", "--json", "--timeout", "90"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT,
        )  # fmt: skip
        # The worker is busy with the first jobs; the rest wait in Redis.
        time.sleep(1.0)
        redis.stop()
        time.sleep(1.0)
        redis.start()
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        assert json.loads(out)["satisfied"] is True
        for job_id in job_ids:
            status = cli(env, "status", job_id, "--watch", "--json", timeout=120)
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["satisfied"] is True
    finally:
        if waiting and waiting.poll() is None:
            waiting.kill()
        worker.stop()
        redis.stop()
    # The restart really happened under the running worker.
    assert "Connection to broker lost" in worker.log()
    archived = sorted(path.stem for path in archive.rglob("*.xml"))
    assert archived == sorted([f"restart-{n}" for n in range(6)] + ["restart-wait"])
