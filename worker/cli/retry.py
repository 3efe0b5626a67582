"""``nx-export retry --failed``: every failed job the filters find, retried in one command.

The jobs are the ones ``nx-export jobs --failed`` lists with the same filters
(``tasks.bulk_retry.failed_query``); each is retried as ``nx-export retry
JOB_ID`` would, and one retried by someone else since it was found is skipped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from worker.cli.options import (
    BAD_INPUT,
    celery_app,
    fail,
    parse_moment,
    settings_and_redis,
    show_warnings,
)

F = TypeVar("F", bound=Callable[..., Any])
BULK_FILTERS = {"since": "--since", "instrument": "--instrument", "session": "--session",
                "dry_run": "--dry-run"}  # fmt: skip
POLL_SECONDS = 0.2


def bulk_options(command: F) -> F:
    """``--failed`` and what goes with it, for ``nx-export retry``."""
    for option in reversed([
        click.option("--failed", is_flag=True,
                     help="Retry every finished job whose strategy was not satisfied (as "
                     "`jobs --failed` lists them); with --destination, the jobs whose export "
                     "there failed, and only that destination."),
        click.option("--since", default=None,
                     help="With --failed: only jobs created at or after this ISO 8601 time."),
        click.option("--instrument", default=None, help="With --failed: only this instrument PID."),
        click.option("--session", default=None, help="With --failed: only this session id."),
        click.option("--dry-run", is_flag=True,
                     help="With --failed: list the jobs that would be retried; change nothing."),
    ]):  # fmt: skip
        command = option(command)
    return command


def check_arguments(
    job_id: str | None, destinations: tuple[str, ...], bulk: dict[str, Any]
) -> None:
    """Exit 2 unless exactly one of JOB_ID and --failed is given, with options that fit it."""
    if job_id and bulk["failed"]:
        fail("give either a JOB_ID or --failed, not both (--failed retries every failed job "
             "the filters find)")  # fmt: skip
    if not job_id and not bulk["failed"]:
        fail("give the JOB_ID to retry, or --failed to retry every failed job")
    given = [option for name, option in BULK_FILTERS.items() if bulk.get(name)]
    if job_id and given:
        fail(f"{', '.join(given)} only go with --failed, not with a JOB_ID")
    if bulk["failed"] and len(destinations) > 1:
        fail("with --failed, --destination names one destination (its failures are retried)")


def retry_every_failed(
    destinations: tuple[str, ...], wait: bool, timeout: float | None, as_json: bool,
    since: str | None = None, instrument: str | None = None, session: str | None = None,
    dry_run: bool = False, **_: Any,
) -> NoReturn:  # fmt: skip
    """Find, retry, optionally follow; print the summary and exit.

    Exit 2 when a job was refused, else with ``--wait`` 1 when a retried job was
    not satisfied (or did not finish within ``--timeout``), else 0.
    """
    moment = parse_moment(since, "--since") if since else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.astimezone()
    settings_and_redis()
    celery_app()
    show_warnings()
    logging.getLogger("tasks.jobs").addFilter(_Once())
    from tasks.bulk_retry import failed_query, find_failed, retry_found
    from tasks.runtime import job_store
    from tasks.store.index import ensure_indexed
    from worker.display import backfill_progress

    ensure_indexed(job_store())
    destination = destinations[0] if destinations else None
    started = time.monotonic()
    found = find_failed(failed_query(destination, instrument, session, moment))
    with backfill_progress(len(found), as_json, "retrying jobs") as advance:
        report = retry_found(found, destination, dry_run=dry_run, advance=advance)
    took = time.monotonic() - started
    waited = None
    if wait and not dry_run:
        waited = follow_all([entry["job_id"] for entry in report.retried], timeout, as_json)
    result = {**report.to_dict(), "seconds": round(took, 3)}
    if waited is not None:
        result["wait"] = waited
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_summary(result)
    if report.refused:
        sys.exit(BAD_INPUT)
    sys.exit(1 if waited and (waited["not_satisfied"] or waited["unfinished"]) else 0)


def follow_all(job_ids: list[str], timeout: float | None, quiet: bool) -> dict[str, list[str]]:
    """Wait until every job of ``job_ids`` finished (or ``timeout``); sort them by outcome."""
    from tasks.query import get_jobs
    from worker.display import backfill_progress

    outcome: dict[str, list[str]] = {"satisfied": [], "not_satisfied": [], "unfinished": []}
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(job_ids)
    with backfill_progress(len(pending), quiet, "waiting for the retried jobs") as advance:
        while pending:
            jobs = {job.id: job for job in get_jobs(pending)}
            for job_id in pending:
                job = jobs.get(job_id)
                if job is None or job.finished:  # a job gone from Redis will not finish
                    kind = "unfinished" if job is None else (
                        "satisfied" if job.satisfied else "not_satisfied")  # fmt: skip
                    outcome[kind].append(job_id)
                    advance()
            pending = [job_id for job_id in pending if (job := jobs.get(job_id)) is not None
                       and not job.finished]  # fmt: skip
            if pending and deadline is not None and time.monotonic() > deadline:
                break
            if pending:
                time.sleep(POLL_SECONDS)
    outcome["unfinished"] += pending
    return outcome


def _print_summary(result: dict[str, Any]) -> None:
    counts = result["counts"]
    if result["dry_run"]:
        click.echo(f"would retry: {counts['retried']} job(s)")
        for entry in result["retried"]:
            click.echo(f"  {entry['job_id']} session={entry['session']} "
                       f"destinations={','.join(entry['destinations'])}")  # fmt: skip
        return
    click.echo(f"retried: {counts['retried']}, skipped (being retried elsewhere): "
               f"{counts['skipped']}, refused: {counts['refused']} "
               f"({result['seconds']:.1f} s)")  # fmt: skip
    for kind in ("skipped", "refused"):
        for entry in result[kind]:
            click.echo(f"  {kind} {entry['job_id']} (session {entry['session']}): "
                       f"{entry['reason']}")  # fmt: skip
    waited = result.get("wait")
    if waited is not None:
        click.echo(f"finished: {len(waited['satisfied'])} satisfied, "
                   f"{len(waited['not_satisfied'])} not satisfied"
                   + (f", {len(waited['unfinished'])} not finished" if waited["unfinished"]
                      else ""))  # fmt: skip
        for job_id in waited["not_satisfied"]:
            click.echo(f"  not satisfied: {job_id} (nx-export status {job_id})")
        for job_id in waited["unfinished"]:
            click.echo(f"  not finished: {job_id}")


class _Once(logging.Filter):
    """One warning per message: a bulk retry would otherwise repeat it for every job."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True
