"""The call log of one job at one destination, in Redis.

One hash per job and destination, ``nxexport:calls:<job id>:<destination>``:
what the destination's exports created (record, experiment, page, entry ids),
written before the export goes on, so every later attempt of the job — a
retry, a redelivery after a crash, ``nx-export retry`` — resumes from it. It
expires with the job.
"""

from __future__ import annotations

from typing import Any

from tasks.store.decode import text
from tasks.store.keys import call_log_key


class RedisCallLog:
    """The ``CallLog`` of the plugin contract, kept in Redis.

    Read once, when a destination first asks (a destination that never uses
    the log costs no Redis call); every ``record`` is written at once.
    """

    def __init__(self, client: Any, job_id: str, destination: str, retention: int) -> None:
        self.client = client
        self.key = call_log_key(job_id, destination)
        self.retention = max(1, int(retention))
        self._values: dict[str, str] | None = None

    def get(self, key: str) -> str | None:
        """The value recorded under ``key`` by any run of this job, or None."""
        return self._load().get(key)

    def record(self, key: str, value: str) -> None:
        """Write ``value`` under ``key`` and refresh the log's expiry."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, key, value)
            pipe.expire(self.key, self.retention)
            pipe.execute()
        self._load()[key] = value

    def _load(self) -> dict[str, str]:
        if self._values is None:
            raw = self.client.hgetall(self.key)
            self._values = {text(k): text(v) for k, v in raw.items()}
        return self._values

