"""The growing chord at its edges: dependencies ending together, a crash while adding, a failure.

``joined`` waits for ``alpha`` and ``beta``; ``linked`` waits for ``alpha``
(see ``tests/plugins``).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.samples import enqueue_arguments, make_context, write_record
from tests.support import (
    StartRedis,
    StartWorker,
    WorkerProcess,
    nx_export,
    read_log,
    wait_for,
    worker_env,
)

JOBS = 5


def stored_result(app: Any, job_id: str, name: str) -> dict[str, Any]:
    from tasks.runtime import job_store

    return dict(job_store(app).require(job_id).destinations[name].result or {})


def test_two_dependencies_ending_together_start_their_dependent_once(
    app: Any, session_worker: WorkerProcess, tmp_path: Path
) -> None:
    # The session worker (--pool threads -c 8) runs JOBS jobs at once; in each, alpha
    # and beta wait for each other, then record their outcomes at the same moment:
    # both can see the other's outcome, and both may try to start joined.
    from worker import enqueue_export

    log = tmp_path / "exports.jsonl"
    jobs = []
    for number in range(JOBS):
        record = write_record(tmp_path / f"joined-{number}.xml", title=f"joined {number}")
        barrier = f"barrier:2:{tmp_path / f'barrier-{number}'}"
        context = make_context(record, log, alpha=barrier, beta=barrier)
        jobs.append(enqueue_export(context, destinations=["alpha", "beta", "joined"], app=app))
    finished = [job.wait(timeout=60) for job in jobs]

    for job in finished:
        assert job.satisfied, {n: (s.state, s.error) for n, s in job.destinations.items()}
        # The chord finished it: it did not wait for a part added twice, until the sweep.
        assert f"job {job.id}: every destination ended" not in session_worker.log()
    runs = read_log(log)
    sessions = {job.session_identifier for job in finished}
    assert Counter((run["name"], run["session"]) for run in runs) == Counter(
        (name, session) for session in sessions for name in ("alpha", "beta", "joined")
    )
    for job in finished:
        mine = {run["name"]: run for run in runs if run["session"] == job.session_identifier}
        assert mine["joined"]["saw"] == ["alpha", "beta"]
        assert mine["joined"]["start"] >= max(mine["alpha"]["end"], mine["beta"]["end"])
        assert stored_result(app, job.id, "joined")["metadata"]["saw"] == {
            "alpha": True,
            "beta": True,
        }


def test_a_dependent_runs_after_its_failed_dependencies_and_sees_their_failures(
    app: Any, record: Path, export_log: Path
) -> None:
    # alpha refuses the record; beta stays busy until its two attempts are used up.
    from worker import enqueue_export

    context = make_context(record, export_log, alpha="fail", beta="transient:9")
    job = enqueue_export(context, destinations=["alpha", "beta", "joined"], app=app)
    job = job.wait(timeout=60)

    assert job.finished and not job.satisfied
    states = {name: status.state for name, status in job.destinations.items()}
    assert states == {"alpha": "FAILURE", "beta": "FAILURE", "joined": "SUCCESS"}
    runs = read_log(export_log)
    joined = [run for run in runs if run["name"] == "joined"]
    assert len(joined) == 1
    assert joined[0]["saw"] == ["alpha", "beta"]
    assert joined[0]["start"] >= max(run["end"] for run in runs if run["name"] != "joined")
    metadata = stored_result(app, job.id, "joined")["metadata"]
    assert metadata["saw"] == {"alpha": False, "beta": False}
    assert metadata["saw_errors"]["alpha"] == "alpha refused the record"
    assert "gave up after 2 attempts" in metadata["saw_errors"]["beta"]
    # The job is finished as soon as the finish's compare-and-set ran; Celery stores the
    # finish's own state a moment later.
    finish = app.AsyncResult(job.finish_task_id)
    assert wait_for(lambda: finish.state not in ("PENDING", "STARTED"), timeout=30)
    assert finish.state == "FAILURE"


def finished_on(
    survivor: WorkerProcess, job_id: str, client: dict[str, str], timeout: float
) -> dict[str, Any]:
    """The job once finished (``status --watch``), with the survivor's log if it never does."""
    try:
        status = nx_export("status", job_id, "--watch", "--json", env=client, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"job {job_id} did not finish:\n{survivor.log()}")
    assert status.returncode == 0, status.stderr
    job: dict[str, Any] = json.loads(status.stdout)
    return job


@pytest.mark.parametrize("point", ["claimed", "counted", "added"])
def test_a_worker_killed_while_adding_a_dependent_loses_nothing(
    point: str, start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    # The worker dies once alpha's outcome is stored, at ``point`` of adding linked to
    # the chord (see tests/plugins); alpha's task comes back to the next worker.
    log = tmp_path / "exports.jsonl"
    settings = {
        "NX_EXPORT_VISIBILITY_TIMEOUT": "4",
        "NX_EXPORT_HEARTBEAT_SECONDS": "5",
        "NX_TEST_EXPORT_LOG": str(log),
    }
    redis = start_redis()
    doomed = start_worker(
        "doomed", redis=redis, plugins=True, NX_TEST_KILL_ON_ADD_TO_CHORD=point, **settings
    )
    client = worker_env(doomed.env["NX_EXPORT_BROKER_URL"], None)
    record = write_record(tmp_path / "record.xml", title="killed while adding")
    arguments = enqueue_arguments(record, "--destination", "alpha", "--destination", "linked",
                                  "--json", session="killed-while-adding")  # fmt: skip
    enqueued = nx_export(*arguments, env=client)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = json.loads(enqueued.stdout)["job_id"]
    assert doomed.process is not None
    wait_for(lambda: doomed.process is not None and doomed.process.poll() is not None, timeout=30)
    # Another thread of the doomed worker may have run linked, once added, before the
    # kill at "added" (alpha's count comes after it): what matters is that nothing is
    # lost and nothing runs twice once the survivor has finished the job.
    assert [run["name"] for run in read_log(log)] in (["alpha"], ["alpha", "linked"])

    survivor = start_worker("survivor", redis=redis, plugins=True, **settings)
    job = finished_on(survivor, job_id, client, timeout=90)
    assert job["satisfied"] is True, job
    assert {n: d["state"] for n, d in job["destinations"].items()} == {
        "alpha": "SUCCESS",
        "linked": "SUCCESS",
    }
    assert sorted(run["name"] for run in read_log(log)) == ["alpha", "linked"]
    if point != "counted":
        # The chord ran the finish itself: the sweep had nothing to make up for.
        assert "its finish did not" not in survivor.log()


def test_a_dependent_whose_task_was_lost_fails_with_the_reason_and_a_retry_runs_it(
    app: Any, record: Path, export_log: Path
) -> None:
    # A forged claim makes alpha believe another task added linked: the chord then
    # ends without it. The job must not call it skipped (there is no first success
    # here); it is a failure saying what happened, and a retry sends it.
    from tasks.jobs import retry_failed
    from worker import enqueue_export

    context = make_context(record, export_log, alpha="sleep:1")
    job = enqueue_export(context, destinations=["alpha", "linked"], app=app)
    app.backend.client.set(f"nxexport:started:{job.id}:1:linked", "forged-task-id", ex=600)
    done = job.wait(timeout=60)

    assert done.finished and not done.satisfied
    lost = done.destinations["linked"]
    assert lost.state == "FAILURE", (lost.state, lost.error)
    assert "never ran: its task was lost" in str(lost.error)
    assert [run["name"] for run in read_log(export_log)] == ["alpha"]
    again = retry_failed(done.id, app=app).wait(timeout=60)
    assert again.satisfied, {n: (s.state, s.error) for n, s in again.destinations.items()}
    assert sorted(run["name"] for run in read_log(export_log)) == ["alpha", "linked"]


def test_a_worker_killed_holding_the_unacked_mutex_delays_nobody_for_long(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    # The worker dies inside kombu's scan for unacknowledged messages, holding its mutex
    # (tests/plugins: NX_TEST_KILL_IN_RESTORE) and alpha's task. The mutex must lapse
    # soon after the visibility timeout, not after kombu's default 5 minutes.
    log = tmp_path / "exports.jsonl"
    # The dead worker's lease on alpha lapses in 3 s, before its task comes back.
    settings = {"NX_EXPORT_VISIBILITY_TIMEOUT": "4", "NX_EXPORT_LEASE_SECONDS": "3",
                "NX_TEST_EXPORT_LOG": str(log), "NX_TEST_ALPHA_BEHAVIOUR": "sleep:2"}  # fmt: skip
    redis = start_redis()
    doomed = start_worker("doomed", redis=redis, plugins=True, NX_TEST_KILL_IN_RESTORE="1",
                          **settings)  # fmt: skip
    client = worker_env(doomed.env["NX_EXPORT_BROKER_URL"], None)
    record = write_record(tmp_path / "record.xml", title="killed in restore")
    enqueued = nx_export(*enqueue_arguments(record, "--destination", "alpha", "--json",
                                            session="killed-in-restore"), env=client)  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = json.loads(enqueued.stdout)["job_id"]
    wait_for(lambda: doomed.process is not None and doomed.process.poll() is not None, 30)
    assert redis.client().exists("unacked_mutex")  # the dead worker's, still held
    survivor = start_worker("survivor", redis=redis, plugins=True, **settings)
    assert finished_on(survivor, job_id, client, timeout=60)["satisfied"] is True
