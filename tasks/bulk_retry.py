"""Retrying every failed job a filter finds: recovery after an outage in one call.

The jobs are those ``JobQuery(state="failed", ...)`` finds (what ``nx-export jobs
--failed`` lists and the dashboard's failed filter shows). With a destination,
the query keeps the finished jobs whose export to it failed, and only that
destination is run again; without, every destination of the job that failed or
never ran, as a retry of one job does.

Each job is retried with ``retry_failed`` and the number of runs it had when it
was found, so the compare-and-set that settles two retries of one job also
settles a bulk retry against anyone else's: a job retried since it was found
is skipped, never run twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery, current_app

from tasks.jobs import ExportJob, JobNotFoundError, get_job, retry_failed
from tasks.query import MAX_LIMIT, JobQuery, get_jobs, iter_jobs

SKIPPED_REASON = "being retried elsewhere"


def failed_query(
    destination: str | None = None,
    instrument: str | None = None,
    session: str | None = None,
    since: datetime | None = None,
) -> JobQuery:
    """The failed jobs under these filters: the one query of ``jobs --failed``,
    ``retry --failed`` and the dashboard's "Retry all"."""
    return JobQuery(state="failed", destination=destination, instrument=instrument,
                    session=session, since=since, limit=MAX_LIMIT)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """A failed job as it was found: its runs then, and what a retry would run."""

    job_id: str
    session: str | None
    runs: int
    destinations: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "session": self.session,
                "destinations": list(self.destinations)}  # fmt: skip


@dataclass
class BulkRetryReport:
    """What a bulk retry did with each job it found."""

    dry_run: bool = False
    retried: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def found(self) -> int:
        return len(self.retried) + len(self.skipped) + len(self.refused)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "found": self.found,
            "counts": {
                "retried": len(self.retried),
                "skipped": len(self.skipped),
                "refused": len(self.refused),
            },
            "retried": self.retried,
            "skipped": self.skipped,
            "refused": self.refused,
        }


def find_failed(query: JobQuery, app: Celery | None = None) -> list[Candidate]:
    """Every job ``query`` finds, oldest first, as it is now."""
    app = app or current_app
    wanted = (query.destination,) if query.destination else None
    return [
        Candidate(job.id, job.session_identifier, job.runs, wanted or _unsucceeded(job))
        for job in reversed(list(iter_jobs(query, app)))
    ]


def retry_found(
    candidates: Iterable[Candidate],
    destination: str | None = None,
    app: Celery | None = None,
    dry_run: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> BulkRetryReport:
    """Retry each job found (only ``destination`` when given); ``advance`` after each.

    A job whose runs changed since it was found is skipped; one that
    ``retry_failed`` refuses for another reason (nothing left to retry, a
    destination no longer known, the job expired) is reported with the reason.
    """
    app = app or current_app
    report = BulkRetryReport(dry_run=dry_run)
    names = [destination] if destination else None
    for candidate in candidates:
        entry = candidate.to_dict()
        if dry_run:
            report.retried.append(entry)
            advance()
            continue
        try:
            job = retry_failed(candidate.job_id, names, app, expected_runs=candidate.runs)
        except (ValueError, JobNotFoundError) as error:  # ExportRequestError: refused
            _file_refusal(candidate, entry, str(error), app, report)
        else:
            report.retried.append({**entry, "run": job.runs})
        advance()
    return report


def retry_all_failed(
    query: JobQuery, app: Celery | None = None, dry_run: bool = False
) -> BulkRetryReport:
    """``find_failed`` then ``retry_found``, for a caller without a progress bar."""
    return retry_found(find_failed(query, app), query.destination, app, dry_run)


def finished_jobs(job_ids: list[str], app: Celery | None = None) -> list[ExportJob]:
    """Those of ``job_ids`` whose job finished (one read for all of them)."""
    return [job for job in get_jobs(job_ids, app=app) if job.finished]


def _file_refusal(
    candidate: Candidate, entry: dict[str, Any], reason: str, app: Celery,
    report: BulkRetryReport,
) -> None:  # fmt: skip
    try:
        now = get_job(candidate.job_id, app=app)
    except JobNotFoundError as gone:
        report.refused.append({**entry, "reason": str(gone)})
        return
    if now.runs != candidate.runs:
        report.skipped.append({**entry, "reason": f"{SKIPPED_REASON} (run {now.runs})"})
    else:
        report.refused.append({**entry, "reason": reason})


def _unsucceeded(job: ExportJob) -> tuple[str, ...]:
    return tuple(name for name, status in job.destinations.items() if not status.succeeded)
