"""``nx-export retry --failed``: every failed job of a filter retried in one command, each once.

An outage is a test destination that fails until a flag file exists
(``fail-until:<path>``); every test keeps to jobs of an instrument of its own.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    failed_gamma_jobs,
    nx_export,
    nx_export_in_background,
    read_log,
    worker_env,
)


def exports(log: Path) -> Counter[tuple[str, str]]:
    """How many times each (destination, session) was exported."""
    return Counter((line["name"], line["session"]) for line in read_log(log))


def test_one_command_retries_every_failed_job_of_the_filter(
    app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from tasks.jobs import get_job

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag)
    # Another instrument's failed job: outside the filter, left alone.
    other = failed_gamma_jobs(app, record, export_log, flag, count=1)[0]
    flag.touch()  # the outage is over

    instrument = jobs[0].instrument_pid
    done = nx_export("retry", "--failed", "--destination", "gamma", "--instrument", instrument,
                     "--wait", "--json", timeout=120)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"retried": 5, "skipped": 0, "refused": 0}
    assert {entry["job_id"] for entry in summary["retried"]} == {job.id for job in jobs}
    assert all(entry["destinations"] == ["gamma"] for entry in summary["retried"])
    assert sorted(summary["wait"]["satisfied"]) == sorted(job.id for job in jobs)
    assert summary["wait"]["not_satisfied"] == summary["wait"]["unfinished"] == []
    for job in jobs:
        now = get_job(job.id, app=app)
        assert now.satisfied and now.runs == 2
    # gamma ran twice (the failure, then the retry); alpha, which had succeeded, once.
    counted = exports(export_log)
    for job in jobs:
        assert counted[("alpha", job.session_identifier)] == 1
        assert counted[("gamma", job.session_identifier)] == 2
    assert get_job(other.id, app=app).runs == 1


def test_dry_run_lists_what_jobs_failed_lists_and_changes_nothing(
    app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from tasks.jobs import get_job

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag, count=3)
    flag.touch()
    instrument = jobs[0].instrument_pid
    before = read_log(export_log)

    listed = nx_export("jobs", "--failed", "--instrument", instrument, "--json")
    dry = nx_export("retry", "--failed", "--instrument", instrument, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    summary = json.loads(dry.stdout)
    assert summary["dry_run"] is True and summary["counts"]["retried"] == 3
    # One query: the jobs a retry would take are the ones `jobs --failed` lists, in its order.
    assert [entry["job_id"] for entry in summary["retried"]] == [
        job["id"] for job in json.loads(listed.stdout)
    ]
    assert all(entry["destinations"] == ["gamma"] for entry in summary["retried"])
    text = nx_export("retry", "--failed", "--instrument", instrument, "--dry-run")
    assert "would retry: 3 job(s)" in text.stdout
    assert all(job.id in text.stdout for job in jobs)
    for job in jobs:
        now = get_job(job.id, app=app)
        assert now.runs == 1 and not now.satisfied and now.finished
    assert read_log(export_log) == before


def test_two_bulk_retries_at_once_retry_each_job_once(
    app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from tasks.jobs import get_job

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag)
    flag.touch()
    arguments = ("retry", "--failed", "--instrument", jobs[0].instrument_pid, "--json")
    env = worker_env(os.environ["NX_EXPORT_BROKER_URL"], None)
    with (
        nx_export_in_background(*arguments, env=env) as first,
        nx_export_in_background(*arguments, env=env) as second,
    ):
        answers = [process.communicate(timeout=120) for process in (first, second)]
    assert first.returncode == second.returncode == 0, answers
    summaries = [json.loads(out) for out, _ in answers]
    retried = [entry["job_id"] for s in summaries for entry in s["retried"]]
    assert sorted(retried) == sorted(job.id for job in jobs)  # each job by one of them
    for summary in summaries:
        assert summary["counts"]["refused"] == 0
        # What one found and the other had retried first is counted as skipped.
        assert all(e["reason"].startswith("being retried elsewhere") for e in summary["skipped"])
        assert {e["job_id"] for e in summary["skipped"]} <= set(retried) - {
            e["job_id"] for e in summary["retried"]
        }
    for job in jobs:
        now = get_job(job.id, app=app)
        assert now.runs == 2
    counted = exports(export_log)
    for job in jobs:
        assert counted[("gamma", job.session_identifier)] == 2


def test_a_job_retried_since_it_was_found_is_skipped_and_counted(
    app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from tasks.bulk_retry import failed_query, find_failed, retry_found
    from tasks.jobs import get_job, retry_failed

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag, count=3)
    found = find_failed(failed_query(instrument=jobs[0].instrument_pid), app)
    assert [candidate.job_id for candidate in found] == [job.id for job in jobs]  # oldest first
    # Someone retries one job by hand between the listing and the bulk retry, and it
    # even finishes (failing again): the bulk retry must not run it a third time.
    retry_failed(jobs[1].id, app=app).wait(timeout=30)
    report = retry_found(found, app=app)
    assert [entry["job_id"] for entry in report.retried] == [jobs[0].id, jobs[2].id]
    assert [entry["job_id"] for entry in report.skipped] == [jobs[1].id]
    assert report.skipped[0]["reason"] == "being retried elsewhere (run 2)"
    assert get_job(jobs[1].id, app=app).runs == 2


def test_a_job_that_cannot_be_retried_is_refused_with_its_reason(
    app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from tasks.bulk_retry import failed_query, find_failed, retry_found

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag, count=2)
    found = find_failed(failed_query(instrument=jobs[0].instrument_pid), app)
    report = retry_found(found, destination="beta", app=app)  # not a destination of these jobs
    assert report.retried == report.skipped == []
    assert [entry["reason"] for entry in report.refused] == [
        f"job {job.id} has no destination beta" for job in jobs
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("some-job", "--failed"), "either a JOB_ID or --failed, not both"),
        ((), "give the JOB_ID to retry, or --failed"),
        (("some-job", "--since", "2026-01-01"), "--since only go with --failed"),
        (("--failed", "--destination", "alpha", "--destination", "beta"), "names one destination"),
        (("--failed", "--since", "last week"), "--since 'last week' is not an ISO 8601"),
    ],
)
@pytest.mark.processes
def test_bad_arguments_exit_2_with_a_clear_message(
    arguments: tuple[str, ...], message: str
) -> None:
    done = nx_export("retry", *arguments)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
