"""Showing jobs to people (rich on a terminal, plain lines elsewhere) and to scripts (JSON)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from tasks.jobs import ExportJob
from tasks.store.model import DestinationState
from worker.backfill import BackfillReport

STATE_STYLES = {
    DestinationState.SUCCESS: "green",
    DestinationState.FAILURE: "red",
    DestinationState.RETRY: "yellow",
    DestinationState.STARTED: "cyan",
    DestinationState.PENDING: "dim",
    DestinationState.SKIPPED: "dim",
}


def job_table(job: ExportJob) -> Table:
    verdict = ("satisfied" if job.satisfied else "NOT satisfied") if job.finished else job.state
    table = Table(
        title=f"job {job.id} — session {job.session_identifier} on {job.instrument_pid} — "
        f"{job.strategy}: {verdict}",
        title_justify="left",
    )
    for column in ("destination", "state", "attempts", "record", "error"):
        table.add_column(column, overflow="fold")
    for status in job.destinations.values():
        style = STATE_STYLES.get(status.state, "")
        table.add_row(
            status.name,
            f"[{style}]{status.state}[/]" if style else status.state,
            str(status.attempts),
            status.record_url or status.record_id or "",
            "; ".join(filter(None, (status.retrying, status.error))),
        )
    return table


def job_lines(job: ExportJob) -> list[str]:
    lines = [
        f"job {job.id} session={job.session_identifier} instrument={job.instrument_pid} "
        f"strategy={job.strategy} state={job.state} satisfied={job.satisfied}"
    ]
    for status in job.destinations.values():
        lines.append(
            f"  {status.name}: {status.state} attempts={status.attempts}"
            + (f" record={status.record_url or status.record_id}" if status.record_id else "")
            + (f" ({status.retrying})" if status.retrying else "")
            + (f" error={status.error}" if status.error else "")
        )
    return lines


def print_job(job: ExportJob, as_json: bool, console: Console | None = None) -> None:
    if as_json:
        print(json.dumps(job.to_dict(), indent=2))
        return
    console = console or Console()
    if console.is_terminal:
        console.print(job_table(job))
    else:
        print("\n".join(job_lines(job)))


def follow_job(
    job: ExportJob,
    refresh: Callable[[ExportJob], ExportJob],
    timeout: float | None,
    quiet: bool = False,
) -> ExportJob:
    """Show a job's progress until it finishes (or ``timeout``); return its last state."""
    console = Console(stderr=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    live_view = console.is_terminal and not quiet
    seen: dict[str, tuple[str, int]] = {}

    def plain_progress(current: ExportJob) -> None:
        for status in current.destinations.values():
            key = (status.state, status.attempts)
            if seen.get(status.name) != key:
                seen[status.name] = key
                if not quiet:
                    print(
                        f"{status.name}: {status.state} (attempt {status.attempts})",
                        file=sys.stderr,
                    )

    current = job
    with (
        Live(job_table(current), console=console, refresh_per_second=8)
        if live_view
        else _NoLive() as live
    ):
        while True:
            if live_view:
                live.update(job_table(current))
            else:
                plain_progress(current)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job.id} did not finish within {timeout} s")
            current = refresh(current)


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def update(self, _: Any) -> None:
        return None


def destinations_table(
    rows: list[dict[str, Any]], skipped: list[dict[str, str]], stderr: bool = False
) -> None:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        # Logs and pipes get one line a destination, not a table folded to 80 columns.
        out = sys.stderr if stderr else sys.stdout
        for row in rows:
            check = (
                ""
                if "valid" not in row
                else (" check=ok" if row["valid"] else f" check={row['problem']}")
            )
            print(
                f"destination {row['name']}: enabled={'yes' if row['enabled'] else 'no'} "
                f"priority={row['priority']} depends_on={_dependencies(row, ',') or '-'} "
                f"queue={row['queue']}{check} origin={row['origin']}"
                + (f" (replaces {row['replaces']})" if "replaces" in row else "")
                + _breaker_words(row.get("breaker")),
                file=out,
            )
        for item in skipped:
            print(f"destination plugin skipped: {item['origin']}: {item['reason']}", file=out)
        return
    table = Table(title="destinations", title_justify="left")
    for column in ("name", "enabled", "priority", "depends on", "queue", "check", "origin"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if "valid" not in row:
            check = ""
        elif row["valid"]:
            check = "[green]ok[/]"
        else:
            check = f"[red]{row['problem']}[/]"
        table.add_row(
            row["name"],
            "yes" if row["enabled"] else "no",
            str(row["priority"]),
            _dependencies(row, ", "),
            row["queue"],
            check,
            row["origin"] + (f" (replaces {row['replaces']})" if "replaces" in row else ""),
        )
    console.print(table)
    for item in skipped:
        console.print(f"[yellow]skipped[/] {item['origin']}: {item['reason']}")


def jobs_table(jobs: list[ExportJob]) -> None:
    console = Console()
    if not console.is_terminal:
        for job in jobs:
            failed = [n for n, s in job.destinations.items() if s.state == DestinationState.FAILURE]
            print(
                f"{job.id} {job.created_at} {job.state} satisfied={job.satisfied} "
                f"session={job.session_identifier} failed={','.join(failed) or '-'}"
            )
        return
    table = Table(title=f"{len(jobs)} jobs", title_justify="left")
    for column in ("job", "created", "session", "state", "satisfied", "failed"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        failed = [n for n, s in job.destinations.items() if s.state == DestinationState.FAILURE]
        table.add_row(
            job.id,
            job.created_at or "",
            job.session_identifier or "",
            job.state,
            "yes" if job.satisfied else "[red]no[/]",
            ", ".join(failed),
        )
    console.print(table)


def results_table(jobs: list[ExportJob]) -> None:
    """One row per job and destination, for a batch of jobs."""
    console = Console()
    if not console.is_terminal:
        for job in jobs:
            print("\n".join(job_lines(job)))
        return
    table = Table(title=f"{len(jobs)} jobs", title_justify="left")
    for column in ("session", "destination", "state", "record", "error"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        for status in job.destinations.values():
            style = STATE_STYLES.get(status.state, "")
            table.add_row(
                job.session_identifier or job.id,
                status.name,
                f"[{style}]{status.state}[/]" if style else status.state,
                status.record_url or status.record_id or "",
                status.error or "",
            )
    console.print(table)


@contextmanager
def backfill_progress(
    total: int, quiet: bool, what: str = "enqueuing records"
) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal (stderr); nothing elsewhere. Yields the step function."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda: None
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


def print_backfill(report: BackfillReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would enqueue" if report.dry_run else "enqueued"
    print(f"{verb}: {len(report.enqueued)}, already done: {len(report.already_done)}, "
          f"already exported: {len(report.already_exported)}, refused: {len(report.refused)}"
          + (f", before --since: {report.skipped_before_since}"
             if report.skipped_before_since else ""))  # fmt: skip
    # Every file, not only counts: what a dry run would do is what an operator checks.
    for sent in report.enqueued:
        job = f", job {sent['job_id']}" if sent.get("job_id") else ""
        print(f"  {verb} {sent['file']} (session {sent['session']}{job})")
    for done in report.already_done:
        print(f"  already done {done['file']} (session {done['session']})")
    for entry in report.already_exported:
        held = ", ".join(f"{name} {shown.get('record_id')} (job {shown.get('job_id')})"
                         for name, shown in entry["destinations"].items())  # fmt: skip
        print(f"  already exported {entry['file']} (session {entry['session']}): {held}")
    for entry in report.refused:
        print(f"  refused {entry['file']}: {entry['reason']}")


def _dependencies(row: dict[str, Any], separator: str) -> str:
    """The dependencies in force, and the setting that declared them if one did."""
    named = separator.join(row["depends_on"])
    source = row.get("depends_on_from")
    return f"{named or 'none'} (from {source})" if source else named


def _breaker_words(breaker: dict[str, Any] | None) -> str:
    """`` state=down since … (last error …), N waiting`` for a destination not up, else ""."""
    if not breaker or breaker["state"] == "up":
        return ""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(breaker["down_since"] or 0))
    return (f" state={breaker['state']} since {since} (last error: {breaker['last_error']}), "
            f"{breaker['waiting']} waiting")  # fmt: skip
