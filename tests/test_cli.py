"""``nx-export`` as an operator runs it: real processes, real Redis, exit statuses."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.samples import enqueue_arguments, make_context, record_text
from tests.support import PROJECT_ROOT, StartWorker, WorkerProcess, nx_export, wait_for, worker_env


def test_enqueue_wait_exits_0_when_satisfied(session_worker: Any, record: Path) -> None:
    done = nx_export(*enqueue_arguments(record, "--destination", "alpha", "--wait", "--json"))
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["satisfied"] is True
    assert job["destinations"]["alpha"]["state"] == "SUCCESS"


def test_enqueue_wait_exits_1_when_not_satisfied(session_worker: Any, record: Path) -> None:
    arguments = enqueue_arguments(
        record, "--destination", "alpha", "--destination", "failing", "--wait"
    )
    done = nx_export(*arguments)
    assert done.returncode == 1, done.stderr
    assert "failing: FAILURE" in done.stdout
    assert "failing refused the record" in done.stdout
    # Which session it was, in the text an operator reads, as in --json.
    job_id = done.stdout.splitlines()[0]
    shown = nx_export("status", job_id)
    assert "session=cli-session instrument=FEI-Titan-TEM-635816" in shown.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"record": "missing.xml"}, "does not exist"),
        ({"--end": "2026-03-04T08:00:00-05:00"}, "before it starts"),
        ({"--session-id": " "}, "session_identifier is empty"),
        ({"--start": "yesterday"}, "--start 'yesterday' is not an ISO 8601"),
        ({"--strategy": "most"}, "unknown strategy 'most'"),
        ({"--destination": "nowhere"}, "unknown destination 'nowhere'"),
        ({"content": "not xml at all"}, "is not XML"),
        ({"content": "<nx:Experiment xmlns:nx='x'><unclosed></nx:Experiment>"}, "not well-formed"),
        ({"content": "<html/>"}, "root element 'html'"),
        ({"content": ""}, "is empty"),
    ],
)
def test_bad_input_exits_2_with_a_specific_message(
    session_worker: Any, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    record = tmp_path / "record.xml"
    record.write_text(change.pop("content", record_text("t")), encoding="utf-8")
    if "record" in change:
        record = tmp_path / change.pop("record")
    arguments = enqueue_arguments(record)
    for option, value in change.items():
        if option in arguments:
            arguments[arguments.index(option) + 1] = value
        else:
            arguments += [option, value]
    if "--destination" not in change:
        arguments += ["--destination", "alpha"]
    done = nx_export(*arguments)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_status_survives_a_worker_restart(start_worker: StartWorker, record: Path) -> None:
    worker = start_worker("restart", plugins=True)
    done = nx_export(*enqueue_arguments(record, "--destination", "beta", "--wait", "--json"))
    job_id = json.loads(done.stdout)["id"]
    worker.stop()
    start_worker("restart", plugins=True)
    status = nx_export("status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    job = json.loads(status.stdout)
    assert job["id"] == job_id and job["state"] == "finished"
    assert job["destinations"]["beta"]["record_id"] == "beta-cli-session"


def test_status_of_unknown_job_exits_2(session_worker: Any) -> None:
    done = nx_export("status", "no-such-job")
    assert done.returncode == 2
    assert "no job no-such-job" in done.stderr


def test_destinations_check_names_the_failing_destination(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    env = {
        **worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
        "NX_EXPORT_LOCAL_PATH": str(blocked),
    }
    done = nx_export("destinations", "--check", "--json", env=env)
    assert done.returncode == 1
    rows = {row["name"]: row for row in json.loads(done.stdout)["destinations"]}
    assert rows["local"]["enabled"] is True
    assert rows["local"]["valid"] is False
    assert "not writable" in rows["local"]["problem"]


def test_destinations_check_names_redis_when_redis_is_the_problem(tmp_path: Path) -> None:
    env = worker_env("redis://:hunter2-password@127.0.0.1:1/0", None)
    done = nx_export("destinations", "--check", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "Redis unreachable at 127.0.0.1:1 (ConnectionError)" in done.stderr
    assert json.loads(done.stdout)["redis"].startswith("Redis unreachable at 127.0.0.1:1")
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.processes
def test_destinations_check_starts_the_private_redis_it_checks(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_")}
    env["NX_EXPORT_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    try:
        done = nx_export("destinations", "--check", "--json", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["redis"] == "ok"
        assert "ConnectionError" not in done.stderr
    finally:
        nx_export("redis", "stop", env=env, cwd=tmp_path)


@pytest.mark.processes
def test_demo_runs_on_the_embedded_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_")}
    env["NX_EXPORT_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    done = nx_export("demo", "--json", env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    # It enqueues once its worker is up, so nothing warns of a destination nobody serves.
    assert "no live worker serves" not in done.stderr
    report = json.loads(done.stdout)
    assert len(report["jobs"]) == 3
    assert all(job["destinations"]["local"]["state"] == "SUCCESS" for job in report["jobs"])
    archived = sorted(p.name for p in Path(report["archive"]).rglob("*.xml"))
    assert archived == [
        "demo-jeol-2026-11-04.xml",
        "demo-quanta-2026-11-03.xml",
        "demo-titan-2026-11-02.xml",
    ]
    # Its worker read the samples from NX_RECORDS_PATH, the folder they are in.
    log = (tmp_path / "state" / "demo-worker.log").read_text()
    samples = PROJECT_ROOT / "worker" / "samples"
    assert f"records: read only below NX_RECORDS_PATH ({samples})" in log
    # The demo stops the private Redis it started: no pid file and no socket are left.
    assert not (tmp_path / "state" / "redis.pid").exists()
    assert not (tmp_path / "state" / "redis.sock").exists()


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    env = {
        **worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
        "NX_EXPORT_RETENTION_DAYS": "soon",
    }
    done = nx_export("status", "any", env=env)
    assert done.returncode == 2
    assert "NX_EXPORT_RETENTION_DAYS" in done.stderr and "'soon'" in done.stderr


def test_retry_and_jobs_commands(session_worker: Any, record: Path) -> None:
    done = nx_export(*enqueue_arguments(record, "--destination", "failing", "--wait", "--json"))
    job_id = json.loads(done.stdout)["id"]
    listed = nx_export("jobs", "--failed", "--json")
    assert listed.returncode == 0
    assert job_id in {job["id"] for job in json.loads(listed.stdout)}
    retried = nx_export("retry", job_id, "--wait", "--json")
    assert retried.returncode == 1  # it fails again
    job = json.loads(retried.stdout)
    assert job["runs"] == 2
    assert job["destinations"]["failing"]["attempts"] == 2
    refused = nx_export("retry", job_id, "--destination", "nowhere")
    assert refused.returncode == 2 and "has no destination nowhere" in refused.stderr


def test_strict_startup_refuses_a_worker_with_a_failing_destination(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    env = {
        **worker_env(os.environ["NX_EXPORT_BROKER_URL"], None),
        "NX_EXPORT_LOCAL_PATH": str(blocked),
        "NX_EXPORT_STRICT_STARTUP": "true",
    }
    done = nx_export("worker", env=env, timeout=60)
    assert done.returncode == 2
    assert "NX_EXPORT_STRICT_STARTUP" in done.stderr and "local: " in done.stderr
    assert "not writable" in done.stderr


def test_worker_reports_its_destinations_at_start(session_worker: WorkerProcess) -> None:
    log = session_worker.log()
    # Celery's own banner names the queues and tasks too: look for the report's lines.
    for line in (
        "destination alpha: enabled=yes priority=300 depends_on=- queue=export.alpha check=ok",
        "destination linked: enabled=yes priority=250 depends_on=alpha queue=export.linked",
        "destination local: enabled=yes priority=50 depends_on=- queue=export.local check=ok "
        "origin=built-in",
        "destination cdcs: enabled=no",
        "destination plugin skipped: entry point nx_test_destinations:Broken: could not be",
    ):
        assert line in log, line
    # At start: before the worker takes any task.
    assert log.index("destination alpha: enabled=yes") < log.index(" ready.")


def test_a_paused_destination_waits_while_the_others_complete(app: Any, record: Path) -> None:
    from worker import enqueue_export

    paused = nx_export("pause", "beta")
    assert paused.returncode == 0, paused.stderr
    assert "no longer consuming" in paused.stdout
    try:
        job = enqueue_export(
            make_context(record), strategy="best_effort", destinations=["alpha", "beta"], app=app
        )
        with pytest.raises(TimeoutError):
            job.wait(timeout=3)
        job = job.refresh()
        assert job.destinations["alpha"].state == "SUCCESS"
        assert job.destinations["beta"].state == "PENDING"
    finally:
        resumed = nx_export("resume", "beta")
    assert resumed.returncode == 0 and "add consumer" in resumed.stdout
    finished = job.wait(timeout=30)
    assert finished.satisfied and finished.destinations["beta"].state == "SUCCESS"


def test_a_failed_destination_is_one_error_line_in_the_worker_log(
    session_worker: WorkerProcess, app: Any, record: Path
) -> None:
    from tasks.canvas import chord_group_id, step_task_id
    from worker import enqueue_export

    context = make_context(record)
    job = enqueue_export(context, destinations=["alpha", "failing"], app=app)
    assert not job.wait(timeout=30).satisfied
    ids = (step_task_id(job.id, 1, "failing"), chord_group_id(job.id, 1), job.finish_task_id)

    def errors() -> list[str]:
        return [line for line in session_worker.log().splitlines()
                if "ERROR/" in line and any(str(i) in line for i in ids)]  # fmt: skip

    # Both tasks' lines are written just after the job finished.
    wait_for(lambda: all(f"[{i}] raised" in session_worker.log() for i in (ids[0], ids[2])))
    only = errors()
    assert len(only) == 1, [line for line in session_worker.log().splitlines()
                            if any(str(i) in line for i in ids)]  # fmt: skip
    (only,) = only
    assert f"export.failing[{ids[0]}] raised" in only and "failing refused the record" in only
    # The job's failure and the chord's are still told, below ERROR.
    assert f"export.finish[{job.finish_task_id}] raised expected" in session_worker.log()


def test_a_follower_waits_out_redis_going_away() -> None:
    import redis

    from worker.cli import options

    class Job:
        id, answers = "job-away", ["gone", "gone", "back"]

        def wait(self, timeout: float) -> Any:
            raise TimeoutError

        def refresh(self) -> Any:
            if self.answers.pop(0) == "gone":
                raise redis.ConnectionError("Connection reset by peer")
            return "the job as it now stands"

    job = Job()
    # Redis away: the job as last seen, twice; back: the job as it now stands.
    assert options.step(job) is job and options.step(job) is job
    assert options.step(job) == "the job as it now stands"
    # Away for longer than the patience: the error, not an endless wait.
    job.answers = ["gone"]
    options._redis_away_since[job.id] = time.monotonic() - 1000
    with pytest.raises(redis.ConnectionError):
        options.step(job)
