"""One destination down for a while, then back: the breaker beside a fixed number of attempts.

Not part of CI. For each policy, starts its own Redis, fake CDCS and eLabFTW and
one worker, enqueues the jobs to CDCS + eLabFTW, keeps eLabFTW answering 503 (or
refusing connections) for ``--outage`` seconds, then lets it answer. Reports,
side by side: eLabFTW calls during the outage, jobs satisfied with no operator
action, jobs an operator must retry, and the time from the recovery until every
job has finished::

    .venv/bin/python -m bench.outage --jobs 30 --outage 60

Policies: *breaker* — retried until the deadline, the breaker opening after
3 failures and probing every 2 s (up to 8 s); *fixed attempts* — what a plain
retry policy does: 5 attempts, no breaker. Backoff: 0.5 s doubling, at most 8 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.private_cluster import Cluster
from tests.samples import RECORD, make_context
from worker.sandbox import FakeCDCS, FakeELabFTW

POLICIES: dict[str, dict[str, str]] = {
    "breaker": {"NX_EXPORT_BREAKER_FAILURES": "3", "NX_EXPORT_BREAKER_PROBE_SECONDS": "2",
                "NX_EXPORT_BREAKER_PROBE_MAX_SECONDS": "8"},
    "fixed attempts": {"NX_EXPORT_MAX_ATTEMPTS": "5", "NX_EXPORT_BREAKER_FAILURES": "1000000"},
}  # fmt: skip


def run(policy: str, options: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    with FakeCDCS() as cdcs, FakeELabFTW() as elab:
        cluster = Cluster(
            scratch / policy.replace(" ", "-"), None, NX_CDCS_URL=cdcs.root_url,
            NX_CDCS_TOKEN=cdcs.token, NX_ELABFTW_URL=elab.url, NX_ELABFTW_API_KEY=elab.api_key,
            NX_HTTP_CONNECT_TIMEOUT="2", NX_HTTP_READ_TIMEOUT="5",
            NX_EXPORT_BACKOFF_SECONDS="0.5", NX_EXPORT_BACKOFF_MAX_SECONDS="8",
            NX_EXPORT_HEARTBEAT_SECONDS="2", NX_RECORDS_PATH=str(scratch), **POLICIES[policy],
        )  # fmt: skip
        try:
            cluster.worker("one", concurrency=8)
            requests = []
            for number in range(options.jobs):
                path = cluster.directory / f"outage-{number}.xml"
                path.write_text(RECORD.format(title=f"outage {number}"), encoding="utf-8")
                requests.append({"context": make_context(path),
                                 "destinations": ["cdcs", "elabftw"]})  # fmt: skip
            began = time.time()
            if options.refused:
                elab.refuse_connections()
            else:
                elab.unavailable = True
            job_ids = cluster.enqueue(requests)
            time.sleep(options.outage)
            ended = time.time()
            if options.refused:
                elab.accept_connections()
            else:
                elab.unavailable = False
            unfinished = cluster.wait_finished(job_ids, timeout=options.timeout)
            drained = time.time() - ended
            records = [cluster.record(job_id) for job_id in job_ids]
        finally:
            cluster.close()
        during = [r for r in elab.requests if began <= r.time < ended]
        for record in [r for r in records if not r.job.satisfied][:2]:
            errors = {n: e.error for n, e in record.destinations.items() if e.error}
            print(f"{policy}: job {record.job.id} not satisfied: {errors}", file=sys.stderr)
        satisfied = sum(1 for r in records if r.job.satisfied)
        exported = sum(1 for r in records if r.destinations["elabftw"].succeeded)
        return {
            "eLabFTW calls during the outage": len(during),
            "satisfied, no operator action": f"{satisfied} / {options.jobs}",
            "left for an operator to retry": options.jobs - satisfied - len(unfinished),
            "unfinished": len(unfinished),
            "recovery to every job finished (s)": round(drained, 1),
            "duplicate eLabFTW experiments": len(elab.experiments) - exported,
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds eLabFTW is down")
    parser.add_argument("--refused", action="store_true", help="connections refused, not 503")
    parser.add_argument("--timeout", type=float, default=300.0)
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="nx-outage-"))
    results = {policy: run(policy, options, scratch) for policy in POLICIES}
    kind = "connections refused" if options.refused else "HTTP 503"
    print(f"eLabFTW down ({kind}) for {options.outage:g} s, {options.jobs} jobs\n")
    print("| measure | " + " | ".join(POLICIES) + " |")
    print("|---|" + "---|" * len(POLICIES))
    for measure in results["breaker"]:
        print(f"| {measure} | " + " | ".join(str(results[p][measure]) for p in POLICIES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
