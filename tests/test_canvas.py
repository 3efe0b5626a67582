"""The canvas: a dependent waits only for what it needs, prepares beside it; failures show."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.samples import make_context
from tests.support import nx_export, read_log, worker_env


def enqueue(app: Any, context: dict[str, Any], **options: Any) -> Any:
    from worker import enqueue_export

    return enqueue_export(context, app=app, **options)


def runs_by_name(log: Path) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in read_log(log)}


def task_state(app: Any, job: Any, name: str) -> str:
    from tasks.runtime import job_store

    entry = job_store(app).require(job.id).destinations[name]
    return str(app.AsyncResult(entry.task_id).state)


def test_a_dependent_starts_when_its_own_dependency_ends(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="sleep:1", beta="sleep:3")
    job = enqueue(app, context, destinations=["alpha", "beta", "linked"]).wait(timeout=30)
    assert job.satisfied
    runs = runs_by_name(export_log)
    assert runs["linked"]["start"] >= runs["alpha"]["end"]
    # It did not wait for beta, which it does not depend on.
    assert runs["linked"]["start"] < runs["beta"]["end"]


def test_previous_results_hold_only_the_dependencies(
    app: Any, record: Path, export_log: Path
) -> None:
    # beta and gamma finish long before alpha; linked still sees only alpha, gamma sees nothing.
    context = make_context(record, export_log, alpha="sleep:0.5", gamma="sleep:0.2")
    job = enqueue(app, context, destinations=["alpha", "beta", "gamma", "linked"])
    assert job.wait(timeout=30).satisfied
    runs = runs_by_name(export_log)
    assert runs["linked"]["saw"] == ["alpha"]
    assert runs["gamma"]["saw"] == []
    assert runs["beta"]["saw"] == []


def test_a_failed_destination_is_a_failed_task_and_everything_else_runs(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="fail")
    job = enqueue(app, context, destinations=["alpha", "beta", "linked"]).wait(timeout=30)
    assert job.finished and not job.satisfied
    assert task_state(app, job, "alpha") == "FAILURE"
    assert "alpha refused the record" in str(app.AsyncResult(_task_id(app, job, "alpha")).result)
    assert task_state(app, job, "beta") == "SUCCESS"
    # The dependent ran after its failed dependency, and saw the failure.
    assert job.destinations["linked"].state == "SUCCESS"
    assert runs_by_name(export_log)["linked"]["saw"] == ["alpha"]


def _task_id(app: Any, job: Any, name: str) -> str:
    from tasks.runtime import job_store

    task_id = job_store(app).require(job.id).destinations[name].task_id
    assert task_id
    return task_id


def test_first_success_tries_the_next_after_a_failed_task(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="fail")
    job = enqueue(app, context, strategy="first_success", destinations=["alpha", "beta", "gamma"])
    job = job.wait(timeout=30)
    assert job.satisfied
    assert task_state(app, job, "alpha") == "FAILURE"
    assert job.destinations["beta"].state == "SUCCESS"
    assert job.destinations["gamma"].state == "SKIPPED"
    assert [r["name"] for r in read_log(export_log)] == ["alpha", "beta"]


def test_prepare_runs_beside_the_dependency_and_export_sees_it(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log, alpha="sleep:1")
    job = enqueue(app, context, destinations=["alpha", "prepared"]).wait(timeout=30)
    assert job.satisfied
    runs = runs_by_name(export_log)
    assert runs["prepared:prepare"]["start"] < runs["alpha"]["end"]
    assert runs["prepared"]["start"] >= runs["alpha"]["end"]
    assert runs["prepared:prepare"]["saw"] == []
    from tasks.runtime import job_store

    result = job_store(app).require(job.id).destinations["prepared"].result or {}
    assert result["metadata"]["prepared"] == {"page": f"page-{context['session_identifier']}"}


def test_a_slow_prepare_holds_back_only_its_own_export(
    app: Any, record: Path, export_log: Path
) -> None:
    behaviour = {"prepared:prepare": "sleep:1"}
    context = make_context(record, export_log)
    context["metadata"]["behaviour"].update(behaviour)
    job = enqueue(app, context, destinations=["alpha", "beta", "prepared"]).wait(timeout=30)
    assert job.satisfied
    runs = runs_by_name(export_log)
    assert runs["prepared"]["start"] >= runs["prepared:prepare"]["end"]
    assert runs["beta"]["end"] < runs["prepared:prepare"]["end"]


def test_a_failing_prepare_leaves_the_export_to_do_it_all(
    app: Any, record: Path, export_log: Path
) -> None:
    context = make_context(record, export_log)
    context["metadata"]["behaviour"]["prepared:prepare"] = "raise"
    job = enqueue(app, context, destinations=["alpha", "prepared"]).wait(timeout=30)
    assert job.satisfied
    from tasks.runtime import job_store

    result = job_store(app).require(job.id).destinations["prepared"].result or {}
    assert result["metadata"]["prepared"] == {}


def test_a_setting_declares_a_plugins_dependencies(redis_server: Any, plugin_path: Path) -> None:
    env = worker_env(redis_server.url, plugin_path, NX_EXPORT_GAMMA_DEPENDS_ON="alpha,beta")
    done = nx_export("destinations", "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["destinations"]}
    assert rows["gamma"]["depends_on"] == ["alpha", "beta"]
    assert rows["gamma"]["depends_on_from"] == "NX_EXPORT_GAMMA_DEPENDS_ON"
    assert rows["beta"]["depends_on"] == []
    assert os.environ.get("NX_EXPORT_GAMMA_DEPENDS_ON") is None
