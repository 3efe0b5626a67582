"""Soak: many jobs against flaky services while workers die and Redis restarts.

Not part of CI. Starts its own Redis, fake CDCS / eLabFTW / LabArchives on
127.0.0.1 and prefork workers. A share of the services' answers are 503s or
connections cut right after the record was created; some CDCS uploads take
longer than the visibility timeout; during the run workers are SIGKILLed and
restarted, workers are paused (SIGSTOP) longer than their lease and resumed,
Redis is restarted on the same port and data, one worker is stopped for good,
and some finished jobs are retried twice at the same moment. Prints jobs,
attempts, retries, jobs not satisfied, jobs lost, jobs still unfinished past
their deadline, jobs whose stored verdict or index disagrees with their
outcomes, and duplicate records per service::

    .venv/bin/python -m bench.soak --jobs 200 --failure-rate 0.3 --kills 2 \\
        --redis-restarts 2 --double-retries 5 --slow-exports 5 --pauses 2
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from tests.support import RedisServer, WorkerProcess, worker_env
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives
from worker.sandbox.server import Failure
from worker.sandbox.settings import fake_service_settings

RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>soak {number}</nx:title>
</nx:Experiment>
"""
CREATE_CALLS = ("POST", "insert_node", "add_entry", "add_attachment")
DESTINATIONS = ["cdcs", "elabftw", "labarchives"]
VISIBILITY_TIMEOUT = 10
HEARTBEAT = 2
DEADLINE = 240
LEASE = 15
# A paused worker sleeps past its lease (and the visibility timeout) before it resumes.
PAUSE = LEASE + 5


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


def slow_uploads(cdcs: FakeCDCS, titles: set[str], seconds: float) -> None:
    """CDCS takes ``seconds`` (longer than the visibility timeout) to create these records."""
    original = cdcs._create_record

    def create(request: Any) -> Any:
        body = request.get_json(silent=True)
        if isinstance(body, dict) and body.get("title") in titles:
            cdcs._stopping.wait(seconds)
        return original(request)

    cdcs._create_record = create  # type: ignore[method-assign]


class Soak:
    """The run's processes, its disturbances and what they did."""

    def __init__(self, options: argparse.Namespace, scratch: Path) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.redis = RedisServer(scratch / "redis").start()
        self.scratch = scratch
        self.events: Counter[str] = Counter()
        self.retry_outcomes: list[list[str]] = []
        self.retried: list[str] = []

    def workers(self, env: dict[str, str]) -> list[WorkerProcess]:
        return [
            WorkerProcess(env, self.scratch / f"worker-{n}.log", name=f"soak{n}", pool="prefork",
                          concurrency=4)
            for n in range(self.options.workers)
        ]  # fmt: skip

    def disturb(self, workers: list[WorkerProcess]) -> None:
        """Kills, Redis restarts and the worker stopped for good, a few seconds apart."""
        plan = ["kill"] * self.options.kills + ["redis"] * self.options.redis_restarts
        plan += ["pause"] * self.options.pauses
        plan += ["stop for good"] if len(workers) > 1 else []
        self.rng.shuffle(plan)
        restartable = workers[:-1] if len(workers) > 1 else workers
        for event in plan:
            time.sleep(self.rng.uniform(2, 6))
            if event == "kill":
                victim = self.rng.choice(restartable)
                victim.kill()
                victim.start(ready_timeout=120)
            elif event == "pause":
                paused = self.rng.choice(restartable)
                paused.signal_tree(signal.SIGSTOP)
                time.sleep(PAUSE)
                paused.signal_tree(signal.SIGCONT)
            elif event == "redis":
                self.redis.stop()
                time.sleep(3)
                self.redis.start()
            else:
                workers[-1].stop()
            self.events[event] += 1

    def double_retries(self, app: Any, job_ids: list[str]) -> None:
        """Retry finished jobs twice at the same moment: one retry each must be accepted."""
        from tasks.jobs import retry_failed

        for job_id in job_ids:
            if self.finished(app, job_id, wait=self.options.timeout) is None:
                continue
            start = threading.Barrier(2)
            outcomes: list[str] = []

            def retry(job_id: str = job_id, start: Any = start, out: list[str] = outcomes) -> None:
                start.wait()
                try:
                    retry_failed(job_id, destinations=["cdcs"], app=app)
                    out.append("accepted")
                except Exception as error:
                    out.append(f"{type(error).__name__}: {error}")

            threads = [threading.Thread(target=retry) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            self.retry_outcomes.append(outcomes)
            self.retried.append(job_id)

    def finished(self, app: Any, job_id: str, wait: float) -> Any:
        """The job once finished, polling its record (a Redis restart may be under way)."""
        from tasks.jobs import JobNotFoundError, get_job

        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                job = get_job(job_id, app=app)
                if job.finished:
                    return job
            except (redis.RedisError, JobNotFoundError):  # Redis restarting, or the job is gone
                pass
            time.sleep(0.5)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--failure-rate", type=float, default=0.3)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--double-retries", type=int, default=5)
    parser.add_argument("--slow-exports", type=int, default=5)
    parser.add_argument("--pauses", type=int, default=2,
                        help=f"workers paused (SIGSTOP) {PAUSE} s, past their {LEASE} s lease")
    parser.add_argument("--workers", type=int, default=3, help="the last one is stopped for good")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--defaults", action="store_true",
                        help="the default retry and breaker settings, not the soak's raised ones")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="nx-soak-"))
    soak = Soak(options, scratch)
    os.environ["NX_EXPORT_BROKER_URL"] = soak.redis.url
    os.environ["NX_EXPORT_JOB_DEADLINE"] = str(DEADLINE)
    from tasks.store.index import FINISHED_FAILED, FINISHED_OK, names
    from tasks.store.job_store import JobStore
    from tasks.store.keys import DEADLINES, state_key
    from worker import enqueue_export
    from worker.app import app

    cdcs, elab, labarchives = FakeCDCS().start(), FakeELabFTW().start(), FakeLabArchives().start()
    chaos = [Chaos(fake, options.failure_rate, soak.rng) for fake in (cdcs, elab, labarchives)]
    slow = {f"soak-{n:04d}" for n in soak.rng.sample(range(options.jobs), options.slow_exports)}
    slow_uploads(cdcs, slow, VISIBILITY_TIMEOUT + 4)
    services = fake_service_settings(cdcs, elab, labarchives)
    # The slow uploads answer after 14 s: longer than the visibility timeout, not the read's.
    services["NX_HTTP_READ_TIMEOUT"] = "30"
    env = worker_env(
        soak.redis.url,
        None,
        **services,
        # The fake has no terms of use: without this the soak would take an hour.
        NX_LABARCHIVES_MIN_CALL_INTERVAL="0",
        # 30% of *every HTTP call* failing makes a 4-call export fail 3 times in 4:
        # a facility with such a service raises its attempts the same way (--defaults: none
        # are raised; a transient error is retried until the deadline).
        NX_EXPORT_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT), NX_EXPORT_LEASE_SECONDS=str(LEASE),
        **({} if options.defaults else {"NX_EXPORT_BACKOFF_SECONDS": "0.2",
                                        "NX_EXPORT_MAX_ATTEMPTS": "25"}),
        # A killed worker's upload may be answered until then; its redelivery looks up after.
        NX_HTTP_TOTAL_TIMEOUT=str(VISIBILITY_TIMEOUT + 10),
        NX_EXPORT_HEARTBEAT_SECONDS=str(HEARTBEAT), NX_EXPORT_JOB_DEADLINE=str(DEADLINE),
        NX_RECORDS_PATH=str(scratch),  # where the records are written
    )  # fmt: skip
    workers = soak.workers(env)
    started = time.monotonic()
    try:
        for worker in workers:
            worker.start(ready_timeout=60)
        job_ids = []
        for number in range(options.jobs):
            path = scratch / f"soak-{number:04d}.xml"
            path.write_text(RECORD.format(number=number), encoding="utf-8")
            context = {
                "xml_file_path": str(path),
                "session_identifier": f"soak-{number:04d}",
                "instrument_pid": "FEI-Titan-TEM-635816",
                "dt_from": "2026-03-04T09:00:00",
                "dt_to": "2026-03-04T10:00:00",
            }
            job_ids.append(enqueue_export(context, destinations=DESTINATIONS).id)
        disturbances = threading.Thread(target=soak.disturb, args=(workers,), daemon=True)
        retries = threading.Thread(
            target=soak.double_retries, args=(app, job_ids[: options.double_retries]), daemon=True
        )
        disturbances.start()
        retries.start()
        deadline = time.monotonic() + options.timeout
        finished = {}
        for job_id in job_ids:
            job = soak.finished(app, job_id, wait=max(1.0, deadline - time.monotonic()))
            if job is not None:
                finished[job_id] = job
        disturbances.join(timeout=300)
        retries.join(timeout=max(1.0, deadline - time.monotonic()))
        for job_id in soak.retried:  # their second run
            job = soak.finished(app, job_id, wait=max(1.0, deadline - time.monotonic()))
            if job is not None:
                finished[job_id] = job
        store = JobStore(soak.redis.client(), 3600)
        records = {job_id: store.load(job_id) for job_id in job_ids}
        deadlines: dict[str, Any] = {j: store.client.zscore(DEADLINES, j) for j in job_ids}
        indexed = {s: set(names(store.client, state_key(s), 3600)) for s in (FINISHED_OK,
                                                                           FINISHED_FAILED)}
    finally:
        for worker in workers:
            worker.stop()
        for fake in (cdcs, elab, labarchives):
            fake.stop()
        gc.collect()  # results still waited on unsubscribe while Redis is up
        soak.redis.stop()
    elapsed = time.monotonic() - started
    now = time.time()
    lost = [job_id for job_id in job_ids if records[job_id] is None or job_id not in finished]
    # Unfinished although their run's deadline passed more than a sweep or two ago.
    stuck = [
        job_id
        for job_id, record in records.items()
        if record is not None
        and record.job.finished_at is None
        and (deadlines[job_id] or now) + 3 * HEARTBEAT < now
    ]
    jobs = list(finished.values())
    # The stored verdict and the index say what the outcomes say (a run told again included).
    disagree = [
        job.id for job in jobs
        if (stored := records[job.id]) is None or stored.job.satisfied is not job.satisfied
        or job.id not in indexed[FINISHED_OK if job.satisfied else FINISHED_FAILED]
    ]  # fmt: skip
    attempts = sum(s.attempts for job in jobs for s in job.destinations.values())
    retried = sum(
        1 for job in jobs for s in job.destinations.values() for h in s.history
        if h["outcome"] == "retry"
    )  # fmt: skip
    ended_by_deadline = sum(
        1 for job in jobs
        if any("within" in (s.error or "") or "still running after" in (s.error or "")
               for s in job.destinations.values())
    )  # fmt: skip
    titles = Counter(record["title"] for record in cdcs.records.values())
    tags = Counter(
        t for e in elab.experiments.values() for t in e["tags"] if t.startswith("nx-session:")
    )
    pages = Counter(n["display_text"] for n in labarchives.nodes.values() if not n["is_folder"])
    entries = Counter((e["pid"], e["part_type"]) for e in labarchives.entries)
    accepted = [outcome.count("accepted") for outcome in soak.retry_outcomes]
    rows = [
        ("jobs", options.jobs),
        ("finished", len(finished)),
        ("satisfied", sum(job.satisfied for job in jobs)),
        ("not satisfied", sum(not job.satisfied for job in jobs)),
        ("ended by their deadline", ended_by_deadline),
        ("lost (gone, or not finished in time)", len(lost)),
        ("unfinished past their deadline", len(stuck)),
        ("verdict or index disagreeing with the outcomes", len(disagree)),
        ("destination attempts", attempts),
        ("retries", retried),
        ("worker SIGKILLs", soak.events["kill"]),
        ("workers paused past their lease", soak.events["pause"]),
        ("Redis restarts", soak.events["redis"]),
        ("workers stopped for good", soak.events["stop for good"]),
        ("exports slower than the visibility timeout", len(slow)),
        ("double retries: one accepted / pairs", f"{accepted.count(1)} / {len(accepted)}"),
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
    for job_id in (lost + stuck)[:5]:
        stored = records[job_id]
        kept = stored.destinations if stored else {}
        states = {n: (e.state, e.attempts) for n, e in kept.items()}
        print("lost or stuck:", job_id, states, file=sys.stderr)
    for outcome in soak.retry_outcomes:
        if outcome.count("accepted") != 1:
            print("double retry:", outcome, file=sys.stderr)
    failures = [job for job in jobs if not job.satisfied]
    for job in failures[:5]:
        print(job.id, {n: (s.state, s.error) for n, s in job.destinations.items()}, file=sys.stderr)
    duplicates = any(n > 1 for counter in (titles, tags, pages, entries) for n in counter.values())
    bad_retries = any(n != 1 for n in accepted)
    for job_id in disagree[:5]:
        print("verdict disagrees:", job_id, file=sys.stderr)
    return 0 if not (lost or stuck or failures or duplicates or bad_retries or disagree) else 1


if __name__ == "__main__":
    sys.exit(main())
