"""Jobs in Redis: what was asked, every attempt at every destination, and the outcome.

One hash per job, one field per destination, so the tasks of one job never write
the same field at once; what the fields hold and how a state changes is
``model``'s. Every key expires after the retention period. The sweep finds the
jobs that need it in four sorted sets (``keys``: deadlines, unsent canvases,
settled jobs, runs to announce), never by scanning. Writes that race (a retry and
another retry, a finish and the deadline sweep) are compare-and-set scripts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis

from destinations.errors import LeaseLostError
from destinations.redaction import redact_message
from tasks.store import index
from tasks.store.decode import text
from tasks.store.failover import retrying
from tasks.store.keys import (
    DEADLINES,
    JOB_INDEX,
    SETTLED,
    UNSENT,
    idempotency_key,
    job_key,
)
from tasks.store.model import (
    JOB_FIELD,
    DestinationEntry,
    JobRecord,
    StoredJob,
    destination_field,
)
from tasks.store.reader import JobReader
from tasks.store.run_ending import RunEnding
from tasks.store.scripts import (
    COMPARE_AND_SET,
    CREATE,
    FENCED_WRITE_FIELDS,
    MOVE_FUNCTION,
    RECORD_RESULT,
    START_FIRST_ATTEMPT,
    WRITE_FIELDS,
)

if TYPE_CHECKING:
    from tasks.store.lease import Lease
# The run whose canvas was sent last; a run above it still needs its canvas.
CANVAS_FIELD = "canvas_sent"
DEFAULT_DEADLINE_SECONDS = 86400.0

T = TypeVar("T")

def prepared_field(name: str) -> str:
    # Beside the destination's entry, not in it: prepare and export are two tasks.
    return f"prepared:{name}"


# record_result's answer for an outcome stored after its run ended (see ``run_ending``).
STORED_LATE = 2


class RunConflictError(Exception):
    """Another retry (or finish) changed the job first; this one changed nothing."""


class JobStore(RunEnding, JobReader):
    """Write job records through the result backend's Redis connection (reading: ``JobReader``)."""

    def __init__(
        self,
        client: redis.Redis,
        retention_seconds: int,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        super().__init__(client, retention_seconds)
        self.deadline = float(deadline_seconds)
        self._create = client.register_script(CREATE)
        self._write_fields = client.register_script(WRITE_FIELDS)
        self._compare_and_set = client.register_script(MOVE_FUNCTION + COMPARE_AND_SET)
        self._start_first = client.register_script(MOVE_FUNCTION + START_FIRST_ATTEMPT)

    # -- writing -----------------------------------------------------------------------------

    def create(
        self, job: StoredJob, job_key_text: str | None = None
    ) -> tuple[str, JobRecord | None]:
        """Store a new job, every destination of its plan pending, and index it.

        Returns the job's id and its record as written; the record is None when
        nothing was written: a job of this id exists already, or ``job_key_text``
        names a job kept in Redis (then that job's id is returned).
        """
        created = datetime.now(UTC)
        record = JobRecord(
            job=replace(job, created_at=created.isoformat(), deadline_seconds=self.deadline),
            destinations={name: DestinationEntry() for name in job.destinations},
        )
        indexes = index.index_entries(job.id, job.context, job.destinations)
        keys = [job_key(job.id), JOB_INDEX, DEADLINES, UNSENT,
                idempotency_key(job_key_text) if job_key_text is not None else "",
                *(key for key, _ in indexes)]  # fmt: skip
        fields = [item for pair in record.to_fields().items() for item in pair]
        stamp = created.timestamp()
        retried: list[bool] = []
        answer = retrying(
            lambda: self._create(
                keys, [job.id, self.retention, repr(stamp), repr(stamp + self.deadline),
                       job_key(""), len(indexes), *(member for _, member in indexes), *fields],
            ),
            "creating a job",
            before_retry=lambda: retried.append(True),
        )  # fmt: skip
        job_id, was_created = cast(list[Any], answer)
        if not was_created and retried:
            # Checked: the attempt that broke may have created it; then it holds our time.
            stored = self._read(text(job_id), JOB_FIELD)
            was_created = stored is not None and StoredJob.from_json(
                text(job_id), stored
            ).created_at == record.job.created_at
        return text(job_id), record if was_created else None

    def begin_run(
        self, job_id: str, names: Sequence[str], finish_task_id: str, expected_runs: int
    ) -> None:
        """Open run ``expected_runs + 1`` for ``names`` if the job is still as it was read.

        ``RunConflictError`` when it has not finished, or another run began meanwhile.
        """
        fields = [JOB_FIELD, *(destination_field(name) for name in names)]

        def change(values: Mapping[str, bytes | str | None]) -> dict[str, str] | None:
            job = StoredJob.from_json(job_id, values[JOB_FIELD])
            if job.finished_at is None or job.runs != expected_runs:
                return None
            job.begin_run(finish_task_id)
            job.deadline_seconds = self.deadline
            writes = {JOB_FIELD: job.to_json()}
            for name in names:
                entry = DestinationEntry.from_json(values[destination_field(name)])
                entry.requeue()
                writes[destination_field(name)] = entry.to_json()
            return writes

        now = time.time()
        schedules = {DEADLINES: now + self.deadline, UNSENT: now, SETTLED: None}
        if not self._transact(job_id, fields, change, schedules, state=index.RUNNING):
            raise RunConflictError(job_id)
        # What an earlier run prepared is prepared again (its objects stay in the call log).
        self.client.hdel(job_key(job_id), *(prepared_field(name) for name in names))

    def mark_canvas_sent(self, job_id: str, run: int) -> None:
        def write() -> None:  # idempotent: the same field, the same value, out of a set
            with self.client.pipeline(transaction=False) as pipe:
                pipe.eval(WRITE_FIELDS, 1, job_key(job_id), self.retention, CANVAS_FIELD, str(run))
                pipe.zrem(UNSENT, job_id)
                pipe.execute()

        retrying(write, "marking a canvas sent")

    def canvas_sent(self, job_id: str) -> int:
        """The last run whose canvas was sent (0: none)."""
        return int(self._read(job_id, CANVAS_FIELD) or 0)

    def start_attempt(
        self, job_id: str, name: str, task_id: str | None, entry: DestinationEntry | None = None,
        lease: Lease | None = None,
    ) -> int:  # fmt: skip
        """Count a new attempt at ``name`` and return its number (1 for the first).

        ``entry``, the destination's entry as just read, is changed and saved.
        One round trip with the indexes: the job runs, the attempt is timed.
        With ``lease``, fenced: ``LeaseLostError`` (nothing written) once it was lost.
        """
        field = destination_field(name)
        if entry is None:
            entry = DestinationEntry.from_json(self._read(job_id, field))
        attempt = entry.start(task_id)
        fields = (field, entry.to_json(), *index.attempt_started(name))
        if lease is not None:  # the fenced write first; the indexes only once it is written
            self._fenced_write(job_id, lease, *fields)

        def write() -> None:  # idempotent: the same fields again, queued -> running once
            with self.client.pipeline(transaction=False) as pipe:
                if lease is None:
                    # EVAL, not a registered script: in a pipeline it costs a SCRIPT EXISTS first.
                    pipe.eval(WRITE_FIELDS, 1, job_key(job_id), self.retention, *fields)
                index.queue_attempt(pipe, job_id, self.retention)
                pipe.execute()

        retrying(write, "starting an attempt")
        return attempt

    def take_lease_and_start(
        self, job_id: str, name: str, task_id: str | None, lease: Lease
    ) -> tuple[bool, JobRecord | None, bool]:
        """Take ``lease`` and, if ``name`` was never tried, start its attempt 1: one round trip.

        Returns whether the lease was taken, the job as it is then (None: no such
        job) and whether attempt 1 started. Otherwise (a retry, a redelivered
        task) the caller decides from the record, then calls ``start_attempt``.
        """
        field = destination_field(name)
        started = DestinationEntry()
        fresh = started.to_json()
        started.start(task_id)
        now, sent = time.time(), time.monotonic()
        answer = self._start_first(
            [lease.key, job_key(job_id), JOB_INDEX, *index.first_attempt_keys()],
            [lease.token, lease.ttl_ms, job_id, self.retention, repr(now), field, fresh,
             started.to_json(), *index.attempt_started(name)],
        )  # fmt: skip
        taken, first, flat = cast(list[Any], answer)
        if not lease.granted(taken, sent):
            return False, None, False
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return True, self.record_from(job_id, raw), bool(first)

    def record_retry(
        self, job_id: str, name: str, error: str, countdown: float, lease: Lease | None = None
    ) -> None:
        """Note the retry to come; with ``lease``, fenced (``LeaseLostError``: nothing written)."""
        # Stored like a result's message: a plugin's error may carry a secret or a signed URL.
        safe = redact_message(error)
        self._update_entry(job_id, name, lambda entry: entry.retry(safe, countdown), lease)
        index.on_retry(self.client, name)

    def record_prepared(self, job_id: str, name: str, prepared: dict[str, Any]) -> None:
        """What a destination's ``prepare`` step returned, for its ``export`` to use."""
        self._write(job_id, prepared_field(name), json.dumps(prepared))

    def prepared(self, job_id: str, name: str) -> dict[str, Any] | None:
        """What ``prepare`` returned in this run; None while it has not finished."""
        raw = self._read(job_id, prepared_field(name))
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    def record_result(
        self,
        job_id: str,
        name: str,
        result: dict[str, Any],
        entry: DestinationEntry | None = None,
        also: Callable[[Any], None] | None = None,
        lease: Lease | None = None,
    ) -> int:
        """Store ``name``'s result: 1; 0 when the job expired (nothing stored).

        ``entry`` is the destination's entry as this task last saved it (or as
        it will be stored, finished with ``result``: the same write again); ``also``
        adds commands to the same round trip, as are the indexes and metrics.
        Once every destination has its outcome, the job is settled: if the
        chord never runs its finish (Redis went away while it counted), the
        sweep sends it. With ``lease``, fenced: the result is written first,
        only while the lease holds this copy's token (``LeaseLostError``
        otherwise, nothing written), then the indexes, metrics and ``also``.
        ``STORED_LATE`` (2): stored, but the job's run had ended: ``retell`` it.
        """
        field = destination_field(name)
        entry = replace(entry) if entry else DestinationEntry.from_json(self._read(job_id, field))
        if not (entry.state.has_outcome and entry.result is result):  # finished by the caller
            entry.finish(result)
        keys = [job_key(job_id), SETTLED]
        arguments = [str(self.retention), repr(time.time()), field, entry.to_json(), job_id]
        written = None
        if lease is not None:  # the fenced write first; the indexes only once it is written
            answer = self.client.eval(RECORD_RESULT, 3, *keys, lease.key, *arguments, lease.token)
            written = self._fenced(answer, job_id, field)
        with self.client.pipeline(transaction=False) as pipe:
            if lease is None:
                pipe.eval(RECORD_RESULT, 2, *keys, *arguments)
            index.queue_result(pipe, job_id, name, bool(result.get("success")),
                                  self.retention)  # fmt: skip
            if also is not None:
                also(pipe)
            answers = pipe.execute()
        return int(answers[0] if written is None else written)

    def mark_skipped(self, job_id: str, names: Iterable[str], reason: str) -> None:
        for name in names:
            self._update_entry(job_id, name, lambda entry: entry.skip(reason))

    # -- plumbing ----------------------------------------------------------------------------

    # No compare-and-set here: each destination's field has one writer at a time
    # (the task holding the destination's lease); the sweep's go through _transact.

    def _update_entry(
        self, job_id: str, name: str, change: Callable[[DestinationEntry], T],
        lease: Lease | None = None,
    ) -> T:  # fmt: skip
        field = destination_field(name)
        entry = DestinationEntry.from_json(self._read(job_id, field))
        answer = change(entry)
        if lease is None:
            self._write(job_id, field, entry.to_json())
        else:
            self._fenced_write(job_id, lease, field, entry.to_json())
        return answer

    def _fenced_write(self, job_id: str, lease: Lease, *fields: str) -> None:
        """WRITE_FIELDS while ``lease`` holds this copy's token; else ``LeaseLostError``."""
        answer = self.client.eval(FENCED_WRITE_FIELDS, 2, job_key(job_id), lease.key,
                                  self.retention, lease.token, *fields)  # fmt: skip
        self._fenced(answer, job_id, fields[0])

    @staticmethod
    def _fenced(answer: Any, job_id: str, what: str) -> Any:
        if answer == -1:
            raise LeaseLostError(f"{what} of job {job_id} not written: this copy lost its lease")
        return answer

    def _write(self, job_id: str, field: str, value: str) -> None:
        # Idempotent: the same value again, in a job that still exists.
        retrying(lambda: self._write_fields([job_key(job_id)], [self.retention, field, value]),
                 "writing a job")  # fmt: skip

