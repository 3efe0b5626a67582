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
job store calls the ``on_*`` hooks below; each costs one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from tasks import job_metrics
from tasks.job_model import DestinationState, JobRecord, JobState
from tasks.job_store import JOB_INDEX, KEY_PREFIX, job_key

# A job's state as indexed: a finished job is indexed by whether it was satisfied.
QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
FINISHED_OK, FINISHED_FAILED = f"{JobState.FINISHED}-ok", f"{JobState.FINISHED}-failed"
STATES = (QUEUED, RUNNING, FINISHED_OK, FINISHED_FAILED)
IDX = f"{KEY_PREFIX}:idx"
DESTINATION_NAMES = f"{IDX}:names:destination"
INSTRUMENT_NAMES = f"{IDX}:names:instrument"
# Set once the jobs written before the indexes existed were indexed (``ensure_indexed``).
BUILT = f"{IDX}:built"
# A field of the job's own hash: when the running attempt at a destination
# started, for the duration histogram. It expires with the job.
ATTEMPT_STARTED = "attempt_started:"


def state_key(state: str) -> str:
    return f"{IDX}:state:{state}"


def destination_key(name: str) -> str:
    return f"{IDX}:dest:{name}"


def destination_failure_key(name: str) -> str:
    return f"{IDX}:dest:{name}:failure"


def instrument_key(pid: str) -> str:
    return f"{IDX}:instrument:{pid}"


def session_key(session: str) -> str:
    return f"{IDX}:session:{session}"


# Moves a job into KEYS[2] and out of every other state set, keeping its
# creation time as score (read from the all-jobs index). With ARGV[4] = "1" the
# move happens only while the job is still in KEYS[3] (queued -> running on the
# first attempt, never back from finished).
_MOVE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if ARGV[4] == '1' and not redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
for i = 3, #KEYS do
  if KEYS[i] ~= KEYS[2] then redis.call('ZREM', KEYS[i], ARGV[1]) end
end
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


def _add(pipe: Any, key: str, member: str, score: float, now: float, retention: int) -> None:
    pipe.zadd(key, {member: score})
    pipe.zremrangebyscore(key, "-inf", now - retention)
    pipe.expire(key, retention)


def on_create(
    pipe: Any, job_id: str, context: Mapping[str, Any], destinations: Iterable[str],
    created: float, retention: int,
) -> None:  # fmt: skip
    """Index a new job; ``pipe`` is the job store's pipeline that writes the job."""
    _add(pipe, state_key(QUEUED), job_id, created, created, retention)
    for name in destinations:
        _add(pipe, destination_key(name), job_id, created, created, retention)
        _add(pipe, DESTINATION_NAMES, name, created, created, retention)
    instrument, session = context.get("instrument_pid"), context.get("session_identifier")
    if instrument:
        _add(pipe, instrument_key(instrument), job_id, created, created, retention)
        _add(pipe, INSTRUMENT_NAMES, instrument, created, created, retention)
    if session:
        _add(pipe, session_key(session), job_id, created, created, retention)


def on_attempt(client: redis.Redis, job_id: str, name: str, retention: int) -> None:
    """An attempt at ``name`` starts: the job runs (if it was queued); time the attempt."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(job_key(job_id), f"{ATTEMPT_STARTED}{name}", repr(now))
        queue_state_move(pipe, job_id, RUNNING, now, retention, only_from=QUEUED)
        pipe.execute()


def on_retry(client: redis.Redis, name: str) -> None:
    """An attempt at ``name`` asked to be retried later."""
    job_metrics.count_retry(client, name)


def on_result(client: redis.Redis, job_id: str, name: str, success: bool, retention: int) -> None:
    """A destination's outcome is stored: count it, index a failure, forget a fixed one."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        job_metrics.count_result(pipe, job_key(job_id), f"{ATTEMPT_STARTED}{name}", name,
                                 success, now)  # fmt: skip
        if success:
            pipe.zrem(destination_failure_key(name), job_id)
        else:
            queue_move(pipe, job_id, destination_failure_key(name), (), now, retention)
        pipe.execute()


def on_run_state(
    client: redis.Redis, job_id: str, finished: bool, satisfied: bool | None, retention: int
) -> None:
    """The job finished, or was retried (it runs again)."""
    state = (FINISHED_OK if satisfied else FINISHED_FAILED) if finished else RUNNING
    with client.pipeline(transaction=False) as pipe:
        queue_state_move(pipe, job_id, state, time.time(), retention)
        pipe.execute()


def queue_move(
    pipe: Any, job_id: str, target: str, leave: Iterable[str], now: float, retention: int,
    guard: str | None = None,
) -> None:  # fmt: skip
    """Queue the move of a job into the set ``target`` and out of the sets ``leave``.

    With ``guard``, only while the job is a member of that set.
    """
    others = [key for key in leave if key not in (target, guard)]
    keys = [JOB_INDEX, target, *([guard] if guard else []), *others]
    pipe.eval(_MOVE, len(keys), *keys, job_id, now, retention, "1" if guard else "0")


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
    if client.exists(BUILT):
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
    client.set(BUILT, "1")
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
