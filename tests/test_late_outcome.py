"""An outcome that arrives after the deadline ended its run: the run is told again.

The rule (``tasks.store.run_ending``): a task of an ended run that has not started
does not start; a call already in flight when the run ended is what happened at
the service, so its outcome is stored and every reader is told the new truth.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.nexuslims.delivery import WAITING, record_written, waiting_member, written_telling
from tasks.store.keys import job_key
from tasks.store.model import JOB_FIELD, StoredJob
from tests.dashboard_support import running_dashboard
from tests.nexuslims_support import (
    nexuslims_settings,
    prepare_database,
    private_worker,
    record_spec,
    record_status,
    require_nexuslims,
    run_client,
    upload_log,
)
from tests.private_cluster import Cluster, enqueue_arguments
from tests.samples import RECORD
from tests.support import RedisServer, wait_for
from tests.webhook_receiver import WebhookReceiver, verify_signature
from worker.sandbox import FakeCDCS, FakeELabFTW

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

SECRET = "late-outcome-webhook-secret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


def test_an_export_in_flight_at_the_deadline_tells_the_run_again(
    tmp_path: Path, plugin_path: Path, receiver: WebhookReceiver
) -> None:
    record = tmp_path / "late.xml"
    record.write_text(RECORD.format(title="late"), encoding="utf-8")
    exported, callbacks = tmp_path / "exported.log", tmp_path / "callbacks.jsonl"
    cluster = Cluster(tmp_path, plugin_path, NX_EXPORT_HEARTBEAT_SECONDS="1")
    try:
        worker = cluster.worker(
            "plugins", NX_TEST_ALPHA_BEHAVIOUR="sleep:8", NX_TEST_EXPORT_LOG=str(exported),
            NX_EXPORT_WEBHOOK_URL=receiver.url, NX_EXPORT_WEBHOOK_SECRET=SECRET,
            NX_EXPORT_CALLBACK_TASK="lims.export_finished", NX_TEST_CALLBACK_LOG=str(callbacks),
        )  # fmt: skip
        # alpha's export outlives the deadline; linked waits for alpha.
        done = cluster.cli(
            *enqueue_arguments(record, "late", "--destination", "alpha", "--destination",
                               "linked", "--strategy", "best_effort"),
            "--wait", "--json", NX_EXPORT_JOB_DEADLINE="2", timeout=90,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        job = json.loads(done.stdout)
        job_id = job["id"]
        assert job["satisfied"] is False and job["retold"] == 0
        assert job["destinations"]["alpha"]["error"] == "still running after 2 s"

        def told() -> dict[str, Any]:
            shown = json.loads(cluster.cli("status", job_id, "--json").stdout)
            listed = json.loads(cluster.cli("jobs", "--failed", "--json").stdout)
            stored = cluster.record(job_id).job
            return {
                "satisfied": shown["satisfied"], "stored": stored.satisfied,
                "listed": job_id in [j["id"] for j in listed], "retold": shown["retold"],
            }  # fmt: skip

        # Every reader agrees: before alpha's answer lands...
        assert told() == {"satisfied": False, "stored": False, "listed": True, "retold": 0}
        # ...and after it: the service has the record, so the job says so.
        wait_for(lambda: told()["retold"] == 1, 60)
        assert told() == {"satisfied": True, "stored": True, "listed": False, "retold": 1}
        again = cluster.cli("retry", job_id, "--json")
        assert again.returncode != 0 and "nothing to retry" in again.stderr, again.stderr
        with running_dashboard(cluster.redis.url, tmp_path) as dashboard:
            page = dashboard.get(f"/jobs/{job_id}").text
        assert '<span class="yes">satisfied</span>' in page and 'id="retold"' in page

        # alpha ran once; linked, which waited for it, never started after the run ended.
        runs = [json.loads(line)["name"] for line in exported.read_text().splitlines()]
        assert runs == ["alpha"]
        wait_for(lambda: len(receiver.for_job(job_id)) == 2, 60)
        deliveries = receiver.for_job(job_id)
        assert [d["summary"]["satisfied"] for d in deliveries] == [False, True]
        assert [d["summary"]["retold"] for d in deliveries] == [0, 1]
        assert all(verify_signature(SECRET, d["headers"], d["body"]) for d in deliveries)
        wait_for(lambda: len(callbacks.read_text().splitlines()) == 2, 30)
        told_lims = [json.loads(line) for line in callbacks.read_text().splitlines()]
        assert [(c["satisfied"], c["retold"]) for c in told_lims] == [(False, 0), (True, 1)]
        assert "told again" in worker.log()
    finally:
        cluster.close()


def test_nexuslims_hears_a_run_told_again(tmp_path: Path) -> None:
    require_nexuslims(tmp_path / "probe")
    session = "2026-03-04_titan_0120"
    with FakeCDCS() as cdcs, FakeELabFTW() as elab:
        cdcs.create_latency = 8  # the upload is answered after the deadline ended the run
        settings = {
            "NX_CDCS_URL": cdcs.root_url, "NX_CDCS_TOKEN": cdcs.token,
            "NX_ELABFTW_URL": elab.url, "NX_ELABFTW_API_KEY": elab.api_key,
            "NX_EXPORT_JOB_DEADLINE": "3", "NX_EXPORT_HEARTBEAT_SECONDS": "1",
            "NX_EXPORT_STRATEGY": "best_effort",
            **nexuslims_settings(tmp_path / "nexuslims"),
        }  # fmt: skip
        with private_worker(tmp_path, "bridge", **settings) as env:
            database = Path(env["NX_DB_PATH"])
            prepare_database(env, [session])
            run_client(env, [record_spec(tmp_path, session)], wait=False)
            wait_for(lambda: record_status(database, session) == {"BUILT_NOT_EXPORTED"}, 60)
            ended = upload_log(database, session)
            assert all(not ok for _, ok, _ in ended), ended
            wait_for(lambda: record_status(database, session) == {"COMPLETED"}, 60)
            time.sleep(2)  # a stale telling would land in this time
            assert record_status(database, session) == {"COMPLETED"}
            rows = upload_log(database, session)
            assert rows[: len(ended)] == ended
            assert [(name, ok) for name, ok, _ in rows[len(ended):]] == [("cdcs", True)]
            assert len(cdcs.records) == 1


@pytest.mark.parametrize(
    ("strategy", "late", "never"),
    [("all", ["alpha", "beta"], []), ("first_success", ["alpha"], ["beta"])],
)
def test_late_outcomes_told_again_agree_however_many_land(
    strategy: str, late: list[str], never: list[str], tmp_path: Path, plugin_path: Path,
    receiver: WebhookReceiver,
) -> None:  # fmt: skip
    # "all": two exports in flight land at the same moment, each telling the run again.
    # "first_success": the first destination lands late; the next one never starts.
    record = tmp_path / "late.xml"
    record.write_text(RECORD.format(title="late"), encoding="utf-8")
    exported = tmp_path / "exported.log"
    cluster = Cluster(tmp_path, plugin_path, NX_EXPORT_HEARTBEAT_SECONDS="1")
    try:
        cluster.worker(
            "plugins", NX_TEST_ALPHA_BEHAVIOUR="sleep:6", NX_TEST_BETA_BEHAVIOUR="sleep:6",
            NX_TEST_EXPORT_LOG=str(exported), NX_EXPORT_WEBHOOK_URL=receiver.url,
        )  # fmt: skip
        done = cluster.cli(
            *enqueue_arguments(record, f"late-{strategy}", "--destination", "alpha",
                               "--destination", "beta", "--strategy", strategy),
            "--wait", "--json", NX_EXPORT_JOB_DEADLINE="2", timeout=90,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        job_id = json.loads(done.stdout)["id"]
        store = cluster.store()

        def settled() -> bool:
            stored = cluster.record(job_id)
            landed = all(stored.destinations[n].succeeded for n in late)
            return landed and not store.scheduled("nxexport:announce", job_id)

        wait_for(settled, 60)
        stored = cluster.record(job_id)
        assert stored.job.satisfied is True and 1 <= stored.job.retold <= len(late)
        listed = json.loads(cluster.cli("jobs", "--failed", "--json").stdout)
        assert job_id not in [job["id"] for job in listed]
        # Whatever order the deliveries came in, the newest telling says satisfied.
        wait_for(lambda: any(d["summary"]["retold"] == stored.job.retold
                             for d in receiver.for_job(job_id)), 30)  # fmt: skip
        newest = max(receiver.for_job(job_id), key=lambda d: d["summary"]["retold"])
        assert newest["summary"]["satisfied"] is True
        runs = [json.loads(line)["name"] for line in exported.read_text().splitlines()]
        assert sorted(runs) == sorted(late) and not set(never) & set(runs)
    finally:
        cluster.close()


def test_a_telling_written_under_a_newer_one_is_written_again(
    redis_server: RedisServer,
) -> None:
    # The bridge's bookkeeping after a database commit (tasks.nexuslims.delivery), on a
    # real Redis: a stale telling written after a newer one (its session lock expired
    # under it) must be written again, and a run told again while it was written stays
    # waiting for the bridge.
    client = redis_server.client()
    job_id = f"telling-{uuid.uuid4().hex[:8]}"
    member = waiting_member(job_id, 1)

    def job(retold: int) -> None:
        stored = StoredJob(id=job_id, runs=1, retold=retold, finished_at="2026-12-06T00:00:00")
        client.hset(job_key(job_id), JOB_FIELD, stored.to_json())

    job(retold=1)
    client.zadd(WAITING, {member: 1.0})
    assert record_written(client, job_id, 1, telling=2, retention=60) == (0, False)
    assert written_telling(client, job_id, 1) == 2 and client.zscore(WAITING, member) is None
    # Telling 1's write lands late: it is to be written again, from the store's truth.
    assert record_written(client, job_id, 1, telling=1, retention=60) == (1, True)
    assert written_telling(client, job_id, 1) == 0 and client.zscore(WAITING, member) == 0
    # Told again (telling 3) while telling 2 was written: it stays waiting.
    job(retold=2)
    assert record_written(client, job_id, 1, telling=2, retention=60) == (1, False)
    assert client.zscore(WAITING, member) == 0
