"""Reading job records, and the sweep's schedules of them; ``JobStore`` writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import redis

from tasks.store.decode import text
from tasks.store.keys import JOB_INDEX, claim_key, job_key
from tasks.store.model import JobNotFoundError, JobRecord


class JobReader:
    """Jobs as they are in Redis, through the result backend's connection."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self.retention = int(retention_seconds)

    # -- reading -----------------------------------------------------------------------------

    def load(self, job_id: str) -> JobRecord | None:
        return self.record_from(job_id, self.client.hgetall(job_key(job_id)))

    def load_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """``load`` for several jobs in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
            raws = pipe.execute()
        return [self.record_from(job_id, raw) for job_id, raw in zip(job_ids, raws, strict=True)]

    def require(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` when it was never written or has expired."""
        record = self.load(job_id)
        if record is None:
            raise JobNotFoundError(f"no job {job_id} (unknown, or older than the retention period)")
        return record

    def job_ids(self, since: datetime | None = None) -> list[str]:
        low = since.timestamp() if since else "-inf"
        members = cast(list[bytes], self.client.zrangebyscore(JOB_INDEX, low, "+inf"))
        return [text(member) for member in members]

    # -- the sweep's schedules ---------------------------------------------------------------

    def due(self, schedule: str, until: float, limit: int = 100) -> list[str]:
        """Jobs of ``schedule`` whose time is ``until`` or earlier, earliest first."""
        members = self.client.zrangebyscore(schedule, "-inf", until, start=0, num=limit)
        return [text(member) for member in cast(list[bytes], members)]

    def scheduled(self, schedule: str, job_id: str) -> bool:
        return self.client.zscore(schedule, job_id) is not None

    def unschedule(self, schedule: str, job_id: str) -> None:
        self.client.zrem(schedule, job_id)

    def claim(self, name: str, seconds: float) -> bool:
        """True for the one caller that takes ``name`` for ``seconds`` (across workers)."""
        key = claim_key(name)
        return bool(self.client.set(key, "1", nx=True, ex=max(1, int(seconds))))

    @staticmethod
    def record_from(job_id: str, raw: Any) -> JobRecord | None:
        """The record of a job's ``HGETALL`` answer (None when empty: no such job)."""
        fields = cast(dict[bytes, bytes], raw)
        if not fields:
            return None
        return JobRecord.from_fields(job_id, {text(key): value for key, value in fields.items()})

    def _read(self, job_id: str, field: str) -> bytes | None:
        return cast(bytes | None, self.client.hget(job_key(job_id), field))
