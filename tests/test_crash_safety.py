"""A worker killed mid-export loses no job and creates no duplicate record."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.samples import make_context, write_record
from tests.support import StartWorker, wait_for
from worker.sandbox import FakeCDCS, FakeELabFTW

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

JOBS = 8


@pytest.fixture
def fakes() -> Iterator[tuple[FakeCDCS, FakeELabFTW]]:
    with FakeCDCS() as cdcs, FakeELabFTW() as elab:
        cdcs.create_latency = 0.4
        elab.create_latency = 0.4
        yield cdcs, elab


def crash_settings(cdcs: FakeCDCS, elab: FakeELabFTW) -> dict[str, str]:
    return {
        "NX_CDCS_URL": cdcs.root_url,
        "NX_CDCS_TOKEN": cdcs.token,
        "NX_ELABFTW_URL": elab.url,
        "NX_ELABFTW_API_KEY": elab.api_key,
        # Unacknowledged tasks of a dead worker come back after this many seconds.
        "NX_EXPORT_VISIBILITY_TIMEOUT": "6",
        "NX_HTTP_READ_TIMEOUT": "5",
        # A killed worker's upload could still be answered until then: its redelivery
        # looks the record up only afterwards.
        "NX_HTTP_TOTAL_TIMEOUT": "5",
    }


def test_sigkilled_workers_lose_no_job_and_duplicate_nothing(
    app: Any, fakes: tuple[FakeCDCS, FakeELabFTW], start_worker: StartWorker, tmp_path: Path
) -> None:
    from worker import enqueue_export

    cdcs, elab = fakes
    settings = crash_settings(cdcs, elab)
    first = start_worker("doomed", pool="prefork", concurrency=2, **settings)
    jobs = []
    for number in range(JOBS):
        record = write_record(tmp_path / f"crash-{number}.xml", title=f"crash {number}")
        jobs.append(enqueue_export(make_context(record), destinations=["cdcs", "elabftw"], app=app))
    # Kill the whole worker while exports are in flight.
    wait_for(lambda: len(cdcs.requests_to("POST /rest/data/")) >= 2, timeout=30)
    first.kill()

    second = start_worker("survivor", pool="prefork", concurrency=2, **settings)
    assert second.process is not None
    # And one of the survivor's pool processes, while it works.
    wait_for(lambda: psutil.Process(second.process.pid).children())
    time.sleep(1.0)
    children = psutil.Process(second.process.pid).children()
    if children:
        os.kill(children[0].pid, signal.SIGKILL)
    finished = [job.wait(timeout=90) for job in jobs]
    second.stop()

    assert all(job.satisfied for job in finished), [
        {n: (s.state, s.error) for n, s in job.destinations.items()}
        for job in finished
        if not job.satisfied
    ]
    titles = [record["title"] for record in cdcs.records.values()]
    assert sorted(titles) == sorted(f"crash-{n} ({job.session_identifier})" for n, job in
                                    enumerate(finished))  # fmt: skip
    sessions = [
        tag for e in elab.experiments.values() for tag in e["tags"] if tag.startswith("nx-session:")
    ]
    assert len(sessions) == len(set(sessions)) == JOBS
