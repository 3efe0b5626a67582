"""Indexes of the jobs in Redis, so a query never has to load every job.

Sorted sets whose score is the job's creation time, one member per job id:

- ``idx:state:<state>``: ``queued``, ``running``, ``finished-ok``, ``finished-failed``;
  a job is in exactly one of them and moves as it runs, finishes or is retried;
- ``idx:dest:<name>``: the jobs that export to a destination;
- ``idx:dest:<name>:failure``: the jobs whose latest result there is a failure;
- ``idx:instrument:<pid>`` and ``idx:session:<id>``;
- ``idx:names:destination`` and ``idx:names:instrument``: the names seen, scored
  by when they were last used, for the dashboard's filters.

Every write trims its set to the retention period by score and renews the
key's expiry, as the job records are kept: nothing grows without bound. The
job store queues the commands below in the pipelines that write the job, so
an index costs no round trip of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from tasks.store import counters as job_metrics
from tasks.store.keys import (
    DESTINATION_NAMES,
    INDEX_BUILT,
    INSTRUMENT_NAMES,
    JOB_INDEX,
    destination_failure_key,
    destination_key,
    instrument_key,
    job_key,
    session_key,
    state_key,
)
from tasks.store.model import DestinationState, JobRecord, JobState
from tasks.store.scripts import MOVE

# A job's state as indexed: a finished job is indexed by whether it was satisfied.
QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
FINISHED_OK, FINISHED_FAILED = f"{JobState.FINISHED}-ok", f"{JobState.FINISHED}-failed"
STATES = (QUEUED, RUNNING, FINISHED_OK, FINISHED_FAILED)
# A field of the job's own hash: when the running attempt at a destination
# started, for the duration histogram. It expires with the job.
ATTEMPT_STARTED = "attempt_started:"


def state_move_keys(state: str) -> list[str]:
    """For a script's move() into ``state``: the all-jobs index, the target, every state."""
    return [JOB_INDEX, state_key(state), *(state_key(s) for s in STATES)]


def first_attempt_keys() -> list[str]:
    """For a script that moves a job from queued to running: target, guard, then every state."""
    return [state_key(RUNNING), state_key(QUEUED), *(state_key(s) for s in STATES)]


def _add(pipe: Any, key: str, member: str, score: float, now: float, retention: int) -> None:
    pipe.zadd(key, {member: score})
    pipe.zremrangebyscore(key, "-inf", now - retention)
    pipe.expire(key, retention)


def index_entries(
    job_id: str, context: Mapping[str, Any], destinations: Iterable[str]
) -> list[tuple[str, str]]:
    """The (sorted set, member) pairs a new job joins, scored by its creation time."""
    entries = [(state_key(QUEUED), job_id)]
    for name in destinations:
        entries += [(destination_key(name), job_id), (DESTINATION_NAMES, name)]
    instrument, session = context.get("instrument_pid"), context.get("session_identifier")
    if instrument:
        entries += [(instrument_key(instrument), job_id), (INSTRUMENT_NAMES, instrument)]
    if session:
        entries.append((session_key(session), job_id))
    return entries


def on_create(
    pipe: Any, job_id: str, context: Mapping[str, Any], destinations: Iterable[str],
    created: float, retention: int,
) -> None:  # fmt: skip
    """Queue the indexing of a job written earlier (the job store's own ``create`` does it
    in the script that writes the job)."""
    for key, member in index_entries(job_id, context, destinations):
        _add(pipe, key, member, created, created, retention)


def attempt_started(name: str) -> tuple[str, str]:
    """The job hash's field and value that time an attempt at ``name`` starting now."""
    return f"{ATTEMPT_STARTED}{name}", repr(time.time())


def queue_attempt(pipe: Any, job_id: str, retention: int) -> None:
    """An attempt starts: the job runs, if it was queued."""
    queue_state_move(pipe, job_id, RUNNING, time.time(), retention, only_from=QUEUED)


def on_retry(client: redis.Redis, name: str) -> None:
    """An attempt at ``name`` asked to be retried later."""
    job_metrics.count_retry(client, name)


def queue_result(pipe: Any, job_id: str, name: str, success: bool, retention: int) -> None:
    """A destination's outcome is stored: count it, index a failure, forget a fixed one."""
    now = time.time()
    job_metrics.count_result(pipe, job_key(job_id), f"{ATTEMPT_STARTED}{name}", name,
                             success, now)  # fmt: skip
    if success:
        pipe.zrem(destination_failure_key(name), job_id)
    else:
        queue_move(pipe, job_id, destination_failure_key(name), (), now, retention)


def queue_move(
    pipe: Any, job_id: str, target: str, leave: Iterable[str], now: float, retention: int,
    guard: str | None = None,
) -> None:  # fmt: skip
    """Queue the move of a job into the set ``target`` and out of the sets ``leave``.

    With ``guard``, only while the job is a member of that set.
    """
    others = [key for key in leave if key not in (target, guard)]
    keys = [JOB_INDEX, target, *([guard] if guard else []), *others]
    pipe.eval(MOVE, len(keys), *keys, job_id, now, retention, "1" if guard else "0")


def queue_state_move(
    pipe: Any, job_id: str, state: str, now: float, retention: int, only_from: str | None = None
) -> None:
    leave = [state_key(s) for s in STATES]
    guard = state_key(only_from) if only_from else None
    queue_move(pipe, job_id, state_key(state), leave, now, retention, guard)


def live_count(client: redis.Redis, retention: int) -> dict[str, int]:
    """How many jobs are in each state within the retention period."""
    low = time.time() - retention
    with client.pipeline(transaction=False) as pipe:
        for state in STATES:
            pipe.zcount(state_key(state), low, "+inf")
        counts = pipe.execute()
    return dict(zip(STATES, (int(c) for c in counts), strict=True))


def names(client: redis.Redis, key: str, retention: int) -> list[str]:
    """Destination or instrument names used within the retention period, sorted."""
    members = client.zrangebyscore(key, time.time() - retention, "+inf")
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)  # type: ignore[union-attr]


def ensure_indexed(store: Any) -> int:
    """Index the jobs written before these indexes existed; once per Redis. Returns how many.

    Jobs already in a state set are left alone, so running it again, or beside
    workers that index new jobs, changes nothing.
    """
    client = store.client
    if client.exists(INDEX_BUILT):
        return 0
    members = client.zrangebyscore(JOB_INDEX, time.time() - store.retention, "+inf",
                                   withscores=True)  # fmt: skip
    added = 0
    for start in range(0, len(members), 500):
        chunk = [
            (m.decode() if isinstance(m, bytes) else m, s) for m, s in members[start : start + 500]
        ]
        ids = [job_id for job_id, _ in chunk]
        with client.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zmscore(state_key(state), ids)
            known = {i for scores in pipe.execute() for i, s in zip(ids, scores, strict=True) if s}
        todo = [(job_id, created) for job_id, created in chunk if job_id not in known]
        if not todo:
            continue
        records = store.load_many([job_id for job_id, _ in todo])
        with client.pipeline(transaction=False) as pipe:
            for (job_id, created), stored in zip(todo, records, strict=True):
                if stored is not None:
                    _index_existing(pipe, job_id, stored, created, store.retention)
                    added += 1
            pipe.execute()
    client.set(INDEX_BUILT, "1")
    return added


def _index_existing(pipe: Any, job_id: str, stored: JobRecord, created: float,
                    retention: int) -> None:  # fmt: skip
    names = list(stored.job.destinations or stored.destinations)
    on_create(pipe, job_id, stored.job.context, names, created, retention)
    now = time.time()
    if stored.state == JobState.FINISHED:
        state = FINISHED_OK if stored.job.satisfied else FINISHED_FAILED
        queue_state_move(pipe, job_id, state, now, retention)
    elif stored.state == JobState.RUNNING:
        queue_state_move(pipe, job_id, RUNNING, now, retention)
    for name, entry in stored.planned().items():
        if entry.state == DestinationState.FAILURE:
            queue_move(pipe, job_id, destination_failure_key(name), (), now, retention)
