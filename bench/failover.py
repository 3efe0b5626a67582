"""The same Sentinel failover under plain Celery and under the export worker, side by side.

Each side gets its own primary, replica and three Sentinels on 127.0.0.1, one worker
(threads, 8) and 20 jobs of three parts (0.3 s each) in flight; the primary is
SIGKILLed one second in and started again, then (a second run) paused 4 s
(SIGSTOP, SIGCONT). Reported per side and failover: jobs lost or stuck (not
finished within the wait), duplicate part runs, and seconds from the failover to
the last job finished::

    .venv/bin/python -m bench.failover           # 20 jobs, wait up to 60 s
    .venv/bin/python -m bench.failover --smoke   # 5 jobs, wait up to 30 s
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sentinel_cluster import MASTER_NAME, SENTINEL_PASSWORD, SentinelCluster
from tests.support import PROJECT_ROOT, read_log, worker_env

SEND = """
import json, sys
from celery import chord
from bench.failover_bare import done, noop
for job in json.load(sys.stdin):
    chord([noop.s(job, part) for part in range(3)])(done.s(job))
"""


def bare(directory: Path, jobs: int, wait: float, failover: Any) -> dict[str, Any]:
    log = directory / "bare.jsonl"
    cluster = SentinelCluster(directory / "redis")
    try:
        env = worker_env(cluster.url, None, BENCH_BROKER_URL=cluster.url, BENCH_LOG=str(log),
                         BENCH_MASTER_NAME=MASTER_NAME,
                         BENCH_SENTINEL_PASSWORD=SENTINEL_PASSWORD)  # fmt: skip
        command = [sys.executable, "-m", "celery", "-A", "bench.failover_bare", "worker",
                   "--pool", "threads", "-c", "8", "--loglevel", "INFO"]  # fmt: skip
        with (directory / "bare-worker.log").open("ab") as output:
            worker = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=output,
                                      stderr=subprocess.STDOUT)  # fmt: skip
        try:
            names = [f"bare-{n}" for n in range(jobs)]
            subprocess.run([sys.executable, "-c", SEND], input=json.dumps(names), text=True,
                           env=env, cwd=PROJECT_ROOT, check=True, timeout=60)  # fmt: skip
            time.sleep(1.0)
            killed = time.monotonic()
            failover(cluster)
            deadline = killed + wait
            while time.monotonic() < deadline:
                finished = {line["job"] for line in read_log(log) if line["kind"] == "done"}
                if len(finished) == jobs:
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - killed
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        lines = read_log(log)
        finished = {line["job"] for line in lines if line["kind"] == "done"}
        parts = Counter((line["job"], line["part"]) for line in lines if line["kind"] == "part")
        return {"jobs": jobs, "lost_or_stuck": jobs - len(finished),
                "duplicates": sum(n - 1 for n in parts.values()),
                "seconds": round(seconds, 1) if len(finished) == jobs else None}
    finally:
        cluster.close()


def ours(directory: Path, jobs: int, wait: float, failover: Any) -> dict[str, Any]:
    from tests import test_failover

    test_failover.JOBS = jobs
    started: list[float] = []

    def timed(cluster: SentinelCluster) -> float:
        started.append(time.monotonic())
        return float(failover(cluster))

    outcome = test_failover.run_through_a_failover(directory, timed, wait=wait)
    finished = len(outcome["jobs"]) - len(outcome["unfinished"])
    return {"jobs": jobs, "lost_or_stuck": jobs - finished,
            "unsatisfied": sum(1 for ok in outcome["satisfied"].values() if not ok),
            "duplicates": sum(n - 1 for n in outcome["exports"].values()),
            "seconds": round(outcome["finished_at"] - started[0], 1)
            if not outcome["unfinished"] else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="5 jobs, wait up to 30 s")
    options = parser.parse_args()
    jobs, wait = (5, 30.0) if options.smoke else (20, 60.0)
    with tempfile.TemporaryDirectory(prefix="nx-bench-failover-") as temporary:
        directory = Path(temporary)
        from tests.test_failover import kill_the_primary, pause_the_primary

        rows = {}
        for what, failover in (("killed", kill_the_primary), ("paused", pause_the_primary)):
            rows[f"plain Celery (chord of 3 no-ops), primary {what}"] = bare(
                directory / f"bare-{what}", jobs, wait, failover)
            rows[f"export worker (3 destinations), primary {what}"] = ours(
                directory / f"ours-{what}", jobs, wait, failover)  # fmt: skip
    print("| run | jobs | lost or stuck | duplicates | failover to all finished (s) |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        seconds = "never" if row["seconds"] is None else f"{row['seconds']}"
        print(f"| {name} | {row['jobs']} | {row['lost_or_stuck']} | {row['duplicates']} "
              f"| {seconds} |")  # fmt: skip


if __name__ == "__main__":
    main()
