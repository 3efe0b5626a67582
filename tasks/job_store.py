"""Jobs in Redis: what was asked, every attempt at every destination, and the outcome.

One hash per job, one field per destination, so the tasks of one job never write
the same field at once. Every key expires after the retention period, and the
index of jobs is trimmed to it, so nothing grows without bound. What the fields
hold, and how a state changes, is ``job_model``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TypeVar, cast

import redis

from tasks.job_model import (
    JOB_FIELD,
    DestinationEntry,
    JobNotFoundError,
    JobRecord,
    StoredJob,
    destination_field,
)
from tasks.messages import redact_message

KEY_PREFIX = "nxexport"
JOB_INDEX = f"{KEY_PREFIX}:jobs"

T = TypeVar("T")


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}"


def prepared_field(name: str) -> str:
    # Beside the destination's entry, not in it: prepare and export are two tasks.
    return f"prepared:{name}"


class JobStore:
    """Read and write job records through the result backend's Redis connection."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self.retention = int(retention_seconds)

    # -- writing -----------------------------------------------------------------------------

    def create(self, job: StoredJob) -> None:
        """Store a new job, every destination of its plan pending."""
        created = datetime.now(UTC)
        record = JobRecord(
            job=replace(job, created_at=created.isoformat()),
            destinations={name: DestinationEntry() for name in job.destinations},
        )
        with self.client.pipeline() as pipe:
            pipe.hset(job_key(job.id), mapping=record.to_fields())
            pipe.expire(job_key(job.id), self.retention)
            pipe.zadd(JOB_INDEX, {job.id: created.timestamp()})
            pipe.zremrangebyscore(JOB_INDEX, "-inf", created.timestamp() - self.retention)
            _index().on_create(pipe, job.id, job.context, job.destinations,
                               created.timestamp(), self.retention)  # fmt: skip
            pipe.execute()

    def begin_run(self, job_id: str, finish_task_id: str) -> None:
        self._update_job(job_id, lambda job: job.begin_run(finish_task_id))
        _index().on_run_state(self.client, job_id, finished=False, satisfied=None,
                              retention=self.retention)  # fmt: skip

    def mark_finished(self, job_id: str, satisfied: bool) -> None:
        self._update_job(job_id, lambda job: job.finish(satisfied))
        _index().on_run_state(self.client, job_id, finished=True, satisfied=satisfied,
                              retention=self.retention)  # fmt: skip

    def start_attempt(self, job_id: str, name: str, task_id: str | None) -> int:
        """Count a new attempt at ``name`` and return its number (1 for the first)."""
        attempt = self._update_entry(job_id, name, lambda entry: entry.start(task_id))
        _index().on_attempt(self.client, job_id, name, self.retention)
        return attempt

    def record_retry(self, job_id: str, name: str, error: str, countdown: float) -> None:
        # Stored like a result's message: a plugin's error may carry a secret or a signed URL.
        safe = redact_message(error)
        self._update_entry(job_id, name, lambda entry: entry.retry(safe, countdown))
        _index().on_retry(self.client, name)

    def record_result(self, job_id: str, name: str, result: dict[str, Any]) -> None:
        self._update_entry(job_id, name, lambda entry: entry.finish(result))
        _index().on_result(self.client, job_id, name, bool(result.get("success")), self.retention)

    def mark_skipped(self, job_id: str, names: Iterable[str], reason: str) -> None:
        for name in names:
            self._update_entry(job_id, name, lambda entry: entry.skip(reason))

    def reset_for_retry(self, job_id: str, names: Iterable[str]) -> None:
        """Queue destinations again, keeping their history."""
        for name in names:
            self._update_entry(job_id, name, DestinationEntry.requeue)
            self.client.hdel(job_key(job_id), prepared_field(name))

    def record_prepared(self, job_id: str, name: str, prepared: dict[str, Any]) -> None:
        """What a destination's ``prepare`` step returned, for its ``export`` to use."""
        self._write(job_id, prepared_field(name), json.dumps(prepared))

    def prepared(self, job_id: str, name: str) -> dict[str, Any] | None:
        """What ``prepare`` returned in this run; None while it has not finished."""
        raw = self._read(job_id, prepared_field(name))
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    # -- reading -----------------------------------------------------------------------------

    def load(self, job_id: str) -> JobRecord | None:
        return _record(job_id, cast(dict[bytes, bytes], self.client.hgetall(job_key(job_id))))

    def load_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """``load`` for several jobs in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
            raws = pipe.execute()
        return [_record(job_id, raw) for job_id, raw in zip(job_ids, raws, strict=True)]

    def require(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` when it was never written or has expired."""
        record = self.load(job_id)
        if record is None:
            raise JobNotFoundError(f"no job {job_id} (unknown, or older than the retention period)")
        return record

    def job_ids(self, since: datetime | None = None) -> list[str]:
        low = since.timestamp() if since else "-inf"
        members = cast(list[bytes], self.client.zrangebyscore(JOB_INDEX, low, "+inf"))
        return [_text(member) for member in members]

    # -- plumbing ----------------------------------------------------------------------------

    # No WATCH in these two: each field has one writer at a time (the destination's
    # own task, or the job's finish task once every destination is done).

    def _update_entry(self, job_id: str, name: str, change: Callable[[DestinationEntry], T]) -> T:
        field = destination_field(name)
        entry = DestinationEntry.from_json(self._read(job_id, field))
        answer = change(entry)
        self._write(job_id, field, entry.to_json())
        return answer

    def _update_job(self, job_id: str, change: Callable[[StoredJob], None]) -> None:
        job = StoredJob.from_json(job_id, self._read(job_id, JOB_FIELD))
        change(job)
        self._write(job_id, JOB_FIELD, job.to_json())

    def _read(self, job_id: str, field: str) -> bytes | None:
        return cast(bytes | None, self.client.hget(job_key(job_id), field))

    def _write(self, job_id: str, field: str, value: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(job_key(job_id), field, value)
            pipe.expire(job_key(job_id), self.retention)
            pipe.execute()


def _record(job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
    if not raw:
        return None
    return JobRecord.from_fields(job_id, {_text(key): value for key, value in raw.items()})


def _index() -> ModuleType:
    """The job indexes and metrics, kept up to date at each write (imported late: they
    read this module's key names)."""
    from tasks import job_index

    return job_index


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
