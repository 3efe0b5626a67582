"""``nx-export worker``, ``flower``, ``dashboard`` and ``demo``: the long-running processes."""

from __future__ import annotations

import os
import sys

import click

from worker.cli.options import celery_app, fail, json_option, settings_and_redis
from worker.settings import SettingsError, load_settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker; extra options go to ``celery worker`` (e.g. --pool threads -c 16)."""
    settings = settings_and_redis()
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


# A failed task's error is its exception (its result is empty): shown in the list, on one line.
FLOWER_COLUMNS = "name,args,state,exception,received,runtime,worker"


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


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower on this app: basic auth required, on 127.0.0.1 unless --address is given."""
    arguments = list(ctx.args)
    # Without auth Flower serves every page but its API to anyone: tasks, results, broker.
    from worker.web_auth import flower_auth_problem

    problem = flower_auth_problem(os.environ.get("FLOWER_BASIC_AUTH"),
                                  flower_option(arguments, "basic-auth"))  # fmt: skip
    if problem:  # no auth, or an empty user or password anyone can send
        fail(problem)
    # Flower listens on every interface by default; FLOWER_ADDRESS is Flower's own setting.
    if "FLOWER_ADDRESS" not in os.environ and flower_option(arguments, "address") is None:
        arguments = ["--address=127.0.0.1", *arguments]
    # What an operator needs at a glance: the session (argsrepr), the outcome, where it ran.
    columns = flower_option(arguments, "tasks-columns")
    if "FLOWER_TASKS_COLUMNS" not in os.environ and columns is None:
        arguments = [f"--tasks_columns={FLOWER_COLUMNS}", *arguments]
    settings_and_redis()
    app = celery_app()
    app.start(["flower", *arguments])


@click.command()
@click.option("--port", type=int, default=5556, show_default=True, help="Port to listen on.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
def dashboard(port: int, address: str) -> None:
    """Run the operators' dashboard: jobs, retries, /metrics (auth: NX_EXPORT_DASHBOARD_AUTH)."""
    from worker.dashboard import AuthSettingError, credentials, serve

    try:
        user, password = credentials(load_settings().dashboard_auth)
    except (SettingsError, AuthSettingError) as error:
        fail(str(error))
    settings_and_redis()
    serve(celery_app(), user, password, address, port)


@click.command()
@json_option
@click.option("--services", is_flag=True,
              help="Also export to local stand-ins of CDCS, eLabFTW and LabArchives "
              "(no account needed; not a test of the real services).")  # fmt: skip
@click.option("--stay", is_flag=True,
              help="Keep the worker (and stand-ins) up until Ctrl-C, to open what it printed.")
def demo(as_json: bool, services: bool, stay: bool) -> None:
    """Export the bundled sample records to a local archive, end to end."""
    from worker.demo import run_demo

    sys.exit(run_demo(as_json, services, stay))
