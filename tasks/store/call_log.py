"""The call log of one job at one destination, in Redis.

One hash per job and destination, ``nxexport:calls:<job id>:<destination>``:
what the destination's exports created (record, experiment, page, entry ids),
written before the export goes on, so every later attempt of the job — a
retry, a redelivery after a crash, ``nx-export retry`` — resumes from it. It
expires with the job. A worker's log is fenced by its export's lease: a copy
that lost the lease records nothing more (``LeaseLostError``), so it also
makes no create call, which is recorded as sent before it goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from destinations.errors import LeaseLostError
from tasks.store.decode import text
from tasks.store.keys import call_log_key
from tasks.store.scripts import FENCED_LOG_CALL

if TYPE_CHECKING:
    from tasks.store.lease import Lease


class RedisCallLog:
    """The ``CallLog`` of the plugin contract, kept in Redis.

    Read once, when a destination first asks (a destination that never uses
    the log costs no Redis call); every ``record`` is written at once.
    """

    def __init__(
        self, client: Any, job_id: str, destination: str, retention: int,
        lease: Lease | None = None,
    ) -> None:  # fmt: skip
        self.client = client
        self.key = call_log_key(job_id, destination)
        self.retention = max(1, int(retention))
        self.lease = lease
        self._values: dict[str, str] | None = None

    def get(self, key: str) -> str | None:
        """The value recorded under ``key`` by any run of this job, or None."""
        return self._load().get(key)

    def record(self, key: str, value: str) -> None:
        """Write ``value`` under ``key`` and refresh the log's expiry.

        With a lease, only while it holds this copy's token: ``LeaseLostError`` otherwise.
        """
        if self.lease is not None:
            lease = self.lease
            written = self.client.eval(FENCED_LOG_CALL, 2, self.key, lease.key,
                                       self.retention, lease.token, key, value)  # fmt: skip
            if written == -1:
                raise LeaseLostError(f"{key} not recorded: this copy lost its export's lease")
        else:
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

