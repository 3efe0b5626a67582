"""Jobs in Redis: what was asked, every attempt at every destination, and the outcome.

One hash per job, one field per destination, so the tasks of one job never write
the same field at once. Every key expires after the retention period, and the
index of jobs is trimmed to it, so nothing grows without bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, cast

import redis

KEY_PREFIX = "nxexport"
JOB_INDEX = f"{KEY_PREFIX}:jobs"


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class JobStore:
    """Read and write job records through the result backend's Redis connection."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self.retention = int(retention_seconds)

    # -- writing -----------------------------------------------------------------------------

    def create(self, job_id: str, job: dict[str, Any], destinations: Iterable[str]) -> None:
        created = datetime.now(UTC)
        fields = {"job": json.dumps({**job, "id": job_id, "created_at": created.isoformat()})}
        for name in destinations:
            fields[f"dest:{name}"] = json.dumps(_new_destination_entry())
        with self.client.pipeline() as pipe:
            pipe.hset(job_key(job_id), mapping=fields)
            pipe.expire(job_key(job_id), self.retention)
            pipe.zadd(JOB_INDEX, {job_id: created.timestamp()})
            pipe.zremrangebyscore(JOB_INDEX, "-inf", created.timestamp() - self.retention)
            names = [key.removeprefix("dest:") for key in fields if key.startswith("dest:")]
            _index().on_create(pipe, job_id, job, names, created.timestamp(), self.retention)
            pipe.execute()

    def update_job(self, job_id: str, **changes: Any) -> None:
        self._update(job_id, "job", lambda job: {**job, **changes})
        _index().on_job_update(self.client, job_id, changes, self.retention)

    def start_attempt(self, job_id: str, name: str, task_id: str | None) -> int:
        """Count a new attempt at ``name`` and return its number (1 for the first)."""
        attempt = 0

        def change(entry: dict[str, Any]) -> dict[str, Any]:
            nonlocal attempt
            entry = {**_new_destination_entry(), **entry}
            attempt = entry["attempts"] + 1
            return {
                **entry,
                "state": "STARTED",
                "attempts": attempt,
                "task_id": task_id,
                "started_at": entry["started_at"] or now_iso(),
                "finished_at": None,
            }

        self._update(job_id, f"dest:{name}", change)
        _index().on_attempt(self.client, job_id, name, self.retention)
        return attempt

    def record_retry(self, job_id: str, name: str, error: str, countdown: float) -> None:
        def change(entry: dict[str, Any]) -> dict[str, Any]:
            history = [
                *entry.get("history", []),
                {
                    "attempt": entry.get("attempts", 0),
                    "at": now_iso(),
                    "outcome": "retry",
                    "error": error,
                    "retry_in": round(countdown, 1),
                },
            ]
            return {**entry, "state": "RETRY", "error": error, "history": history}

        self._update(job_id, f"dest:{name}", change)
        _index().on_retry(self.client, name)

    def record_result(self, job_id: str, name: str, result: dict[str, Any]) -> None:
        def change(entry: dict[str, Any]) -> dict[str, Any]:
            outcome = "success" if result.get("success") else "failure"
            history = [
                *entry.get("history", []),
                {
                    "attempt": entry.get("attempts", 0),
                    "at": now_iso(),
                    "outcome": outcome,
                    "error": result.get("error_message"),
                },
            ]
            return {
                **_new_destination_entry(),
                **entry,
                "state": "SUCCESS" if result.get("success") else "FAILURE",
                "result": result,
                "error": None if result.get("success") else result.get("error_message"),
                "finished_at": now_iso(),
                "history": history,
            }

        self._update(job_id, f"dest:{name}", change)
        _index().on_result(self.client, job_id, name, bool(result.get("success")), self.retention)

    def mark_skipped(self, job_id: str, names: Iterable[str], reason: str) -> None:
        for name in names:
            self._update(
                job_id,
                f"dest:{name}",
                lambda entry: {**entry, "state": "SKIPPED", "error": None, "skip_reason": reason},
            )

    def reset_for_retry(self, job_id: str, names: Iterable[str]) -> None:
        """Queue destinations again, keeping their history."""
        for name in names:
            self._update(
                job_id,
                f"dest:{name}",
                lambda entry: {
                    **entry,
                    "state": "PENDING",
                    "result": None,
                    "error": None,
                    "finished_at": None,
                },
            )

    # -- reading -----------------------------------------------------------------------------

    def load(self, job_id: str) -> dict[str, Any] | None:
        return _record(cast(dict[bytes, bytes], self.client.hgetall(job_key(job_id))))

    def load_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        """``load`` for several jobs in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
            raws = pipe.execute()
        return [_record(raw) for raw in raws]

    def job_ids(self, since: datetime | None = None) -> list[str]:
        low = since.timestamp() if since else "-inf"
        members = cast(list[bytes], self.client.zrangebyscore(JOB_INDEX, low, "+inf"))
        return [_text(member) for member in members]

    # -- plumbing ----------------------------------------------------------------------------

    def _update(self, job_id: str, field: str, change: Any) -> None:
        # No WATCH: each field has one writer at a time (the destination's own
        # task, or the job's finish task once every destination is done).
        key = job_key(job_id)
        current = cast(bytes | None, self.client.hget(key, field))
        value = change(json.loads(current) if current else {})
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, field, json.dumps(value))
            pipe.expire(key, self.retention)
            pipe.execute()


def _record(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    if not raw:
        return None
    fields = {_text(key): value for key, value in raw.items()}
    return {
        "job": json.loads(fields["job"]) if "job" in fields else {},
        "destinations": {
            key.removeprefix("dest:"): json.loads(value)
            for key, value in fields.items()
            if key.startswith("dest:")
        },
    }


def _index() -> ModuleType:
    """The job indexes and metrics, kept up to date at each write (imported late: they
    read this module's key names)."""
    from tasks import job_index

    return job_index


def _new_destination_entry() -> dict[str, Any]:
    return {
        "state": "PENDING",
        "attempts": 0,
        "task_id": None,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
        "history": [],
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
