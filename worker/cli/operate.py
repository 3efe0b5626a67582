"""``nx-export pause``, ``resume``, ``destinations``: what workers take, what is configured."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker.cli.options import celery_app, fail, json_option, settings_and_redis
from worker.settings import SettingsError, load_settings


@click.command()
@click.argument("destination")
@json_option
def pause(destination: str, as_json: bool) -> None:
    """Stop every worker taking DESTINATION's tasks; they wait in its queue."""
    _set_consuming(destination, consume=False, as_json=as_json)


@click.command()
@click.argument("destination")
@json_option
def resume(destination: str, as_json: bool) -> None:
    """Let workers take DESTINATION's tasks again."""
    _set_consuming(destination, consume=True, as_json=as_json)


def _set_consuming(destination: str, consume: bool, as_json: bool) -> None:
    settings_and_redis()
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


@click.command()
@click.option("--check", is_flag=True, help="Run validate_config on every enabled destination.")
@json_option
def destinations(check: bool, as_json: bool) -> None:
    """List the discovered destinations."""
    if check:
        settings = settings_and_redis()  # the checks use Redis: a private one is started
    else:
        try:
            settings = load_settings()
        except SettingsError as error:
            fail(str(error))
    app = celery_app()
    from tasks.runtime import local_registry
    from worker.display import destinations_table
    from worker.startup import destination_rows, failed_checks, skipped_rows

    redis_problem = _redis_problem(app, settings) if check else None
    if redis_problem:
        click.echo(f"error: {redis_problem}", err=True)
    registry = local_registry()
    rows, skipped = destination_rows(registry, check), skipped_rows(registry)
    _add_breaker_states(app, rows)
    stale = _workers_with_other_settings(registry) if check and not redis_problem else []
    if as_json:
        report: dict[str, Any] = {"destinations": rows, "skipped": skipped}
        if check:
            report["redis"] = redis_problem or "ok"
            report["workers_with_other_settings"] = [
                {"worker": worker, "destination": name} for worker, name in stale
            ]
        click.echo(json.dumps(report, indent=2))
    else:
        destinations_table(rows, skipped)
        for worker, name in stale:
            click.echo(
                f"worker {worker} runs {name} with settings other than these (it started "
                "before they changed): restart it to use them",
                err=True,
            )
    if failed_checks(rows) or stale or redis_problem:
        sys.exit(1)


def _add_breaker_states(app: Any, rows: list[dict[str, Any]]) -> None:
    """Each enabled destination's breaker as the workers share it (up, down, probing)."""
    from redis import RedisError

    from tasks.export.outage import breaker_states

    try:
        states = breaker_states(app, [row["name"] for row in rows if row["enabled"]])
    except RedisError as error:
        click.echo(f"warning: whether a destination is down is unknown: Redis unreachable "
                   f"({type(error).__name__})", err=True)  # fmt: skip
        return
    for row in rows:
        if row["name"] in states:
            row["breaker"] = states[row["name"]]


def _redis_problem(app: Any, settings: Any) -> str | None:
    """What is wrong with Redis, said as such (not as each destination's symptom), or None."""
    from redis import RedisError

    try:
        app.backend.client.ping()
    except RedisError as error:
        return (
            f"Redis unreachable at {settings.redis_location} ({type(error).__name__}): "
            "jobs, results, the call limiter and the folder cache all live there"
        )
    return None


def _workers_with_other_settings(registry: Any) -> list[tuple[str, str]]:
    """Live workers whose settings for a destination differ from this environment's."""
    from redis import RedisError

    from tasks import catalog

    try:
        return catalog.workers_with_other_settings(celery_app(), registry)
    except RedisError as error:
        click.echo(
            f"warning: could not compare with the running workers' settings: Redis "
            f"unreachable ({type(error).__name__})",
            err=True,
        )
        return []


@click.group()
def redis() -> None:
    """The private Redis that commands start when no broker is configured."""


@redis.command("status")
@json_option
def redis_status(as_json: bool) -> None:
    """Say whether the private Redis runs (exit 0) or not (exit 1)."""
    settings = _private_redis_settings()
    from worker import embedded_redis

    running = embedded_redis.is_running(settings.embedded_socket)
    if as_json:
        click.echo(json.dumps({"running": running, "socket": str(settings.embedded_socket)}))
    else:
        click.echo(f"private Redis {'running' if running else 'stopped'} ({settings.state_dir})")
    sys.exit(0 if running else 1)


@redis.command("stop")
def redis_stop() -> None:
    """Stop the private Redis, saving its data; the next command starts it again.

    Workers and commands using it stop working until then: stop the workers first.
    """
    settings = _private_redis_settings()
    from worker import embedded_redis

    if not embedded_redis.is_running(settings.embedded_socket):
        click.echo("private Redis already stopped")
        return
    embedded_redis.stop(settings.state_dir)
    if embedded_redis.is_running(settings.embedded_socket):
        fail(f"the private Redis in {settings.state_dir} did not stop; see its redis.log")
    click.echo(f"private Redis stopped; its data stays in {settings.state_dir}")


def _private_redis_settings() -> Any:
    try:
        settings = load_settings()
    except SettingsError as error:
        fail(str(error))
    if not settings.uses_embedded_redis:
        fail("NX_EXPORT_BROKER_URL is set: there is no private Redis; stop that Redis its own way")
    return settings


@click.command("resend-lost")
@json_option
def resend_lost(as_json: bool) -> None:
    """Send again, now, every destination task that is in no queue, held by no worker and
    not running (the sweep does it after NX_EXPORT_LOST_TASK_SECONDS)."""
    settings_and_redis()
    app = celery_app()
    from tasks.lifecycle.lost import resend_lost as resend

    sent = resend(app, grace=0)
    if as_json:
        click.echo(json.dumps([{"job_id": job, "destination": name} for job, name in sent]))
        return
    for job, name in sent:
        click.echo(f"{job}: sent {name} again")
    click.echo(f"{len(sent)} lost task{'' if len(sent) == 1 else 's'} sent again")
