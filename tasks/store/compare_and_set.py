"""The job store's compare-and-set: read, decide, write only if nothing changed meanwhile.

Writes that race (a retry and another retry, a finish and the deadline sweep)
go through ``CompareAndSet._transact``: one Lua script checks the fields read
and writes the new ones, moves the job between the sweep's schedules and its
state index, in one step; a writer that finds a field changed reads again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import redis

from tasks.store import index
from tasks.store.failover import FAILOVER_ERRORS, retrying
from tasks.store.keys import job_key
from tasks.store.model import JOB_FIELD, JobNotFoundError


class CompareAndSet:
    """Mixed into ``JobStore``, which registers the script (``_compare_and_set``)."""

    client: redis.Redis
    retention: int
    _compare_and_set: Any

    def _transact(
        self,
        job_id: str,
        fields: Sequence[str],
        change: Callable[[Mapping[str, bytes | str | None]], dict[str, str] | None],
        schedules: Mapping[str, float | None] | None = None,
        assumed: Mapping[str, str] | None = None,
        state: str | Callable[[], str] | None = None,
    ) -> bool:
        """Read ``fields``, write what ``change`` returns if none of them changed meanwhile.

        ``change`` returns None to write nothing (then False). When written, the
        job joins each of ``schedules`` at its score, or leaves it (None). A job
        that does not exist raises ``JobNotFoundError``. ``assumed`` holds every
        field as the caller read it: tried first without reading, and read only
        if the write finds them changed. With ``state``, the job moves to that
        state's index in the same write.
        """
        read = list(dict.fromkeys([JOB_FIELD, *fields]))
        schedules = schedules or {}
        while True:
            raw: list[bytes | str | None]
            if assumed is not None:
                raw, assumed = [assumed[name] for name in read], None
            else:
                raw = cast(
                    list[bytes | str | None],
                    retrying(lambda: self.client.hmget(job_key(job_id), read), "reading a job"),
                )
            if raw[0] is None:
                raise JobNotFoundError(f"no job {job_id} (unknown, or expired)")
            writes = change(dict(zip(read, raw, strict=True)))
            if writes is None:
                return False
            checked = [item for pair in zip(read, raw, strict=True) for item in pair]
            written = [item for pair in writes.items() for item in pair]
            scores = ["-" if score is None else repr(score) for score in schedules.values()]
            # A callable state is the one ``change`` just decided.
            named = state() if callable(state) else state
            moved = index.state_move_keys(named) if named else []
            arguments = [self.retention, job_id, len(read), *(v or b"" for v in checked),
                         len(writes), *written, len(scores), *scores,
                         repr(time.time())]  # fmt: skip
            try:
                if self._compare_and_set([job_key(job_id), *schedules, *moved], arguments):
                    return True
            except FAILOVER_ERRORS:
                # Checked: the write may have run before the connection broke. Its fields
                # hold what it wrote (times included: no other writer writes the same) only
                # if it did, and then all of it did: a script runs, and replicates, whole.
                if retrying(partial(self._holds, job_id, writes), "checking a job's write"):
                    return True
            # Another writer came first (or the write was lost): read again and decide again.

    def _holds(self, job_id: str, fields: Mapping[str, str]) -> bool:
        found = self.client.hmget(job_key(job_id), list(fields))
        return [value.encode() for value in fields.values()] == found
