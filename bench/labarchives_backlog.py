"""LabArchives backlog: how close to its call rate a backlog of records drains, and what fails.

Starts its own Redis, a fake LabArchives on 127.0.0.1 and worker processes,
enqueues a backlog of records for LabArchives all at once and waits for every
job. LabArchives' spacing is scaled down (one call per 0.05 s instead of one
per second, and the longest slept wait and retry backoff with it), so the
backlog drains in under a minute and behaves as a twenty times larger one::

    .venv/bin/python -m bench.labarchives_backlog            # 300 records
    .venv/bin/python -m bench.labarchives_backlog --smoke    # 30 records

Call-rate utilisation = calls made x interval / time from the first call to the
last one plus an interval: the share of the service's call slots used while the
backlog drained (at most 1 / (1 + 5 %) with the spacing's send margin). The
gaps between calls are measured on the ``expires`` stamp each call is signed
with (milliseconds), and as the fake received them (which the benchmark's own
busy process can delay).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import RedisServer, WorkerProcess, worker_env
from worker.sandbox import FakeLabArchives

RECORD = """<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:title>backlog {number}</nx:title>
  <nx:id>backlog-{number:04d}</nx:id>
</nx:Experiment>
"""
UTILISATION_TARGET = 0.90
WAITING = "waiting for a call slot"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between calls")
    parser.add_argument("--max-wait", type=float, help="longest slept wait [5 intervals]")
    parser.add_argument("--backoff-max", type=float, help="longest retry delay [600 intervals]")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--smoke", action="store_true", help="30 records")
    options = parser.parse_args()
    records = 30 if options.smoke else options.records
    max_wait = options.max_wait if options.max_wait is not None else 5 * options.interval
    backoff_max = options.backoff_max or 600 * options.interval

    scratch = Path(tempfile.mkdtemp(prefix="nx-la-backlog-"))
    redis = RedisServer(scratch / "redis").start()
    os.environ["NX_EXPORT_BROKER_URL"] = redis.url
    from worker import enqueue_export

    fake = FakeLabArchives().start()
    env = worker_env(
        redis.url,
        None,
        NX_LABARCHIVES_URL=fake.api_url,
        NX_LABARCHIVES_ACCESS_KEY_ID=fake.akid,
        NX_LABARCHIVES_ACCESS_PASSWORD=fake.password,
        NX_LABARCHIVES_USER_ID=fake.uid,
        NX_LABARCHIVES_NOTEBOOK_ID="nb-1",
        NX_LABARCHIVES_MIN_CALL_INTERVAL=str(options.interval),
        NX_LABARCHIVES_MAX_CALL_WAIT=str(max_wait),
        NX_EXPORT_LABARCHIVES_BACKOFF_MAX_SECONDS=str(backoff_max),
        NX_RECORDS_PATH=str(scratch),  # where the records are written
    )
    workers = [
        WorkerProcess(
            env, scratch / f"worker-{n}.log", name=f"backlog{n}", concurrency=options.concurrency
        )
        for n in range(options.workers)
    ]
    try:
        for worker in workers:
            worker.start(ready_timeout=60)
        before = len(fake.requests)  # the workers' settings checks
        started = time.monotonic()
        jobs = []
        for number in range(records):
            record = scratch / f"backlog-{number:04d}.xml"
            record.write_text(RECORD.format(number=number), encoding="utf-8")
            context = {
                "xml_file_path": str(record),
                "session_identifier": f"backlog-{number:04d}",
                "instrument_pid": "FEI-Titan-TEM-635816",
                "dt_from": "2026-03-04T09:00:00",
                "dt_to": "2026-03-04T10:00:00",
            }
            jobs.append(enqueue_export(context, destinations=["labarchives"]))
        enqueued = time.monotonic() - started
        deadline = started + options.timeout
        finished, lost = [], []
        for job in jobs:
            try:
                finished.append(job.wait(timeout=max(1.0, deadline - time.monotonic())))
            except TimeoutError:
                lost.append(job)
        drained = time.monotonic() - started
    finally:
        for worker in workers:
            worker.stop()
        fake.stop()
        gc.collect()  # results still waited on unsubscribe while Redis is up
        redis.stop()

    calls = sorted(r.time for r in fake.requests[before:])
    window = calls[-1] - calls[0] + options.interval if calls else float("nan")
    utilisation = len(calls) * options.interval / window
    statuses = [job.destinations["labarchives"] for job in finished]
    waits = sum(1 for s in statuses for h in s.history if WAITING in str(h.get("error")))
    failed = sum(not job.satisfied for job in finished) + len(lost)
    pages = Counter(n["display_text"] for n in fake.nodes.values() if not n["is_folder"])
    entries = Counter((e["pid"], e["part_type"]) for e in fake.entries)
    # When each call was signed (its ``expires``, ms), free of the fake's own scheduling.
    signed = sorted(int(r.query["expires"]) / 1000 for r in fake.requests[before:])
    gaps = [b - a for a, b in itertools.pairwise(signed)]
    arrival_gaps = [b - a for a, b in itertools.pairwise(calls)]
    rows: list[tuple[str, Any, str, str]] = [
        ("records in the backlog", records, "", ""),
        (
            "settings",
            f"interval {options.interval:g} s, longest slept wait {max_wait:g} s, "
            f"backoff max {backoff_max:g} s, {options.workers} x --pool threads "
            f"-c {options.concurrency}",
            "",
            "",
        ),
        ("LabArchives calls made", len(calls), "", ""),
        ("first to last call (s)", round(window - options.interval, 2), "", ""),
        (
            "call-rate utilisation",
            f"{utilisation:.1%}",
            f">= {UTILISATION_TARGET:.0%}",
            _met(utilisation >= UTILISATION_TARGET),
        ),
        ("failed or unfinished jobs", failed, "0", _met(failed == 0)),
        ("waits for call slots (no attempt used)", waits, "", ""),
        ("most attempts a job used", max((s.attempts - _waits(s)) for s in statuses), "", ""),
        (
            "duplicate pages / entries",
            f"{sum(n - 1 for n in pages.values() if n > 1)} / "
            f"{sum(n - 1 for n in entries.values() if n > 1)}",
            "0 / 0",
            "",
        ),
        (
            "shortest gap between calls as signed / as received (s)",
            f"{min(gaps):.3f} / {min(arrival_gaps):.3f}" if gaps else "-",
            f">= {options.interval:g}",
            "",
        ),
        (
            "gaps under the interval, as signed",
            f"{sum(g < options.interval - 0.001 for g in gaps)} of {len(gaps)}",
            "",
            "",
        ),
        ("enqueue / drain wall time (s)", f"{enqueued:.1f} / {drained:.1f}", "", ""),
    ]
    print("| measurement | value | target | met |\n|---|---|---|---|")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {met} |")
    for job in [job for job in finished if not job.satisfied][:5]:
        print(job.id, job.destinations["labarchives"].error, file=sys.stderr)
    return 0 if failed == 0 else 1


def _waits(status: Any) -> int:
    return sum(1 for h in status.history if WAITING in str(h.get("error")))


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


if __name__ == "__main__":
    sys.exit(main())
