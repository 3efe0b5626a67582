"""``nx-export enqueue``, ``status``, ``retry``, ``jobs``, ``backfill``, ``forget``: the jobs
of a LIMS."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from worker.cli.options import (
    BAD_INPUT,
    celery_app,
    destinations_option,
    fail,
    follow_to_the_end,
    force_option,
    json_option,
    parse_moment,
    settings_and_redis,
    show_warnings,
    strategy_option,
    wait_options,
)
from worker.cli.retry import bulk_options, check_arguments, retry_every_failed


@click.command()
@click.argument("record", type=click.Path(path_type=Path))
@click.option("--session-id", default=None, help="The session's identifier [the record's nx:id].")
@click.option(
    "--instrument", default=None, help="Instrument PID [the record's nx:instrument/@pid]."
)
@click.option("--start", "start", default=None, help="Session start, ISO 8601 [reservationStart].")
@click.option("--end", "end", default=None, help="Session end, ISO 8601 [reservationEnd].")
@click.option("--user", default=None, help="The session's user [the record's nx:experimenter].")
@strategy_option
@destinations_option
@click.option(
    "--job-key",
    default=None,
    help="Idempotency key: the same key again returns the job it enqueued (within the "
    "retention) and runs nothing new.",
)
@force_option
@wait_options
@json_option
def enqueue(
    record: Path,
    session_id: str | None,
    instrument: str | None,
    start: str | None,
    end: str | None,
    user: str | None,
    strategy: str | None,
    destinations: tuple[str, ...],
    job_key: str | None,
    force: bool,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Export RECORD; prints the job id.

    The session's id, instrument, times and user are read from the record;
    the options override what it says.
    """
    from worker.record_input import context_from_record

    overrides = {"session_identifier": session_id, "instrument_pid": instrument,
                 "dt_from": start, "dt_to": end, "user": user}  # fmt: skip
    try:
        context = context_from_record(record, overrides)
    except ValueError as error:
        fail(str(error))
    settings_and_redis()
    celery_app()
    show_warnings()
    from tasks.jobs import enqueue_export

    try:
        job = enqueue_export(
            context, strategy=strategy, destinations=list(destinations) or None, job_key=job_key,
            force=force,
        )
    except ValueError as error:
        fail(str(error))
    if not wait:
        click.echo(json.dumps({"job_id": job.id}) if as_json else job.id)
        return
    if not as_json:
        click.echo(job.id)
    follow_to_the_end(job, as_json, timeout)


@click.command()
@click.argument("job_id")
@click.option("--watch", is_flag=True, help="Follow the job until it finishes.")
@json_option
def status(job_id: str, watch: bool, as_json: bool) -> None:
    """Show a job: its state and every destination's result."""
    settings_and_redis()
    celery_app()
    from tasks.jobs import get_job
    from tasks.store.model import JobNotFoundError

    try:
        job = get_job(job_id)
    except JobNotFoundError as error:
        fail(str(error))
    if watch:
        follow_to_the_end(job, as_json, None)
    from worker.display import print_job

    print_job(job, as_json)
    sys.exit(0 if job.satisfied or not job.finished else 1)


@click.command()
@click.argument("job_id", required=False)
@destinations_option
@bulk_options
@force_option
@wait_options
@json_option
def retry(
    job_id: str | None, destinations: tuple[str, ...], force: bool, wait: bool,
    timeout: float | None, as_json: bool, **bulk: Any,
) -> None:  # fmt: skip
    """Run again the destinations of JOB_ID that failed or never ran.

    With --failed instead of JOB_ID, every failed job the filters find (see
    `jobs --failed`): exit 2 when one was refused, else with --wait 1 when one
    was not satisfied, else 0. --force (one job) exports even what the ledger holds.
    """
    check_arguments(job_id, destinations, bulk)
    if bulk["failed"]:
        retry_every_failed(destinations, wait, timeout, as_json, **bulk)
    assert job_id is not None
    settings_and_redis()
    celery_app()
    show_warnings()
    from tasks.jobs import retry_failed
    from tasks.store.model import JobNotFoundError

    try:
        job = retry_failed(job_id, list(destinations) or None, force=force)
    except (JobNotFoundError, ValueError) as error:
        fail(str(error))
    if wait:
        follow_to_the_end(job, as_json, timeout)
    from worker.display import print_job

    print_job(job, as_json)


@click.command()
@click.option("--failed", is_flag=True, help="Only finished jobs whose strategy was not satisfied.")
@click.option("--since", default=None, help="Only jobs created at or after this ISO 8601 time.")
@click.option("--destination", default=None, help="Only jobs exporting to this destination.")
@click.option("--instrument", default=None, help="Only jobs of this instrument PID.")
@click.option("--session", default=None, help="Only jobs of this session id.")
@json_option
def jobs(
    failed: bool, since: str | None, destination: str | None, instrument: str | None,
    session: str | None, as_json: bool,
) -> None:  # fmt: skip
    """List the jobs kept in Redis (the retention period), oldest first."""
    moment = parse_moment(since, "--since") if since else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.astimezone()
    settings_and_redis()
    celery_app()
    from tasks.query import MAX_LIMIT, JobQuery, iter_jobs
    from tasks.runtime import job_store
    from tasks.store.index import ensure_indexed
    from worker.display import jobs_table

    ensure_indexed(job_store())

    query = JobQuery(
        state="failed" if failed else "all", destination=destination, instrument=instrument,
        session=session, since=moment, limit=MAX_LIMIT,
    )  # fmt: skip
    found = list(iter_jobs(query))[::-1]
    if as_json:
        click.echo(json.dumps([job.to_dict() for job in found], indent=2))
    else:
        jobs_table(found)


@click.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@destinations_option
@strategy_option
@click.option("--since", default=None, help="Only sessions that started at or after this time.")
@click.option("--dry-run", is_flag=True, help="Check and list the records; enqueue nothing.")
@force_option
@json_option
def backfill(folder: Path, destinations: tuple[str, ...], strategy: str | None,
             since: str | None, dry_run: bool, force: bool, as_json: bool) -> None:  # fmt: skip
    """Enqueue every record under FOLDER, each once (running it again enqueues nothing twice).

    A record the export ledger holds, with the same bytes, at every destination
    the job would go to is left out ("already exported"), unless --force.

    Exit 0 when every record is enqueued or already done, 2 when any was refused.
    """
    moment = parse_moment(since, "--since") if since else None
    settings = settings_and_redis()
    app = celery_app()
    root = app.conf.get("nx_records_path")
    from tasks.jobs import enqueue_export
    from worker.backfill import backfill as run_backfill
    from worker.backfill import find_records
    from worker.display import backfill_progress, print_backfill
    from worker.ledger import backfill_lookup

    records = find_records(folder)
    exported = None if force else backfill_lookup(app, destinations, strategy)
    with backfill_progress(len(records), quiet=as_json) as advance:
        report = run_backfill(records, enqueue_export, destinations, strategy, moment, dry_run,
                              settings.max_record_bytes, advance,
                              Path(root) if root else None, exported, force)  # fmt: skip
    print_backfill(report, as_json)
    sys.exit(BAD_INPUT if report.refused else 0)


@click.command()
@click.argument("session")
@click.option("--destination", "destinations", multiple=True, required=True,
              help="The destination whose ledger entry to drop (repeatable).")  # fmt: skip
@json_option
def forget(session: str, destinations: tuple[str, ...], as_json: bool) -> None:
    """Drop SESSION's export-ledger entry at each --destination.

    For a record deleted at the service by hand: the next export of the session
    there goes to the service again. Nothing at the service changes.
    """
    settings_and_redis()
    app = celery_app()
    from tasks.runtime import job_store
    from tasks.store.ledger import Ledger

    ledger = Ledger(job_store(app).client)
    dropped = {name: ledger.forget(name, session) for name in dict.fromkeys(destinations)}
    if as_json:
        shown = {name: entry.to_dict() if entry else None for name, entry in dropped.items()}
        click.echo(json.dumps({"session": session, "forgotten": shown}, indent=2))
        return
    for name, entry in dropped.items():
        if entry is None:
            click.echo(f"{name}: the ledger held nothing for {session}")
        else:
            click.echo(f"{name}: forgot {session} (record {entry.record_id}, exported by job "
                       f"{entry.job_id} at {entry.exported_at})")  # fmt: skip
