"""A destination down for a while: its exports wait for a probe, then all end satisfied.

Scaled: the breaker opens after 3 failures in a row, probes every 1 s (2 s at most),
and the outage lasts 15 s instead of 90.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_support import running_dashboard
from tests.private_cluster import Cluster, enqueue_arguments
from tests.samples import RECORD, make_context
from tests.support import wait_for
from worker.sandbox import FakeCDCS, FakeELabFTW

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

JOBS = 30
OUTAGE_SECONDS = 15.0


def cdcs_and_elabftw_jobs(folder: Path, prefix: str, count: int) -> list[dict[str, Any]]:
    """``count`` records written to ``folder``, each a job to CDCS and eLabFTW."""
    jobs = []
    for number in range(count):
        path = folder / f"{prefix}-{number}.xml"
        path.write_text(RECORD.format(title=f"{prefix} {number}"), encoding="utf-8")
        jobs.append({"context": make_context(path), "destinations": ["cdcs", "elabftw"]})
    return jobs


@pytest.fixture
def services() -> Iterator[tuple[FakeCDCS, FakeELabFTW]]:
    with FakeCDCS() as cdcs, FakeELabFTW() as elab:
        yield cdcs, elab


@pytest.mark.parametrize("outage", ["503", "refused"])
def test_a_destination_down_costs_no_job_and_is_probed_not_hammered(
    outage: str, tmp_path: Path, services: tuple[FakeCDCS, FakeELabFTW]
) -> None:
    cdcs, elab = services
    cluster = Cluster(
        tmp_path, None, NX_CDCS_URL=cdcs.root_url, NX_CDCS_TOKEN=cdcs.token,
        NX_ELABFTW_URL=elab.url, NX_ELABFTW_API_KEY=elab.api_key, NX_HTTP_READ_TIMEOUT="5",
        NX_HTTP_CONNECT_TIMEOUT="2", NX_EXPORT_BREAKER_FAILURES="3",
        NX_EXPORT_BREAKER_PROBE_SECONDS="1", NX_EXPORT_BREAKER_PROBE_MAX_SECONDS="2",
        NX_EXPORT_BACKOFF_SECONDS="0.2", NX_EXPORT_BACKOFF_MAX_SECONDS="2",
        NX_EXPORT_HEARTBEAT_SECONDS="1",
    )  # fmt: skip
    try:
        cluster.worker("one", concurrency=8)
        records = cdcs_and_elabftw_jobs(tmp_path, "outage", JOBS)
        began = time.time()
        if outage == "503":
            elab.unavailable = True
        else:
            elab.refuse_connections()
        job_ids = cluster.enqueue(records)
        with running_dashboard(cluster.redis.url, tmp_path) as dashboard:
            time.sleep(OUTAGE_SECONDS)
            shown = json.loads(cluster.cli("destinations", "--json").stdout)
            metrics = dashboard.get("/metrics").text
            page = dashboard.get("/").text
        ended = time.time()
        if outage == "503":
            elab.unavailable = False
        else:
            elab.accept_connections()
        unfinished = cluster.wait_finished(job_ids, timeout=120)
        assert unfinished == [], [cluster.record(j).destinations for j in unfinished[:3]]
        drained = time.time() - ended
        during = [r for r in elab.requests if began <= r.time < ended]
        print(f"{outage}: {len(during)} eLabFTW calls in {OUTAGE_SECONDS:g} s of outage; "
              f"backlog drained {drained:.1f} s after the recovery")  # fmt: skip
        assert len(during) <= 60
        records_of = [cluster.record(job_id) for job_id in job_ids]
        assert all(r.job.satisfied for r in records_of), [
            r.destinations["elabftw"].error for r in records_of if not r.job.satisfied
        ]
        assert len(cdcs.records) == JOBS and len(elab.experiments) == JOBS  # no duplicates
        elabftw = {d["name"]: d for d in shown["destinations"]}["elabftw"]
        assert elabftw["breaker"]["state"] in ("down", "probing"), elabftw
        assert elabftw["breaker"]["waiting"] > 0
        assert elabftw["breaker"]["last_error"], elabftw
        cdcs_row = {d["name"]: d for d in shown["destinations"]}["cdcs"]
        assert cdcs_row["breaker"]["state"] == "up" and cdcs_row["breaker"]["last_success"]
        # What an alert rule reads, and what an operator sees on the jobs page.
        assert 'nx_export_destination_up{destination="elabftw"} 0.0' in metrics
        assert 'nx_export_destination_up{destination="cdcs"} 1.0' in metrics
        waiting = re.search(r'_destination_waiting\{destination="elabftw"\} (\S+)', metrics)
        assert waiting is not None and float(waiting.group(1)) > 0
        assert re.search(r'id="service-elabftw"><b>elabftw</b> (down|probing) since', page)
        failing = re.search(r'_failing_since_timestamp_seconds\{destination="elabftw"\} (\S+)',
                            metrics)  # fmt: skip
        assert failing is not None and began - 1 <= float(failing.group(1)) <= ended
    finally:
        cluster.close()


def test_jobs_failed_on_a_wrong_key_are_recovered_by_one_command(
    tmp_path: Path, services: tuple[FakeCDCS, FakeELabFTW]
) -> None:
    cdcs, elab = services
    settings = {"NX_CDCS_URL": cdcs.root_url, "NX_CDCS_TOKEN": cdcs.token,
                "NX_ELABFTW_URL": elab.url}  # fmt: skip
    cluster = Cluster(tmp_path, None, **settings)
    try:
        wrong = cluster.worker("wrong-key", NX_ELABFTW_API_KEY="not-the-key")
        records = cdcs_and_elabftw_jobs(tmp_path, "key", 5)
        job_ids = cluster.enqueue(records, NX_ELABFTW_API_KEY="not-the-key")
        assert cluster.wait_finished(job_ids, timeout=60) == []
        errors = [cluster.record(j).destinations["elabftw"].error or "" for j in job_ids]
        assert all("credentials were refused (HTTP 401" in error for error in errors), errors
        # The operator fixes the key and restarts the worker; then one command.
        wrong.stop()
        cluster.worker("right-key", NX_ELABFTW_API_KEY=elab.api_key)
        done = cluster.cli("retry", "--failed", "--destination", "elabftw", "--wait", "--json",
                           NX_ELABFTW_API_KEY=elab.api_key, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["counts"] == {"retried": 5, "skipped": 0, "refused": 0}
        assert sorted(summary["wait"]["satisfied"]) == sorted(job_ids)
        assert len(cdcs.records) == 5 and len(elab.experiments) == 5
    finally:
        cluster.close()


def test_a_worker_killed_while_probing_holds_nobody_up(
    tmp_path: Path, services: tuple[FakeCDCS, FakeELabFTW]
) -> None:
    # The probe's worker dies mid-call: its probe key lapses with the lease, and the
    # next worker's probe closes the breaker. Nothing is created twice.
    cdcs, elab = services
    settings = {
        "NX_CDCS_URL": cdcs.root_url, "NX_CDCS_TOKEN": cdcs.token, "NX_ELABFTW_URL": elab.url,
        "NX_ELABFTW_API_KEY": elab.api_key, "NX_HTTP_READ_TIMEOUT": "20",
        "NX_EXPORT_BREAKER_FAILURES": "2", "NX_EXPORT_BREAKER_PROBE_SECONDS": "1",
        "NX_EXPORT_BREAKER_PROBE_MAX_SECONDS": "2", "NX_EXPORT_BACKOFF_SECONDS": "0.2",
        "NX_EXPORT_BACKOFF_MAX_SECONDS": "2", "NX_EXPORT_LEASE_SECONDS": "4",
        "NX_EXPORT_VISIBILITY_TIMEOUT": "10", "NX_EXPORT_HEARTBEAT_SECONDS": "1",
    }  # fmt: skip
    cluster = Cluster(tmp_path, None, **settings)
    try:
        doomed = cluster.worker("doomed", concurrency=4)
        records = cdcs_and_elabftw_jobs(tmp_path, "probe", 6)
        elab.unavailable = True
        job_ids = cluster.enqueue(records)
        client = cluster.redis.client()
        wait_for(lambda: client.hexists("nxexport:breaker:elabftw", "down_since"), 60)
        # eLabFTW answers again, but the probe's call hangs: its worker is killed in it.
        elab.stall_next(30)
        elab.unavailable = False
        wait_for(lambda: client.exists("nxexport:breaker:elabftw:probe"), 60)
        wait_for(lambda: any(r.status is None for r in elab.requests), 30)  # the call is out
        doomed.kill()
        cluster.worker("next", concurrency=4)
        assert cluster.wait_finished(job_ids, timeout=120) == []
        assert all(cluster.record(job_id).job.satisfied for job_id in job_ids)
        assert not client.hexists("nxexport:breaker:elabftw", "down_since")
        assert len(cdcs.records) == 6 and len(elab.experiments) == 6
    finally:
        cluster.close()


def test_a_transient_error_is_retried_until_the_deadline_and_says_when_next(
    tmp_path: Path, plugin_path: Path
) -> None:
    # No attempt cap: alpha waits 3 s for its second attempt, and says so meanwhile;
    # beta's next attempt would come after the job's 20 s deadline: it stops there.
    record = tmp_path / "deadline.xml"
    record.write_text(RECORD.format(title="deadline"), encoding="utf-8")
    cluster = Cluster(tmp_path, plugin_path, NX_EXPORT_HEARTBEAT_SECONDS="1")
    try:
        cluster.worker(
            "plugins", NX_TEST_ALPHA_BEHAVIOUR="transient:1", NX_TEST_BETA_BEHAVIOUR="transient:9",
            NX_EXPORT_ALPHA_BACKOFF_SECONDS="3", NX_EXPORT_BETA_BACKOFF_SECONDS="40",
            NX_EXPORT_BACKOFF_MAX_SECONDS="60",
        )  # fmt: skip
        enqueued = cluster.cli(
            *enqueue_arguments(record, "until-deadline", "--destination", "alpha",
                               "--destination", "beta", "--strategy", "best_effort", "--json"),
            NX_EXPORT_JOB_DEADLINE="20",
        )  # fmt: skip
        assert enqueued.returncode == 0, enqueued.stderr
        job_id = json.loads(enqueued.stdout)["job_id"]

        def alpha_waiting() -> str | None:
            shown = cluster.cli("status", job_id, NX_EXPORT_JOB_DEADLINE="20").stdout
            waiting = "alpha: RETRY" in shown and "retrying, next attempt at" in shown
            return shown if waiting else None

        shown = wait_for(alpha_waiting, 20)
        assert "failing since" in shown
        assert cluster.wait_finished([job_id], timeout=30) == []
        stored = cluster.record(job_id)
        assert stored.destinations["alpha"].succeeded and stored.destinations["alpha"].attempts == 2
        beta = stored.destinations["beta"]
        assert beta.attempts == 1 and beta.next_attempt_at is None
        assert "gave up after 1 attempts: the job's deadline comes first" in (beta.error or "")
    finally:
        cluster.close()
