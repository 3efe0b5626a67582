"""Finding jobs through the indexes (``job_index``), newest first, a page at a time.

One filter is walked in creation order (the smallest matching index); the others
are checked by membership in their indexes, and only the jobs of the page are
loaded. A page is continued with its ``next_cursor``: the position (creation
time, job id) of the last job looked at.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery, current_app

from tasks.identifiers import shown
from tasks.jobs import ExportJob, job_from_record
from tasks.runtime import job_store
from tasks.store import index as job_index
from tasks.store.decode import text
from tasks.store.job_store import JobStore
from tasks.store.keys import JOB_INDEX, count_scratch_key
from tasks.store.model import DestinationState, JobState

# The dashboard's and the CLI's state filter: "failed" is finished and not satisfied.
STATE_FILTERS = ("all", "failed", *(state.value for state in JobState))
MAX_LIMIT = 500


class QueryError(ValueError):
    """A filter or cursor that cannot be read; the message says which."""


@dataclass(frozen=True)
class JobQuery:
    """``state`` failed means: finished and not satisfied; with ``destination``,
    finished jobs whose export to that destination failed."""

    state: str = "all"
    destination: str | None = None
    instrument: str | None = None
    session: str | None = None
    since: datetime | None = None
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.state not in STATE_FILTERS:
            known = ", ".join(STATE_FILTERS)
            raise QueryError(f"state must be one of {known} (got {self.state!r})")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT} (got {self.limit})")
        if self.cursor is not None:
            decode_cursor(self.cursor)

    def conditions(self) -> list[list[str]]:
        """The indexes a job must be in: one of each inner list."""
        finished = [
            job_index.state_key(job_index.FINISHED_OK),
            job_index.state_key(job_index.FINISHED_FAILED),
        ]
        found: list[list[str]] = []
        if self.state == "failed" and self.destination:
            found += [[job_index.destination_failure_key(self.destination)], finished]
        elif self.state == "failed":
            found.append([job_index.state_key(job_index.FINISHED_FAILED)])
        elif self.state == JobState.FINISHED:
            found.append(finished)
        elif self.state in (JobState.RUNNING, JobState.QUEUED):
            found.append([job_index.state_key(self.state)])
        if self.destination and self.state != "failed":
            found.append([job_index.destination_key(self.destination)])
        if self.instrument:
            found.append([job_index.instrument_key(self.instrument)])
        if self.session:
            found.append([job_index.session_key(self.session)])
        return found

    def matches(self, job: ExportJob) -> bool:
        """The job as loaded still fits (it may have moved since the indexes were read)."""
        status = job.destinations.get(self.destination) if self.destination else None
        if self.destination and status is None:
            return False
        fits_state = {
            "all": True,
            "failed": job.finished
            and (status.state == DestinationState.FAILURE if status else not job.satisfied),
            JobState.FINISHED.value: job.finished,
            JobState.RUNNING.value: job.state == JobState.RUNNING,
            JobState.QUEUED.value: job.state == JobState.QUEUED,
        }[self.state]
        return (
            fits_state
            and (not self.instrument or job.instrument_pid == self.instrument)
            and (not self.session or job.session_identifier == self.session)
        )


@dataclass
class JobPage:
    jobs: list[ExportJob]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": [job.to_dict() for job in self.jobs], "next_cursor": self.next_cursor}


def encode_cursor(score: float, job_id: str) -> str:
    return f"{score!r}_{job_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    score, _, job_id = cursor.partition("_")
    try:
        position = float(score)
    except ValueError:
        position = math.nan
    # Redis refuses a NaN score; no job was created at infinity or without an id.
    if not math.isfinite(position) or not job_id:
        raise QueryError(f"cursor {shown(cursor)} is not one this server handed out")
    return position, job_id


def find_jobs(query: JobQuery, app: Celery | None = None, store: JobStore | None = None) -> JobPage:
    """One page of the jobs matching ``query``, newest first (from ``app``'s job store)."""
    store = store or job_store(app or current_app)
    client = store.client
    low, driver, filters = _walk(query, store)
    position = decode_cursor(query.cursor) if query.cursor else None
    batch_size = min(MAX_LIMIT, max(100, query.limit * 2))
    found: list[ExportJob] = []
    while len(found) < query.limit:
        batch = _after(client, driver, position, low, batch_size)
        if not batch:
            return JobPage(found, None)
        candidates = _keep_members(client, batch, filters)
        ordered = [(score, job_id) for score, job_id in batch if job_id in candidates]
        position = batch[-1]
        while ordered and len(found) < query.limit:
            # Only as many jobs as the page still needs are loaded, in one round trip.
            need = query.limit - len(found)
            chunk, ordered = ordered[:need], ordered[need:]
            for stored in store.load_many([job_id for _, job_id in chunk]):
                if stored is None:
                    continue  # expired between the index read and now
                job = job_from_record(stored, app)
                if query.matches(job):
                    found.append(job)
            if len(found) == query.limit:
                position = chunk[-1]
    assert position is not None
    return JobPage(found, encode_cursor(*position))


def iter_jobs(query: JobQuery, app: Celery | None = None) -> Iterator[ExportJob]:
    """Every job matching ``query``, newest first, a page at a time."""
    while True:
        page = find_jobs(query, app)
        yield from page.jobs
        if page.next_cursor is None:
            return
        query = JobQuery(**{**query.__dict__, "cursor": page.next_cursor})


def count_jobs(query: JobQuery, app: Celery | None = None, store: JobStore | None = None) -> int:
    """How many jobs the indexes hold under ``query``'s filters, without loading one.

    What ``iter_jobs`` would yield unless a job moves meanwhile (its cursor is
    ignored). Counted inside Redis: the filters' sets intersected into a scratch
    set (Redis walks the smallest), "finished" as neither queued nor running (a
    job is in one state set: the unfinished ones, few, are subtracted), the
    scratch sets deleted in the same transaction.
    """
    store = store or job_store(app or current_app)
    client = store.client
    low, driver, filters = _walk(query, store)
    finished = {job_index.state_key(job_index.FINISHED_OK),
                job_index.state_key(job_index.FINISHED_FAILED)}  # fmt: skip
    singles = [driver, *(c[0] for c in filters if len(c) == 1)]
    groups = [c for c in filters if len(c) > 1]
    if any(set(group) != finished for group in groups):
        return _count_by_walking(client, low, driver, filters)
    token = uuid.uuid4().hex
    base, unfinished = count_scratch_key(token), count_scratch_key(f"{token}:unfinished")
    with client.pipeline(transaction=True) as pipe:
        if len(singles) > 1:
            pipe.zinterstore(base, singles, aggregate="MIN")  # every score: the creation time
        else:
            base = driver
        pipe.zcount(base, low, "+inf")
        for state in (job_index.QUEUED, job_index.RUNNING) if groups else ():
            pipe.zinterstore(unfinished, [job_index.state_key(state), base], aggregate="MIN")
            pipe.zcount(unfinished, low, "+inf")
        pipe.delete(count_scratch_key(token), unfinished)
        answers = pipe.execute()
    counts = answers[1:-1:2] if len(singles) > 1 else answers[0:-1:2]
    return int(counts[0]) - sum(int(count) for count in counts[1:])


def _count_by_walking(client: Any, low: float, driver: str, filters: list[list[str]]) -> int:
    position, total = None, 0
    while batch := _after(client, driver, position, low, MAX_LIMIT):
        total += len(_keep_members(client, batch, filters))
        position = batch[-1]
    return total


def get_jobs(job_ids: list[str], app: Celery | None = None) -> list[ExportJob]:
    """The jobs of these ids that still exist, in the order asked."""
    app = app or current_app
    stored = job_store(app).load_many(job_ids)
    return [job_from_record(record, app) for record in stored if record is not None]


def _walk(query: JobQuery, store: JobStore) -> tuple[float, str, list[list[str]]]:
    """The oldest creation time kept, the index to walk and the indexes to check."""
    low = time.time() - store.retention
    if query.since is not None:
        low = max(low, query.since.timestamp())
    driver, filters = _plan(store.client, query.conditions() or [[JOB_INDEX]])
    return low, driver, filters


def _plan(client: Any, conditions: list[list[str]]) -> tuple[str, list[list[str]]]:
    """Walk the smallest single index; check the others by membership."""
    singles = [c for c in conditions if len(c) == 1]
    if not singles:
        return JOB_INDEX, conditions
    with client.pipeline(transaction=False) as pipe:
        for condition in singles:
            pipe.zcard(condition[0])
        sizes = pipe.execute()
    smallest = singles[sizes.index(min(sizes))]
    return smallest[0], [c for c in conditions if c is not smallest]


def _after(
    client: Any, key: str, position: tuple[float, str] | None, low: float, count: int
) -> list[tuple[float, str]]:
    """Up to ``count`` members after ``position`` (newest first; ties by id, descending)."""
    with client.pipeline(transaction=False) as pipe:
        if position is None:
            pipe.zrevrangebyscore(key, "+inf", low, start=0, num=count, withscores=True)
        else:
            score = position[0]
            pipe.zrevrangebyscore(key, score, score, withscores=True)
            pipe.zrevrangebyscore(key, f"({score!r}", low, start=0, num=count, withscores=True)
        results = pipe.execute()
    members = [(float(s), text(m)) for result in results for m, s in result]
    if position is not None:
        members = [(s, m) for s, m in members if s != position[0] or m < position[1]]
    return members


def _keep_members(
    client: Any, batch: list[tuple[float, str]], filters: list[list[str]]
) -> set[str]:
    ids = [job_id for _, job_id in batch]
    if not filters:
        return set(ids)
    with client.pipeline(transaction=False) as pipe:
        for condition in filters:
            for key in condition:
                pipe.zmscore(key, ids)
        answers = iter(pipe.execute())
    keep = set(ids)
    for condition in filters:
        present: set[str] = set()
        for _ in condition:
            scores = next(answers)
            present |= {job_id for job_id, s in zip(ids, scores, strict=True) if s is not None}
        keep &= present
    return keep

