"""Benchmark finding jobs with the indexes against loading every job, and their memory.

Writes finished jobs (10% not satisfied) straight into a private redis-server on
127.0.0.1 with pipelines, through the job store's own index code, then times the
first page of failed jobs through the dashboard's JSON API and its HTML page
(a real ``nx-export dashboard`` process) against the whole scan
(``list_jobs(failed_only=True)``), and reads Redis' memory per job::

    .venv/bin/python -m bench.dashboard            # 100,000 jobs
    .venv/bin/python -m bench.dashboard --smoke    # 2,000 jobs, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import PROJECT_ROOT, RedisServer, free_port, worker_env

AUTH = ("bench", "bench-password")
DESTINATIONS = ("cdcs", "elabftw", "labarchives")
RETENTION = 30 * 24 * 3600
TARGET_MS = 50.0


def job_fields(job_id: str, index: int, created: float, failed: bool) -> dict[str, str]:
    """A finished job as the job store writes it: three destinations, one attempt each."""
    session = f"2026-03-04_titan_{index:06d}"
    at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(created))
    context: dict[str, Any] = {
        "xml_file_path": f"/nexus/records/{session}.xml", "session_identifier": session,
        "instrument_pid": f"FEI-Titan-TEM-{index % 7}", "dt_from": "2026-03-04T09:00:00-05:00",
        "dt_to": "2026-03-04T13:30:00-05:00", "user": "ada", "metadata": {},
        "activities": [], "reservation_event": None,
    }  # fmt: skip
    job = {
        "strategy": "all", "destinations": list(DESTINATIONS), "context": context,
        "summary": f"session={session} instrument=FEI-Titan-TEM record={session}.xml",
        "finish_task_id": str(uuid.uuid4()), "runs": 1, "id": job_id, "created_at": at,
        "finished_at": at, "satisfied": not failed,
    }  # fmt: skip
    fields = {"job": json.dumps(job)}
    for name in DESTINATIONS:
        ok = not (failed and name == "labarchives")
        result = {
            "success": ok, "destination_name": name, "timestamp": at, "metadata": {},
            "record_id": f"{name}-{index}" if ok else None,
            "record_url": f"https://{name}.example.org/records/{index}" if ok else None,
            "error_message": None if ok else "labarchives: 401 refused credentials",
        }  # fmt: skip
        fields[f"dest:{name}"] = json.dumps({
            "state": "SUCCESS" if ok else "FAILURE", "attempts": 1,
            "task_id": str(uuid.uuid4()), "started_at": at, "finished_at": at,
            "result": result, "error": result["error_message"],
            "history": [{"attempt": 1, "at": at, "outcome": "success" if ok else "failure",
                         "error": result["error_message"]}],
        })  # fmt: skip
    return fields


def write_jobs(client: Any, count: int) -> tuple[float, float]:
    """Write ``count`` jobs; return Redis' bytes per job for the records and for the indexes."""
    from tasks.store import index as job_index
    from tasks.store.keys import JOB_INDEX, job_key

    now = time.time()
    jobs = [(str(uuid.uuid4()), i, now - (count - i) * 0.5, i % 10 == 0) for i in range(count)]
    before = used_memory(client)
    for start in range(0, count, 1000):
        with client.pipeline(transaction=False) as pipe:
            for job_id, index, created, failed in jobs[start : start + 1000]:
                pipe.hset(job_key(job_id), mapping=job_fields(job_id, index, created, failed))
                pipe.expire(job_key(job_id), RETENTION)
                pipe.zadd(JOB_INDEX, {job_id: created})
            pipe.execute()
    records = used_memory(client)
    for start in range(0, count, 1000):
        with client.pipeline(transaction=False) as pipe:
            for job_id, index, created, failed in jobs[start : start + 1000]:
                context = {"instrument_pid": f"FEI-Titan-TEM-{index % 7}",
                           "session_identifier": f"2026-03-04_titan_{index:06d}"}  # fmt: skip
                job_index.on_create(pipe, job_id, context, DESTINATIONS, created, RETENTION)
                state = job_index.FINISHED_FAILED if failed else job_index.FINISHED_OK
                job_index.queue_state_move(pipe, job_id, state, now, RETENTION)
                if failed:
                    key = job_index.destination_failure_key("labarchives")
                    job_index.queue_move(pipe, job_id, key, (), now, RETENTION)
            pipe.execute()
    indexed = used_memory(client)
    return (records - before) / count, (indexed - records) / count


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def timed(call: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def start_dashboard(redis: RedisServer, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = worker_env(redis.url, None, NX_EXPORT_DASHBOARD_AUTH=":".join(AUTH))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "dashboard", "--port", str(port)],
            env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dashboard exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("dashboard did not start")


def run(count: int, repeats: int, scan_repeats: int) -> list[list[str]]:
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as root:
        redis = RedisServer(Path(root) / "redis").start()
        os.environ["NX_EXPORT_BROKER_URL"] = redis.url
        process = None
        try:
            record_bytes, index_bytes = write_jobs(redis.client(), count)
            from tasks.jobs import list_jobs
            from worker.app import app

            process, url = start_dashboard(redis, Path(root) / "dashboard.log")
            with httpx.Client(base_url=url, auth=AUTH, timeout=120) as http:

                def get(path: str) -> None:
                    answer = http.get(path)
                    answer.raise_for_status()

                first = http.get("/api/jobs?state=failed").json()
                assert len(first["jobs"]) == 50 and not first["jobs"][0]["satisfied"], first
                api = timed(lambda: get("/api/jobs?state=failed"), repeats)
                page = timed(lambda: get("/?state=failed"), repeats)
                one = timed(lambda: get("/api/jobs?state=failed&destination=labarchives"), repeats)
                metrics = timed(lambda: get("/metrics"), repeats)

            def scan() -> None:
                found = list_jobs(failed_only=True, app=app)
                newest = found[-50:]  # the scan finds jobs oldest first
                assert len(found) == count // 10 and len(newest) == 50

            whole = timed(scan, scan_repeats, warmup=0)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
            redis.stop()

    def row(name: str, ours: list[float], base: list[float] | None, q: float, target: bool) -> None:
        mine = percentile(ours, q)
        other = percentile(base, q) if base else None
        rows.append([
            name, "ms", f"{mine:,.1f}", f"{other:,.1f}" if other else "",
            "whole scan (list_jobs)" if other else "", f"{mine / other:.4f}" if other else "",
            f"≤ {TARGET_MS:.0f} ms" if target else "",
            ("yes" if mine <= TARGET_MS else "no") if target else "",
        ])  # fmt: skip

    jobs = f"{count:,} finished jobs, 10% failed"
    row(f"first page of failed jobs, /api/jobs, p50 ({jobs})", api, whole, 0.5, True)
    row("… /api/jobs, p95", api, whole, 0.95, False)
    row("first page of failed jobs, dashboard page /?state=failed, p50", page, whole, 0.5, True)
    row("… dashboard HTML page, p95", page, whole, 0.95, False)
    row("first page of one destination's failures, /api/jobs, p50", one, None, 0.5, True)
    row("/metrics scrape, p50", metrics, None, 0.5, False)
    rows.append(["Redis memory per job: job record", "bytes", f"{record_bytes:,.0f}",
                 "", "", "", "", ""])  # fmt: skip
    rows.append(["Redis memory per job: indexes", "bytes", f"{index_bytes:,.0f}", "", "",
                 f"{index_bytes / record_bytes:.2f} of the record", "", ""])  # fmt: skip
    return rows


def markdown(rows: list[list[str]]) -> str:
    header = ["measurement", "unit", "ours", "baseline", "baseline is", "ours / baseline",
              "target", "met"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|---|---:|---|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2,000 jobs, few repeats (CI)")
    parser.add_argument("--jobs", type=int, default=100_000)
    arguments = parser.parse_args()
    count = 2_000 if arguments.smoke else arguments.jobs
    repeats, scan_repeats = (10, 2) if arguments.smoke else (100, 5)
    started = time.monotonic()
    rows = run(count, repeats, scan_repeats)
    print(markdown(rows))
    print(f"\n{count:,} jobs; HTTP rows {repeats} requests each, whole scan {scan_repeats} runs; "
          f"{time.monotonic() - started:.0f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
