"""Jobs end to end: a real Redis, a real worker process, plugin destinations by entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from destinations.files.record import RecordError
from destinations.plan import ExportRequestError
from tasks.messages import InvalidContextError
from tests.samples import enqueue_arguments, make_context
from tests.support import (
    PLUGIN_DIR,
    PROJECT_ROOT,
    StartRedis,
    StartWorker,
    WorkerProcess,
    nx_export,
    read_log,
    wait_for,
    worker_env,
)


def enqueue(app: Any, context: dict[str, Any], **options: Any) -> Any:
    from worker import enqueue_export

    return enqueue_export(context, app=app, **options)


def test_all_runs_independent_destinations_in_parallel(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="sleep:1", beta="sleep:1", gamma="sleep:1")
    job = enqueue(app, context, strategy="all", destinations=["alpha", "beta", "gamma"]).wait(
        timeout=30
    )
    assert job.satisfied and job.finished
    assert {name: s.state for name, s in job.destinations.items()} == dict.fromkeys(
        ("alpha", "beta", "gamma"), "SUCCESS"
    )
    runs = read_log(export_log)
    # Each export takes 1 s: all three were running at the same moment.
    assert max(r["start"] for r in runs) < min(r["end"] for r in runs), runs


def test_all_is_not_satisfied_when_one_destination_fails(app: Any, record: Path) -> None:
    job = enqueue(app, make_context(record, beta="fail"), strategy="all",
                  destinations=["alpha", "beta"]).wait(timeout=30)  # fmt: skip
    assert not job.satisfied
    assert job.destinations["alpha"].state == "SUCCESS"
    assert job.destinations["beta"].state == "FAILURE"
    assert job.destinations["beta"].error == "beta refused the record"


def test_best_effort_is_satisfied_by_one_success(app: Any, record: Path) -> None:
    job = enqueue(app, make_context(record, alpha="fail", gamma="raise"), strategy="best_effort",
                  destinations=["alpha", "beta", "gamma"]).wait(timeout=30)  # fmt: skip
    assert job.satisfied
    assert job.destinations["gamma"].state == "FAILURE"
    assert "RuntimeError" in (job.destinations["gamma"].error or "")


def test_best_effort_with_every_destination_failing_is_not_satisfied(
    app: Any, record: Path
) -> None:
    job = enqueue(app, make_context(record, alpha="fail", beta="fail"), strategy="best_effort",
                  destinations=["alpha", "beta"]).wait(timeout=30)  # fmt: skip
    assert job.finished and not job.satisfied


def test_first_success_stops_after_the_first_success(
    app: Any, record: Path, export_log: Path
) -> None:
    job = enqueue(app, make_context(record, export_log), strategy="first_success",
                  destinations=["alpha", "beta", "gamma"]).wait(timeout=30)  # fmt: skip
    assert job.satisfied
    assert [r["name"] for r in read_log(export_log)] == ["alpha"]
    assert job.destinations["beta"].state == "SKIPPED"
    assert job.destinations["gamma"].state == "SKIPPED"


def test_first_success_falls_through_failures_in_priority_order(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="fail", beta="raise")
    job = enqueue(app, context, strategy="first_success",
                  destinations=["gamma", "beta", "alpha"]).wait(timeout=30)  # fmt: skip
    assert job.satisfied
    assert [r["name"] for r in read_log(export_log)] == ["alpha", "beta", "gamma"]
    assert job.destinations["gamma"].state == "SUCCESS"


def test_first_success_with_no_success_still_finishes(app: Any, record: Path) -> None:
    job = enqueue(app, make_context(record, alpha="fail", beta="fail"), strategy="first_success",
                  destinations=["alpha", "beta"]).wait(timeout=30)  # fmt: skip
    assert job.finished and not job.satisfied
    assert {s.state for s in job.destinations.values()} == {"FAILURE"}


def test_dependent_runs_after_its_dependency_and_sees_its_result(
    app: Any, record: Path, export_log: Path
) -> None:
    job = enqueue(app, make_context(record, export_log, alpha="sleep:0.5"), strategy="all",
                  destinations=["linked", "alpha", "beta"]).wait(timeout=30)  # fmt: skip
    assert job.satisfied
    runs = {r["name"]: r for r in read_log(export_log)}
    assert runs["linked"]["start"] >= runs["alpha"]["end"]
    assert "alpha" in runs["linked"]["saw"]


def test_dependent_runs_even_when_its_dependency_failed(
    app: Any, record: Path, export_log: Path
) -> None:
    job = enqueue(app, make_context(record, export_log, alpha="fail"), strategy="best_effort",
                  destinations=["alpha", "linked"]).wait(timeout=30)  # fmt: skip
    assert job.destinations["linked"].state == "SUCCESS"
    assert [r["saw"] for r in read_log(export_log) if r["name"] == "linked"] == [["alpha"]]


def test_transient_errors_are_retried_by_celery(app: Any, record: Path) -> None:
    job = enqueue(app, make_context(record, alpha="transient:2"), destinations=["alpha"]).wait(
        timeout=30
    )
    alpha = job.destinations["alpha"]
    assert job.satisfied
    assert alpha.attempts == 3
    assert [h["outcome"] for h in alpha.history] == ["retry", "retry", "success"]


def test_builtin_local_archive_receives_the_record(
    app: Any, record: Path, archive_path: Path
) -> None:
    context = make_context(record)
    job = enqueue(app, context, destinations=["local"]).wait(timeout=30)
    assert job.satisfied
    written = archive_path / "FEI-Titan-TEM-635816" / f"{context['session_identifier']}.xml"
    assert written.read_bytes() == record.read_bytes()
    assert written.with_suffix(".json").exists()


def test_default_strategy_runs_every_enabled_destination(
    start_redis: StartRedis, start_worker: StartWorker, record: Path, tmp_path: Path
) -> None:
    # A Redis of its own: the job is planned over this worker's destinations only.
    plugins = ("Alpha", "Linked", "Gamma")
    worker = start_worker(
        "defaults",
        redis=start_redis(),
        PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), str(PLUGIN_DIR)]),
        NX_EXPORT_PLUGINS=",".join(f"nx_test_destinations:{name}" for name in plugins),
        NX_EXPORT_LOCAL_PATH=str(tmp_path / "archive"),
    )
    # A client like a LIMS: neither the plugins nor the archive's settings, no strategy.
    client = worker_env(worker.env["NX_EXPORT_BROKER_URL"], None)
    done = nx_export(*enqueue_arguments(record, "--wait", "--json"), env=client)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["strategy"] == "all"
    assert {name: status["state"] for name, status in job["destinations"].items()} == {
        "alpha": "SUCCESS",
        "linked": "SUCCESS",
        "gamma": "SUCCESS",
        "local": "SUCCESS",
    }
    assert job["satisfied"] is True


def test_default_destinations_with_a_cycle_are_refused(app: Any, record: Path) -> None:
    # Cycle destinations are enabled in the session worker: its whole catalogue cannot be planned.
    from worker import enqueue_export

    with pytest.raises(ExportRequestError, match="cycle"):
        enqueue_export(make_context(record), app=app)


def test_job_can_be_read_back_by_id(app: Any, record: Path) -> None:
    from worker import get_job

    job = enqueue(app, make_context(record), destinations=["beta"]).wait(timeout=30)
    again = get_job(job.id, app=app)
    assert (
        again.to_dict()["destinations"]["beta"]["record_id"] == job.destinations["beta"].record_id
    )
    assert again.finished and again.satisfied


def test_send_task_from_a_plain_celery_client_completes_a_job(
    app: Any, record: Path, redis_server: Any
) -> None:
    from celery import Celery

    plain = Celery(broker=redis_server.url, backend=redis_server.url)
    plain.conf.task_routes = {"export.record": {"queue": "nx-export"}}
    answer = plain.send_task(
        "export.record",
        kwargs={"context": make_context(record), "strategy": "all", "destinations": ["gamma"]},
    ).get(timeout=30)
    from worker import get_job

    job = get_job(answer["job_id"], app=app).wait(timeout=30)
    assert job.satisfied and job.destinations["gamma"].state == "SUCCESS"


def test_malformed_context_sent_to_the_worker_fails_once_with_the_reason(
    app: Any, redis_server: Any, session_worker: WorkerProcess
) -> None:
    from celery import Celery

    plain = Celery(broker=redis_server.url, backend=redis_server.url)
    result = plain.send_task(
        "export.record", kwargs={"context": {"session_identifier": 5}}, queue="nx-export"
    )
    with pytest.raises(
        InvalidContextError, match=r"^invalid context: xml_file_path: Field required; "
    ) as raised:
        result.get(timeout=30)
    assert "session_identifier: Input should be a valid string" in str(raised.value)
    assert result.state == "FAILURE"
    # Once: the worker ran it a single time and never asked for a retry.
    task = f"export.record[{result.id}]"
    raised_lines = wait_for(
        lambda: [line for line in session_worker.log().splitlines() if f"{task} raised" in line]
    )
    assert len(raised_lines) == 1, raised_lines
    assert f"{task} retry" not in session_worker.log()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"session_identifier": "  "}, InvalidContextError, "session_identifier is empty"),
        ({"dt_to": "2026-03-04T08:00:00-05:00"}, InvalidContextError, "ends .* before it starts"),
        ({"xml_file_path": "missing.xml"}, RecordError, "does not exist"),  # beside the record
        ({"colour": "blue"}, InvalidContextError, "unknown fields: colour"),
    ],
)
def test_bad_context_is_refused_at_enqueue(
    app: Any, record: Path, change: dict[str, Any], error: type[Exception], message: str
) -> None:
    if "xml_file_path" in change:
        change = {"xml_file_path": str(record.parent / change["xml_file_path"])}
    with pytest.raises(error, match=message):
        enqueue(app, {**make_context(record), **change}, destinations=["alpha"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "most"}, "unknown strategy 'most'"),
        ({"destinations": ["nowhere"]}, "unknown destination 'nowhere'"),
        ({"destinations": ["cycle_a", "cycle_b"]}, "cycle"),
        ({"destinations": ["disabled"]}, "unknown destination 'disabled'"),
    ],
)
def test_bad_request_is_refused_at_enqueue_and_nothing_is_queued(
    app: Any, record: Path, options: dict[str, Any], message: str
) -> None:
    client = app.backend.client
    jobs_before = client.zcard("nxexport:jobs")
    with pytest.raises(ExportRequestError, match=message):
        enqueue(app, make_context(record), **options)
    assert client.zcard("nxexport:jobs") == jobs_before
    assert client.llen("export.alpha") == 0


def test_broken_plugins_are_skipped_and_the_worker_runs(session_worker: Any) -> None:
    log = session_worker.log()
    assert "nx_test_destinations:Broken skipped: could not be instantiated" in log
    assert (
        "nx_test_destinations:NotADestination skipped: does not follow the destination contract"
        in log
    )
    assert "nx_test_destinations_that_do_not_exist" in log


def test_job_records_expire_after_the_retention_period(app: Any, record: Path) -> None:
    job = enqueue(app, make_context(record), destinations=["alpha"]).wait(timeout=30)
    ttl = app.backend.client.ttl(f"nxexport:job:{job.id}")
    assert 29 * 86400 < ttl <= 30 * 86400


def test_retries_stop_at_the_configured_number_of_attempts(app: Any, record: Path) -> None:
    # The session worker runs with NX_EXPORT_BETA_MAX_ATTEMPTS=2.
    job = enqueue(app, make_context(record, beta="transient:5"), destinations=["beta"]).wait(
        timeout=30
    )
    beta = job.destinations["beta"]
    assert not job.satisfied
    assert beta.attempts == 2
    assert "gave up after 2 attempts" in (beta.error or "")


def test_a_destinations_retry_settings_are_read_from_dotenv_by_the_worker(
    start_redis: StartRedis, start_worker: StartWorker, record: Path, tmp_path: Path
) -> None:
    # Like every other NX_* setting: the environment first, then ./.env in the worker's folder.
    folder = tmp_path / "facility"
    folder.mkdir()
    (folder / ".env").write_text("NX_EXPORT_GAMMA_MAX_ATTEMPTS=3\nNX_EXPORT_BACKOFF_SECONDS=0.05\n")
    worker = start_worker(
        "dotenv",
        redis=start_redis(),
        cwd=folder,
        PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), str(PLUGIN_DIR)]),
        NX_EXPORT_PLUGINS="nx_test_destinations:Gamma",
        NX_TEST_GAMMA_BEHAVIOUR="transient:10",
    )
    client = worker_env(worker.env["NX_EXPORT_BROKER_URL"], None)
    done = nx_export(
        *enqueue_arguments(record, "--destination", "gamma", "--wait", "--json"), env=client
    )
    assert done.returncode == 1, done.stderr
    gamma = json.loads(done.stdout)["destinations"]["gamma"]
    assert gamma["attempts"] == 3
    assert "gave up after 3 attempts" in gamma["error"]


def test_retry_failed_reruns_only_failed_destinations_with_earlier_results(
    app: Any, record: Path, export_log: Path
) -> None:
    from tasks.jobs import retry_failed

    context = make_context(record, export_log, linked="fail-first:1")
    first = enqueue(app, context, destinations=["alpha", "linked", "beta"]).wait(timeout=30)
    assert not first.satisfied
    assert first.destinations["linked"].state == "FAILURE"

    again = retry_failed(first.id, app=app).wait(timeout=30)
    assert again.satisfied and again.runs == 2
    runs = read_log(export_log)
    assert [r["name"] for r in runs].count("alpha") == 1
    assert [r["name"] for r in runs].count("beta") == 1
    rerun = [r for r in runs if r["name"] == "linked"][-1]
    assert "alpha" in rerun["saw"]
    linked = again.destinations["linked"]
    assert [h["outcome"] for h in linked.history] == ["failure", "success"]
    assert again.destinations["alpha"].record_id == first.destinations["alpha"].record_id


def test_retry_of_a_job_without_failures_is_refused(app: Any, record: Path) -> None:
    from tasks.jobs import retry_failed

    job = enqueue(app, make_context(record), destinations=["alpha"]).wait(timeout=30)
    with pytest.raises(ExportRequestError, match="nothing to retry"):
        retry_failed(job.id, app=app)


def test_jobs_lists_the_unsatisfied_ones(app: Any, record: Path) -> None:
    from tasks.jobs import list_jobs

    good = enqueue(app, make_context(record), destinations=["alpha"]).wait(timeout=30)
    bad = enqueue(app, make_context(record), destinations=["failing"]).wait(timeout=30)
    failed_ids = {job.id for job in list_jobs(failed_only=True, app=app)}
    assert bad.id in failed_ids and good.id not in failed_ids
    assert {good.id, bad.id} <= {job.id for job in list_jobs(app=app)}


def test_a_finished_job_reads_back_unchanged_from_its_finish_summary() -> None:
    from tasks.jobs import DestinationStatus, ExportJob, _finished_summary
    from tasks.store.model import DestinationState, JobState

    failed = DestinationStatus("cdcs", DestinationState.FAILURE, attempts=2, error="refused",
                               history=[{"attempt": 1, "outcome": "retry"}])  # fmt: skip
    done = DestinationStatus("local", DestinationState.SUCCESS, attempts=1, record_id="r-1")
    job = ExportJob(
        id="job-1", strategy="all", state=JobState.FINISHED, satisfied=False,
        destinations={"cdcs": failed, "local": done}, created_at="2026-03-04T09:00:00+00:00",
        finished_at="2026-03-04T09:00:01+00:00", session_identifier="s-1",
        instrument_pid="TEM-1", record="/records/r.xml", finish_task_id="finish-2", runs=2,
    )  # fmt: skip
    assert _finished_summary(job.to_dict(), job) == job
    # Another run's summary, or one not finished, is not taken for this run's end.
    assert _finished_summary({**job.to_dict(), "runs": 1}, job) is None
    assert _finished_summary({**job.to_dict(), "state": "running"}, job) is None
    assert _finished_summary({**job.to_dict(), "id": "job-2"}, job) is None
