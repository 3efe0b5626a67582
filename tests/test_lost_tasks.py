"""A destination task whose message is gone (a purged queue) is found and sent again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.samples import enqueue_arguments, write_record
from tests.support import StartRedis, StartWorker, nx_export, wait_for, worker_env

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes


def enqueue_without_a_worker(redis_url: str, tmp_path: Path, count: int) -> list[str]:
    """Jobs to the local archive, enqueued while no worker runs: their tasks wait in its queue."""
    client = worker_env(redis_url, None, NX_EXPORT_LOCAL_PATH=str(tmp_path / "archive"))
    jobs = []
    for number in range(count):
        record = write_record(tmp_path / f"record-{number}.xml", title=f"lost {number}")
        done = nx_export(
            *enqueue_arguments(record, "--destination", "local", session=f"lost-{number}"),
            env=client,
        )
        assert done.returncode == 0, done.stderr
        jobs.append(done.stdout.strip())
    return jobs


def states(redis_url: str, job_ids: list[str]) -> list[tuple[str, bool]]:
    answers = []
    for job_id in job_ids:
        done = nx_export("status", job_id, "--json", env=worker_env(redis_url, None))
        job = json.loads(done.stdout)
        answers.append((job["state"], job["satisfied"]))
    return answers


def test_a_purged_queue_costs_no_job_the_sweep_sends_its_tasks_again(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    redis = start_redis()
    job_ids = enqueue_without_a_worker(redis.url, tmp_path, 3)
    # What `celery purge` does to a queue: every waiting message gone.
    assert redis.client().delete("export.local") == 1
    start_worker(
        "after-purge", redis=redis, NX_EXPORT_LOCAL_PATH=str(tmp_path / "archive"),
        NX_EXPORT_HEARTBEAT_SECONDS="1", NX_EXPORT_LOST_TASK_SECONDS="2",
    )  # fmt: skip
    # Within the grace period and a sweep or two, not at the job's deadline (a day).
    assert wait_for(
        lambda: states(redis.url, job_ids) == [("finished", True)] * 3, timeout=60
    ), states(redis.url, job_ids)
    archived = sorted(p.name for p in (tmp_path / "archive").rglob("*.xml"))
    assert archived == ["lost-0.xml", "lost-1.xml", "lost-2.xml"]


def test_resend_lost_sends_lost_tasks_at_once_and_nothing_still_queued(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    redis = start_redis()
    job_ids = enqueue_without_a_worker(redis.url, tmp_path, 2)
    client = worker_env(redis.url, None)
    # Still in their queue: nothing is lost, nothing is sent twice.
    kept = nx_export("resend-lost", "--json", env=client)
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout) == []
    assert redis.client().llen("export.local") == 2

    redis.client().delete("export.local")
    sent = nx_export("resend-lost", "--json", env=client)
    assert sent.returncode == 0, sent.stderr
    assert sorted(item["job_id"] for item in json.loads(sent.stdout)) == sorted(job_ids)
    assert redis.client().llen("export.local") == 2
    # The default grace is minutes: these finish because they were sent again now.
    later = start_worker("later", redis=redis, NX_EXPORT_LOCAL_PATH=str(tmp_path / "archive"))
    assert wait_for(
        lambda: states(redis.url, job_ids) == [("finished", True)] * 2, timeout=60
    ), (states(redis.url, job_ids), later.log()[-4000:])
