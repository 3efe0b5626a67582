"""Soak: many jobs against flaky services while worker processes are killed.

Not part of CI. Starts its own Redis, fake CDCS / eLabFTW / LabArchives on
127.0.0.1 and prefork workers; a share of the services' answers are 503s or
connections cut right after the record was created; workers are SIGKILLed and
restarted during the run. Prints jobs, attempts, retries, jobs not satisfied,
jobs lost and duplicate records per service::

    .venv/bin/python -m bench.soak --jobs 200 --failure-rate 0.3 --kills 2
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from tests.fakes import FakeCDCS, FakeELabFTW, FakeLabArchives
from tests.fakes.server import Failure
from tests.fakes.settings import fake_service_settings
from tests.support import RedisServer, WorkerProcess, worker_env

RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>soak {number}</nx:title>
</nx:Experiment>
"""
CREATE_CALLS = ("POST", "insert_node", "add_entry", "add_attachment")


class Chaos:
    """Makes a fake answer 503 or drop the connection after creating, at random."""

    def __init__(self, fake: Any, rate: float, rng: random.Random) -> None:
        self.fake, self.rate, self.rng = fake, rate, rng
        self.injected: Counter[str] = Counter()
        original = fake._take_failure

        def take(method: str, path: str) -> Failure | None:
            planned = original(method, path)
            if planned is not None or self.rng.random() >= self.rate:
                return planned
            if any(call in f"{method} {path}" for call in CREATE_CALLS) and self.rng.random() < 0.3:
                self.injected["dropped after create"] += 1
                return Failure("drop", None)
            self.injected["503"] += 1
            return Failure("status", None, 503, "Service Unavailable", "text/plain", {})

        fake._take_failure = take
        # Random latency on every create call.
        fake.create_delay = lambda: fake._stopping.wait(self.rng.uniform(0.0, 0.2))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--failure-rate", type=float, default=0.3)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    scratch = Path(tempfile.mkdtemp(prefix="nx-soak-"))
    redis = RedisServer(scratch / "redis").start()
    os.environ["NX_EXPORT_BROKER_URL"] = redis.url
    from worker import enqueue_export

    cdcs, elab, labarchives = FakeCDCS().start(), FakeELabFTW().start(), FakeLabArchives().start()
    chaos = [Chaos(fake, options.failure_rate, rng) for fake in (cdcs, elab, labarchives)]
    env = worker_env(
        redis.url,
        None,
        **fake_service_settings(cdcs, elab, labarchives),
        # The fake has no terms of use: without this the soak would take an hour.
        NX_LABARCHIVES_MIN_CALL_INTERVAL="0",
        # 30% of *every HTTP call* failing makes a 4-call export fail 3 times in 4:
        # a facility with such a service raises its attempts the same way.
        NX_EXPORT_VISIBILITY_TIMEOUT="10", NX_EXPORT_BACKOFF_SECONDS="0.2",
        NX_EXPORT_MAX_ATTEMPTS="25",
    )  # fmt: skip
    workers = [
        WorkerProcess(
            env, scratch / f"worker-{n}.log", name=f"soak{n}", pool="prefork", concurrency=4
        )
        for n in range(options.workers)
    ]
    started = time.monotonic()
    try:
        for worker in workers:
            worker.start(ready_timeout=60)
        jobs = []
        for number in range(options.jobs):
            record = scratch / f"soak-{number:04d}.xml"
            record.write_text(RECORD.format(number=number), encoding="utf-8")
            context = {
                "xml_file_path": str(record),
                "session_identifier": f"soak-{number:04d}",
                "instrument_pid": "FEI-Titan-TEM-635816",
                "dt_from": "2026-03-04T09:00:00",
                "dt_to": "2026-03-04T10:00:00",
            }
            jobs.append(enqueue_export(context, destinations=["cdcs", "elabftw", "labarchives"]))
        kills = 0

        def killer() -> None:
            nonlocal kills
            for _ in range(options.kills):
                time.sleep(rng.uniform(2, 6))
                victim = rng.choice(workers)
                victim.kill()
                kills += 1
                victim.start(ready_timeout=60)

        chaos_monkey = threading.Thread(target=killer, daemon=True)
        chaos_monkey.start()
        deadline = time.monotonic() + options.timeout
        finished, lost = [], []
        for job in jobs:
            try:
                finished.append(job.wait(timeout=max(1.0, deadline - time.monotonic())))
            except TimeoutError:
                lost.append(job.refresh())
        chaos_monkey.join(timeout=120)
    finally:
        for worker in workers:
            worker.stop()
        for fake in (cdcs, elab, labarchives):
            fake.stop()
        gc.collect()  # results still waited on unsubscribe while Redis is up
        redis.stop()
    elapsed = time.monotonic() - started
    attempts = sum(s.attempts for job in finished for s in job.destinations.values())
    retries = sum(
        1
        for job in finished
        for s in job.destinations.values()
        for h in s.history
        if h["outcome"] == "retry"
    )
    titles = Counter(record["title"] for record in cdcs.records.values())
    tags = Counter(
        t for e in elab.experiments.values() for t in e["tags"] if t.startswith("nx-session:")
    )
    pages = Counter(n["display_text"] for n in labarchives.nodes.values() if not n["is_folder"])
    entries = Counter((e["pid"], e["part_type"]) for e in labarchives.entries)
    rows = [
        ("jobs", options.jobs),
        ("finished", len(finished)),
        ("satisfied", sum(job.satisfied for job in finished)),
        ("not satisfied", sum(not job.satisfied for job in finished)),
        ("lost (not finished in time)", len(lost)),
        ("destination attempts", attempts),
        ("retries", retries),
        ("worker SIGKILLs", kills),
        ("faults injected", dict(sum((c.injected for c in chaos), Counter()))),
        ("duplicate CDCS records", sum(n - 1 for n in titles.values() if n > 1)),
        ("duplicate eLabFTW experiments", sum(n - 1 for n in tags.values() if n > 1)),
        ("duplicate LabArchives pages", sum(n - 1 for n in pages.values() if n > 1)),
        ("duplicate LabArchives entries", sum(n - 1 for n in entries.values() if n > 1)),
        ("wall time (s)", round(elapsed, 1)),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    failures = [job for job in finished if not job.satisfied]
    for job in lost[:5]:
        print(
            "not finished:",
            job.id,
            {n: (s.state, s.attempts) for n, s in job.destinations.items()},
            file=sys.stderr,
        )
    for job in failures[:5]:
        print(job.id, {n: (s.state, s.error) for n, s in job.destinations.items()}, file=sys.stderr)
    return 0 if not lost and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
