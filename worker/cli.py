"""``nx-export``: run workers, enqueue records, follow jobs, try the embedded demo.

Exit status: 0 when a job's strategy is satisfied, 1 when not, 2 for bad input.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from worker.settings import SettingsError, WorkerSettings, load_settings

BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(BAD_INPUT)


def connect() -> WorkerSettings:
    """Load the settings and, with no broker configured, start or reuse the private Redis."""
    try:
        settings = load_settings()
    except SettingsError as error:
        fail(str(error))
    if settings.uses_embedded_redis:
        from worker import embedded_redis

        try:
            embedded_redis.ensure_running(settings.state_dir)
        except embedded_redis.EmbeddedRedisError as error:
            fail(str(error))
    return settings


def celery_app() -> Any:
    try:
        from worker.app import app
    except SettingsError as error:
        fail(str(error))
    return app


def parse_moment(value: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(
            f"{option} {value!r} is not an ISO 8601 date and time (e.g. 2026-03-04T09:00:00-05:00)"
        )


def show_warnings() -> None:
    """The job API's warnings (e.g. a destination no live worker serves) as ``warning:`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("tasks.jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def step(job: Any) -> Any:
    """Wait briefly for progress, then return the job as it now stands."""
    try:
        return job.wait(timeout=0.25)
    except TimeoutError:
        return job.refresh()


@click.group()
@click.version_option(package_name="nexuslims-export-worker")
def main() -> None:
    """Export NexusLIMS records to every configured destination, in parallel."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker; extra options go to ``celery worker`` (e.g. --pool threads -c 16)."""
    settings = connect()
    app = celery_app()
    from tasks.runtime import local_registry
    from worker.app import all_queues
    from worker.display import destinations_table
    from worker.startup import destination_rows, failed_checks, read_report, skipped_rows

    registry = local_registry()
    rows = destination_rows(registry, check=True)
    destinations_table(rows, skipped_rows(registry), stderr=True)
    for line in read_report():
        click.echo(line, err=True)
    problems = failed_checks(rows)
    if problems and settings.strict_startup:
        fail(
            "NX_EXPORT_STRICT_STARTUP is on and destinations failed their check: "
            + "; ".join(problems)
        )

    arguments = list(ctx.args)
    if not any(arg in ("-Q", "--queues") or arg.startswith("--queues=") for arg in arguments):
        arguments = ["--queues", ",".join(all_queues()), *arguments]
    if not any(arg in ("-l", "--loglevel") or arg.startswith("--loglevel=") for arg in arguments):
        arguments = ["--loglevel", "INFO", *arguments]
    app.worker_main(["worker", "--task-events", *arguments])


FLOWER_COLUMNS = "name,args,state,result,received,runtime,worker"


def flower_option(arguments: list[str], name: str) -> str | None:
    """The value of Flower's option ``name`` as Tornado parses it (``--a-b=v``, ``--a_b=v``)."""
    values = [
        value
        for option, equals, value in (
            a.lstrip("-").partition("=") for a in arguments if a[:1] == "-"
        )
        if equals and option.replace("_", "-") == name
    ]
    return values[-1] if values else None


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower on this app: basic auth required, on 127.0.0.1 unless --address is given."""
    arguments = list(ctx.args)
    # Without auth Flower serves every page but its API to anyone: tasks, results, broker.
    if not (os.environ.get("FLOWER_BASIC_AUTH") or flower_option(arguments, "basic-auth")):
        fail(
            "Flower needs basic auth: set FLOWER_BASIC_AUTH=user:password "
            "or pass --basic-auth=user:password"
        )
    # Flower listens on every interface by default; FLOWER_ADDRESS is Flower's own setting.
    if "FLOWER_ADDRESS" not in os.environ and flower_option(arguments, "address") is None:
        arguments = ["--address=127.0.0.1", *arguments]
    # What an operator needs at a glance: the session (argsrepr), the outcome, where it ran.
    columns = flower_option(arguments, "tasks-columns")
    if "FLOWER_TASKS_COLUMNS" not in os.environ and columns is None:
        arguments = [f"--tasks_columns={FLOWER_COLUMNS}", *arguments]
    connect()
    app = celery_app()
    app.start(["flower", *arguments])


@main.command()
@click.option("--port", type=int, default=5556, show_default=True, help="Port to listen on.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
def dashboard(port: int, address: str) -> None:
    """Run the operators' dashboard: jobs, retries, /metrics (auth: NX_EXPORT_DASHBOARD_AUTH)."""
    from worker.dashboard import AuthSettingError, credentials, serve

    try:
        user, password = credentials(load_settings().dashboard_auth)
    except (SettingsError, AuthSettingError) as error:
        fail(str(error))
    connect()
    serve(celery_app(), user, password, address, port)


@main.command()
@click.argument("record", type=click.Path(path_type=Path))
@click.option("--session-id", default=None, help="The session's identifier [the record's nx:id].")
@click.option(
    "--instrument", default=None, help="Instrument PID [the record's nx:instrument/@pid]."
)
@click.option("--start", "start", default=None, help="Session start, ISO 8601 [reservationStart].")
@click.option("--end", "end", default=None, help="Session end, ISO 8601 [reservationEnd].")
@click.option("--user", default=None, help="The session's user [the record's nx:experimenter].")
@click.option("--strategy", default=None, help="all, first_success or best_effort.")
@click.option("--destination", "destinations", multiple=True, help="Only these destinations.")
@click.option(
    "--job-key",
    default=None,
    help="Idempotency key: the same key again returns the job it enqueued (within the "
    "retention) and runs nothing new.",
)
@click.option("--wait", is_flag=True, help="Follow the job until it finishes.")
@click.option(
    "--timeout", type=float, default=None, help="With --wait: give up after this many seconds."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
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
    connect()
    celery_app()
    show_warnings()
    from tasks.jobs import enqueue_export

    try:
        job = enqueue_export(
            context, strategy=strategy, destinations=list(destinations) or None, job_key=job_key
        )
    except ValueError as error:
        fail(str(error))
    if not wait:
        click.echo(json.dumps({"job_id": job.id}) if as_json else job.id)
        return
    if not as_json:
        click.echo(job.id)
    _finish(job, as_json, timeout)


@main.command()
@click.argument("job_id")
@click.option("--watch", is_flag=True, help="Follow the job until it finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(job_id: str, watch: bool, as_json: bool) -> None:
    """Show a job: its state and every destination's result."""
    connect()
    celery_app()
    from tasks.job_model import JobNotFoundError
    from tasks.jobs import get_job

    try:
        job = get_job(job_id)
    except JobNotFoundError as error:
        fail(str(error))
    if watch:
        _finish(job, as_json, None)
    from worker.display import print_job

    print_job(job, as_json)
    sys.exit(0 if job.satisfied or not job.finished else 1)


def _finish(job: Any, as_json: bool, timeout: float | None) -> NoReturn:
    from tasks.job_model import JobNotFoundError
    from worker.display import follow_job, print_job

    try:
        job = follow_job(job, step, timeout, quiet=as_json)
    except TimeoutError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except JobNotFoundError:
        click.echo(
            f"error: job {job.id} is gone: its record was removed from Redis (flushed, "
            "or restarted without its data) while it was followed",
            err=True,
        )
        sys.exit(1)
    print_job(job, as_json)
    sys.exit(0 if job.satisfied else 1)


@main.command()
@click.argument("destination")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pause(destination: str, as_json: bool) -> None:
    """Stop every worker taking DESTINATION's tasks; they wait in its queue."""
    _set_consuming(destination, consume=False, as_json=as_json)


@main.command()
@click.argument("destination")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def resume(destination: str, as_json: bool) -> None:
    """Let workers take DESTINATION's tasks again."""
    _set_consuming(destination, consume=True, as_json=as_json)


def _set_consuming(destination: str, consume: bool, as_json: bool) -> None:
    connect()
    app = celery_app()
    from destinations.names import queue_name

    queue = queue_name(destination)
    if consume:
        replies = app.control.add_consumer(
            queue, exchange=queue, exchange_type="direct", routing_key=queue, reply=True, timeout=2
        )
    else:
        replies = app.control.cancel_consumer(queue, reply=True, timeout=2)
    if not replies:
        fail("no worker answered; is one running?")
    if as_json:
        click.echo(
            json.dumps({name: answer for reply in replies for name, answer in reply.items()})
        )
        return
    for reply in replies:
        for worker_name, answer in reply.items():
            click.echo(f"{worker_name}: {answer.get('ok') or answer.get('error')}")


@main.command()
@click.argument("job_id")
@click.option("--destination", "destinations", multiple=True, help="Only these destinations.")
@click.option("--wait", is_flag=True, help="Follow the job until it finishes.")
@click.option(
    "--timeout", type=float, default=None, help="With --wait: give up after this many seconds."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def retry(
    job_id: str, destinations: tuple[str, ...], wait: bool, timeout: float | None, as_json: bool
) -> None:
    """Run again the destinations of JOB_ID that failed or never ran."""
    connect()
    celery_app()
    show_warnings()
    from tasks.job_model import JobNotFoundError
    from tasks.jobs import retry_failed

    try:
        job = retry_failed(job_id, list(destinations) or None)
    except (JobNotFoundError, ValueError) as error:
        fail(str(error))
    if wait:
        _finish(job, as_json, timeout)
    from worker.display import print_job

    print_job(job, as_json)


@main.command()
@click.option("--failed", is_flag=True, help="Only finished jobs whose strategy was not satisfied.")
@click.option("--since", default=None, help="Only jobs created at or after this ISO 8601 time.")
@click.option("--destination", default=None, help="Only jobs exporting to this destination.")
@click.option("--instrument", default=None, help="Only jobs of this instrument PID.")
@click.option("--session", default=None, help="Only jobs of this session id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs(
    failed: bool, since: str | None, destination: str | None, instrument: str | None,
    session: str | None, as_json: bool,
) -> None:  # fmt: skip
    """List the jobs kept in Redis (the retention period), oldest first."""
    moment = parse_moment(since, "--since") if since else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.astimezone()
    connect()
    celery_app()
    from tasks.job_index import ensure_indexed
    from tasks.job_query import MAX_LIMIT, JobQuery, iter_jobs
    from tasks.runtime import job_store
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


@main.command()
@click.option("--check", is_flag=True, help="Run validate_config on every enabled destination.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def destinations(check: bool, as_json: bool) -> None:
    """List the discovered destinations."""
    try:
        load_settings()
    except SettingsError as error:
        fail(str(error))
    celery_app()
    from tasks.runtime import local_registry
    from worker.display import destinations_table
    from worker.startup import destination_rows, failed_checks, skipped_rows

    registry = local_registry()
    rows, skipped = destination_rows(registry, check), skipped_rows(registry)
    if as_json:
        click.echo(json.dumps({"destinations": rows, "skipped": skipped}, indent=2))
    else:
        destinations_table(rows, skipped)
    if failed_checks(rows):
        sys.exit(1)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--destination", "destinations", multiple=True, help="Only these destinations.")
@click.option("--strategy", default=None, help="all, first_success or best_effort.")
@click.option("--since", default=None, help="Only sessions that started at or after this time.")
@click.option("--dry-run", is_flag=True, help="Check and list the records; enqueue nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backfill(folder: Path, destinations: tuple[str, ...], strategy: str | None,
             since: str | None, dry_run: bool, as_json: bool) -> None:  # fmt: skip
    """Enqueue every record under FOLDER, each once (running it again enqueues nothing twice).

    Exit 0 when every record is enqueued or already done, 2 when any was refused.
    """
    moment = parse_moment(since, "--since") if since else None
    settings = connect()
    app = celery_app()
    root = app.conf.get("nx_records_path")
    from tasks.jobs import enqueue_export
    from worker.backfill import backfill as run_backfill
    from worker.backfill import find_records
    from worker.display import backfill_progress, print_backfill

    records = find_records(folder)
    with backfill_progress(len(records), quiet=as_json) as advance:
        report = run_backfill(records, enqueue_export, destinations, strategy, moment, dry_run,
                              settings.max_record_bytes, advance,
                              Path(root) if root else None)  # fmt: skip
    print_backfill(report, as_json)
    sys.exit(BAD_INPUT if report.refused else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def demo(as_json: bool) -> None:
    """Export the bundled sample records to a local archive, end to end."""
    from worker.demo import run_demo

    sys.exit(run_demo(as_json))


if __name__ == "__main__":
    main()
