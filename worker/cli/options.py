"""What every ``nx-export`` command shares: bad input, settings and Redis, common options."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.settings import SettingsError, WorkerSettings, load_settings

BAD_INPUT = 2
# What Redis restarting or failing over looks like to a client.
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(BAD_INPUT)


def settings_and_redis() -> WorkerSettings:
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


# How long a follower waits for Redis to come back (a restart, a failover) before it gives up.
REDIS_PATIENCE_SECONDS = 120.0
_redis_away_since: dict[str, float] = {}


def step(job: Any) -> Any:
    """Wait briefly for progress, then return the job as it now stands.

    Redis away (restarting, failing over) is waited out, not a traceback: the job
    as last seen is returned until Redis answers again, for ``REDIS_PATIENCE_SECONDS``.
    """
    try:
        try:
            current = job.wait(timeout=0.25)
        except TimeoutError:
            current = job.refresh()
    except REDIS_AWAY:
        away = _redis_away_since.setdefault(job.id, time.monotonic())
        if time.monotonic() - away > REDIS_PATIENCE_SECONDS:
            raise
        time.sleep(0.5)
        return job
    _redis_away_since.pop(job.id, None)
    return current


def follow_to_the_end(job: Any, as_json: bool, timeout: float | None) -> NoReturn:
    from tasks.store.model import JobNotFoundError
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


F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
destinations_option = click.option(
    "--destination", "destinations", multiple=True, help="Only these destinations."
)
strategy_option = click.option(
    "--strategy", default=None, help="all, first_success or best_effort."
)
force_option = click.option(
    "--force", is_flag=True,
    help="Export again even where the export ledger says the session's record already is.",
)  # fmt: skip


def wait_options(command: F) -> F:
    """``--wait`` and ``--timeout``: follow the job until it finishes, or give up."""
    command = click.option(
        "--timeout", type=float, default=None, help="With --wait: give up after this many seconds."
    )(command)
    return click.option("--wait", is_flag=True, help="Follow the job until it finishes.")(command)
