"""How a run of a job ends, and how its truth is told again when an outcome arrives late.

A run ends once: its finish (or the deadline sweep, which first ends each
destination still without an outcome) stores the verdict and moves the job to
its finished index in one compare-and-set. The rule for what still arrives
after that:

- A task of an ended run that has not started its export does not start one
  (``tasks.export.destination_task``): the run stays ended; ``nx-export retry``
  runs it again.
- An outcome that was in flight when the run ended (a call answered after the
  deadline) is what happened at the service: it is stored, and the run is
  *told again* (``retell``): its verdict is decided anew from the outcomes, the
  job moves to the index that verdict names, ``retold`` counts one more, and the
  run joins the announce set, so the webhook, the callback and the NexusLIMS
  bridge hear the new truth. Nothing that waited for it starts: its run ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from destinations.plan import is_satisfied
from tasks.store import index
from tasks.store.compare_and_set import CompareAndSet
from tasks.store.keys import ANNOUNCE, DEADLINES, SETTLED, UNSENT, job_key
from tasks.store.model import (
    JOB_FIELD,
    DestinationEntry,
    JobRecord,
    StoredJob,
    destination_field,
)
from tasks.store.scripts import UNSCHEDULE_ANNOUNCED


class RunEnding(CompareAndSet):
    """Mixed into ``JobStore``: finishing a run, ending what it left, telling it again."""

    load: Callable[[str], JobRecord | None]  # JobReader's

    def mark_finished(
        self,
        job_id: str,
        satisfied: bool,
        finish_task_id: str | None,
        record: JobRecord | None = None,
    ) -> JobRecord | None:
        """Finish the run ``finish_task_id`` belongs to and return the job as finished.

        None when it is finished or superseded. ``record``, the job as its caller
        just read it, saves reading it again (it is checked all the same).
        """
        finished: list[StoredJob] = []

        def change(values: Mapping[str, bytes | str | None]) -> dict[str, str] | None:
            job = StoredJob.from_json(job_id, values[JOB_FIELD])
            if job.finished_at is not None or job.finish_task_id not in (None, finish_task_id):
                return None
            job.finish(satisfied)
            finished[:] = [job]
            return {JOB_FIELD: job.to_json()}

        # Announced once its finish's result is stored (or by the sweep, if that never happens).
        unscheduled: dict[str, float | None] = {
            **dict.fromkeys((DEADLINES, UNSENT, SETTLED)), ANNOUNCE: time.time()
        }
        assumed = None if record is None else {JOB_FIELD: record.job.to_json()}
        state = index.FINISHED_OK if satisfied else index.FINISHED_FAILED
        if not self._transact(job_id, [JOB_FIELD], change, unscheduled, assumed, state):
            return None
        if record is None:
            return self.load(job_id)
        return replace(record, job=finished[0])

    def end_unfinished(self, job_id: str, results: Mapping[str, dict[str, Any]]) -> list[str]:
        """Give each named destination that has no outcome yet the result given; return those."""
        fields = [destination_field(name) for name in results]
        ended: list[str] = []

        def change(values: Mapping[str, bytes | str | None]) -> dict[str, str] | None:
            ended.clear()
            writes = {}
            for name, result in results.items():
                entry = DestinationEntry.from_json(values[destination_field(name)])
                if not entry.state.has_outcome:
                    entry.finish(result)
                    writes[destination_field(name)] = entry.to_json()
                    ended.append(name)
            return writes or None

        self._transact(job_id, fields, change)
        with self.client.pipeline(transaction=False) as pipe:
            for name in ended:
                index.queue_result(pipe, job_id, name, False, self.retention)
            pipe.execute()
        return ended

    def retell(self, job_id: str) -> JobRecord | None:
        """Tell the job's finished latest run again, its verdict as its outcomes say now.

        For an outcome stored after its run ended. Returns the job as retold, to
        announce (it is in the announce set until then); None when the job is
        gone or its latest run is not finished (a retry's run decides it instead).
        """
        record = self.load(job_id)
        if record is None or record.job.finished_at is None:
            return None
        retold: list[JobRecord] = []

        def change(values: Mapping[str, bytes | str | None]) -> dict[str, str] | None:
            job = StoredJob.from_json(job_id, values[JOB_FIELD])
            if job.finished_at is None:
                return None
            entries = {name: DestinationEntry.from_json(values[destination_field(name)])
                       for name in job.destinations}  # fmt: skip
            retold[:] = [JobRecord(job, entries)]
            job.retell(is_satisfied(job.strategy, job.destinations, retold[0].outcomes()))
            return {JOB_FIELD: job.to_json()}

        def verdict_index() -> str:
            return index.FINISHED_OK if retold[0].job.satisfied else index.FINISHED_FAILED

        fields = [destination_field(name) for name in record.job.destinations]
        if not self._transact(job_id, fields, change, {ANNOUNCE: time.time()},
                              state=verdict_index):  # fmt: skip
            return None
        return retold[0]  # the job as written, with the entries it was decided from

    def unschedule_announced(self, record: JobRecord) -> None:
        """Out of the announce set, unless the job was told again since ``record`` was read."""
        job = record.job
        self.client.eval(UNSCHEDULE_ANNOUNCED, 2, job_key(job.id), ANNOUNCE, JOB_FIELD, job.id,
                         job.runs, job.retold)  # fmt: skip
