"""Redis Sentinel: one setting points everything at the primary, and jobs survive a failover.

The failover tests run a primary, a replica and three Sentinels on 127.0.0.1 (ACL
user on the servers, a password on the Sentinels), a worker and a client on the
Sentinel URL; 20 jobs of three destinations are in flight when the primary is killed
(or paused past Sentinel's down-after); every job must finish satisfied, each export
run exactly once, and ``nx-export jobs`` answer right after.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.private_cluster import ENQUEUE_SCRIPT
from tests.samples import write_record
from tests.sentinel_cluster import MASTER_NAME, SENTINEL_PASSWORD, SentinelCluster
from tests.support import (
    install_test_plugins,
    nx_export,
    read_log,
    running_worker,
    wait_for,
    worker_env,
)

DESTINATIONS = ["alpha", "beta", "gamma"]
JOBS = 20
SENTINELS = "sentinel://u:p@127.0.0.1:26379;sentinel://u:p@127.0.0.1:26380"


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    from worker.settings import load_settings

    for name in [name for name in os.environ if name.startswith("NX_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_a_sentinel_url_names_the_primary_for_broker_backend_and_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from worker.app import REDIS_SOCKET_TIMEOUT, celery_config

    monkeypatch.chdir(tmp_path)
    config = celery_config(settings(
        monkeypatch, NX_EXPORT_BROKER_URL=SENTINELS, NX_EXPORT_REDIS_MASTER_NAME="mymaster",
        NX_EXPORT_SENTINEL_PASSWORD="s3cret",
    ))  # fmt: skip
    assert config["broker_url"] == config["result_backend"] == SENTINELS
    for options in (config["broker_transport_options"],
                    config["result_backend_transport_options"]):  # fmt: skip
        assert options["master_name"] == "mymaster"
        assert options["sentinel_kwargs"]["password"] == "s3cret"
        assert options["sentinel_kwargs"]["socket_timeout"] == REDIS_SOCKET_TIMEOUT
    assert config["broker_transport_options"]["socket_timeout"] == REDIS_SOCKET_TIMEOUT
    assert config["redis_socket_timeout"] == REDIS_SOCKET_TIMEOUT
    assert config["result_backend_always_retry"] is True
    assert 0 < config["result_backend_max_retries"] < float("inf")


def test_plain_redis_and_the_embedded_default_name_no_primary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from worker.app import celery_config

    monkeypatch.chdir(tmp_path)
    for env in ({"NX_EXPORT_BROKER_URL": "redis://:pw@127.0.0.1:6379/0"},
                {"NX_EXPORT_STATE_DIR": str(tmp_path)}):  # fmt: skip
        config = celery_config(settings(monkeypatch, **env))
        # TCP keepalive for TCP only: redis-py refuses it on a unix socket.
        tcp = config["broker_url"].startswith("redis://")
        assert config["broker_transport_options"].get("socket_keepalive", False) is tcp
        assert config["redis_socket_keepalive"] is tcp
        assert "master_name" not in config["broker_transport_options"]
        assert "master_name" not in config["result_backend_transport_options"]
        assert config["broker_url"].startswith(("redis://", "redis+socket://"))


def test_a_sentinel_url_without_a_master_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from worker.settings import SettingsError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="NX_EXPORT_REDIS_MASTER_NAME"):
        settings(monkeypatch, NX_EXPORT_BROKER_URL="redis://127.0.0.1:6379/0",
                 NX_EXPORT_RESULT_BACKEND=SENTINELS)  # fmt: skip
    with pytest.raises(SettingsError, match="every address"):
        settings(monkeypatch, NX_EXPORT_BROKER_URL="sentinel://h:26379;redis://h:6379",
                 NX_EXPORT_REDIS_MASTER_NAME="mymaster")  # fmt: skip


@pytest.mark.processes
def test_the_cli_exits_2_for_a_sentinel_url_without_a_master_name(tmp_path: Path) -> None:
    done = nx_export("jobs", "--json", env=worker_env(SENTINELS, None), cwd=tmp_path)
    assert done.returncode == 2
    assert "NX_EXPORT_REDIS_MASTER_NAME" in done.stderr
    assert ":p@" not in done.stderr  # the URL's password is never echoed


# -- failover ------------------------------------------------------------------------------


def kill_the_primary(cluster: SentinelCluster) -> float:
    """SIGKILL the primary; restart it once a replica took over. Seconds to the promotion."""
    old = cluster.primary()
    old.kill()
    promoted = cluster.wait_for_new_primary(old.port)
    cluster.restart_as_replica(old)
    return promoted


def pause_the_primary(cluster: SentinelCluster, seconds: float = 4.0) -> float:
    """SIGSTOP the primary past Sentinel's down-after, then SIGCONT: it comes back demoted."""
    old = cluster.primary()
    old.signal(signal.SIGSTOP)
    started = time.monotonic()
    promoted = cluster.wait_for_new_primary(old.port)
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    old.signal(signal.SIGCONT)
    return promoted


def run_through_a_failover(tmp_path: Path, failover: Any, wait: float = 45) -> dict[str, Any]:
    """``JOBS`` jobs in flight, ``failover(cluster)`` mid-run: what the jobs and exports did.

    ``bench.failover`` runs it too.
    """
    log = tmp_path / "exports.jsonl"
    cluster = SentinelCluster(tmp_path / "redis")
    try:
        env = worker_env(cluster.url, install_test_plugins(tmp_path / "site"), **cluster.env(),
                         NX_EXPORT_HEARTBEAT_SECONDS="2", NX_EXPORT_BACKOFF_SECONDS="0.2",
                         # A task delivered by the dead primary but never received, or
                         # received and not acknowledged, is handed out again after this.
                         NX_EXPORT_VISIBILITY_TIMEOUT="10",
                         # A task message the dead primary had not replicated is gone:
                         # the lost-task sweep sends it again (5 minutes by default).
                         NX_EXPORT_LOST_TASK_SECONDS="10",
                         NX_TEST_EXPORT_LOG=str(log))  # fmt: skip
        for name in DESTINATIONS:
            env[f"NX_TEST_{name.upper()}_BEHAVIOUR"] = "sleep:0.3"
        record = write_record(tmp_path / "record.xml", title="failover")
        with running_worker(env, tmp_path / "worker.log", "failover", ready_timeout=60,
                            concurrency=8):  # fmt: skip
            client = worker_env(cluster.url, None, **cluster.env())
            job_ids = enqueue(client, record, JOBS)
            time.sleep(1.0)  # the worker is busy with the first jobs; the rest are queued
            promoted = failover(cluster)
            unfinished, satisfied = wait_finished(client, job_ids, timeout=wait)
            finished_at = time.monotonic()
            listed = nx_export("jobs", "--json", env=client, timeout=30)
            cluster.wait_for_replica(cluster.nodes[0], timeout=30)
        exports = Counter((line["session"], line["name"]) for line in read_log(log))
        # Redis away is one warning line for the sweep, not a traceback each heartbeat.
        sweep_tracebacks = (tmp_path / "worker.log").read_text().count(
            "the sweep for overdue jobs failed"
        )
        return {"promoted": promoted, "unfinished": unfinished, "listed": listed,
                "exports": exports, "finished_at": finished_at, "jobs": job_ids,
                "satisfied": satisfied, "sweep_tracebacks": sweep_tracebacks}  # fmt: skip
    finally:
        cluster.close()


def enqueue(client: dict[str, str], record: Path, count: int) -> list[str]:
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    requests = [{"context": {"xml_file_path": str(record), "session_identifier": f"ha-{n}",
                             "instrument_pid": "FEI-Titan-TEM-635816",
                             "dt_from": "2026-03-04T09:00:00", "dt_to": "2026-03-04T10:00:00"},
                 "destinations": DESTINATIONS} for n in range(count)]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", ENQUEUE_SCRIPT], input=json.dumps(requests),
                          capture_output=True, text=True, env=client, cwd=PROJECT_ROOT,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def wait_finished(
    client: dict[str, str], job_ids: list[str], timeout: float
) -> tuple[list[str], dict[str, bool | None]]:
    """The jobs still unfinished after ``timeout`` (with their destinations' states), and
    whether each finished one is satisfied.

    Read through the Sentinels, as a client would.
    """
    import redis.sentinel

    from tasks.store.job_store import JobStore

    sentinels = [(part.rsplit("@", 1)[1].split(":")[0],
                  int(part.rsplit(":", 1)[1].split("/")[0]))
                 for part in client["NX_EXPORT_BROKER_URL"].split(";")]  # fmt: skip
    user, password = client["NX_EXPORT_BROKER_URL"].split("//", 1)[1].split("@")[0].split(":")
    sentinel = redis.sentinel.Sentinel(
        sentinels, sentinel_kwargs={"password": SENTINEL_PASSWORD, "socket_timeout": 2},
        socket_timeout=2,
    )  # fmt: skip
    store = JobStore(sentinel.master_for(MASTER_NAME, username=user, password=password), 3600)
    deadline = time.monotonic() + timeout
    pending, satisfied = list(job_ids), {}
    states: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        try:
            records = store.load_many(pending)
        except redis.RedisError:
            continue
        for job_id, record in zip(list(pending), records, strict=True):
            if record is not None and record.job.finished_at is not None:
                satisfied[job_id] = record.job.satisfied
                pending.remove(job_id)
            elif record is not None:  # what a failure names: each destination's state
                states[job_id] = {n: e.state for n, e in record.destinations.items()}
        time.sleep(0.2)
    return [f"{job_id} {states.get(job_id)}" for job_id in pending], satisfied


def check(outcome: dict[str, Any]) -> None:
    assert outcome["unfinished"] == [], outcome["unfinished"]
    assert all(outcome["satisfied"].values()), outcome["satisfied"]
    expected = {(f"ha-{n}", name) for n in range(JOBS) for name in DESTINATIONS}
    assert set(outcome["exports"]) == expected  # every export ran...
    assert max(outcome["exports"].values()) == 1, outcome["exports"].most_common(3)  # ...once
    listed = outcome["listed"]
    assert listed.returncode == 0, listed.stderr
    assert outcome["sweep_tracebacks"] == 0
    assert set(outcome["jobs"]) <= {job["id"] for job in json.loads(listed.stdout)}


@pytest.mark.processes
def test_jobs_survive_the_primary_killed(tmp_path: Path) -> None:
    check(run_through_a_failover(tmp_path, kill_the_primary))


@pytest.mark.processes
def test_jobs_survive_the_primary_paused(tmp_path: Path) -> None:
    check(run_through_a_failover(tmp_path, pause_the_primary))


@pytest.mark.processes
def test_the_sweep_finishes_a_job_whose_chord_count_was_lost(tmp_path: Path) -> None:
    """A failover can lose the chord's count of a part (written, not yet replicated)."""
    from tests.private_cluster import Cluster
    from tests.samples import make_context

    cluster = Cluster(tmp_path, install_test_plugins(tmp_path / "site"))
    try:
        worker = cluster.worker("sweep", NX_EXPORT_HEARTBEAT_SECONDS="1")
        log = tmp_path / "exports.jsonl"
        context = make_context(write_record(tmp_path / "r.xml", title="lost count"), log,
                               alpha="sleep:0.1", beta="sleep:3")  # fmt: skip
        [job_id] = cluster.enqueue([{"context": context, "destinations": ["alpha", "beta"]}])
        client = cluster.redis.client()

        def counted_alpha() -> list[bytes]:
            return [key for key in client.scan_iter("celery-taskset-meta-*.j")
                    if client.zcard(key) == 1]  # fmt: skip

        for key in wait_for(counted_alpha, timeout=20, interval=0.02):
            client.delete(key)  # alpha's part is no longer counted: the chord never completes
        assert cluster.wait_finished([job_id], timeout=30) == []
        assert cluster.record(job_id).outcomes() == {"alpha": True, "beta": True}
        assert cluster.record(job_id).job.satisfied is True
        assert Counter(line["name"] for line in read_log(log)) == {"alpha": 1, "beta": 1}
        assert "every destination ended, its finish did not" in worker.log()
    finally:
        cluster.close()


@pytest.mark.processes
def test_a_write_a_non_primary_refuses_is_a_failover_to_every_client(tmp_path: Path) -> None:
    """NOREPLICAS (a primary without replicas) and READONLY, also inside a script."""
    import redis

    from tasks.store.failover import FAILOVER_ERRORS
    from tests.sentinel_cluster import RedisNode

    lonely = RedisNode(tmp_path / "lonely").start()  # min-replicas-to-write 1, no replica
    replica = RedisNode(tmp_path / "replica", replica_of=lonely.port).start()
    try:
        client = lonely.client(socket_timeout=2)
        client.config_set("min-replicas-to-write", "1")
        replica.stop()
        time.sleep(0.2)
        writes = {
            "command": lambda c: c.set("k", "v"),
            "script": lambda c: c.eval("return redis.call('set', KEYS[1], 'v')", 1, "k"),
            "transaction": lambda c: c.pipeline().set("k", "v").incr("n").execute(),
        }
        for name, write in writes.items():
            with pytest.raises(redis.ReadOnlyError, match="NOREPLICAS"):
                write(client)
            assert isinstance(redis.ReadOnlyError("x"), FAILOVER_ERRORS), name
        assert client.get("k") is None  # refused writes did not happen
        # A demoted primary says READONLY; inside a script too.
        replica.replica_of = lonely.port
        replica.start()
        with pytest.raises(redis.ReadOnlyError, match="READONLY"):
            writes["script"](replica.client(socket_timeout=2))
        assert client.get("missing") is None  # reads and other errors are unchanged
        with pytest.raises(redis.ResponseError) as other:
            client.execute_command("NOSUCHCOMMAND")
        assert type(other.value) is redis.ResponseError
    finally:
        replica.stop()
        lonely.stop()


def test_a_retry_that_could_not_be_sent_requeues_its_task_instead_of_dropping_it() -> None:
    import redis
    from celery.exceptions import Reject
    from kombu.exceptions import OperationalError

    from tasks.export.retry_policy import unsent_retry_requeued

    for reason in (OperationalError("The previous master is now a slave"),
                   redis.ConnectionError("reset"), redis.TimeoutError("timed out")):  # fmt: skip
        kept = unsent_retry_requeued(Reject(reason, requeue=False))
        assert kept.requeue is True and kept.reason is reason
    other = Reject(ValueError("a bug"), requeue=False)
    assert unsent_retry_requeued(other) is other  # anything else is Celery's to decide
