"""Getting each finished run to the bridge at least once, and keeping it until it is written.

A finished run joins the job store's set of runs not yet written to NexusLIMS
(``NEXUSLIMS_WAITING``, member ``<job id>:<run>``) when it is announced, and
leaves it only in the same Redis transaction that records its write, after the
database commit. Once a bridge worker has been seen (within the retention
period) the run is also sent to the bridge's queue at once. The message names
the job and the run, nothing else: the bridge reads everything it writes from
the job store.

A message can be lost (a bridge worker frozen, then killed, while it held it).
So on every heartbeat, while a bridge worker is alive, the sweep offers again
each run that has waited longer than the grace period, then leaves it for as
long again as it has waited since its run finished (at least the grace period,
at most ``MAX_REOFFER_SECONDS``): a run the bridge cannot write yet (NexusLIMS's
database locked) is offered a few times, not on every heartbeat. The same pass
sends the runs kept while no bridge worker existed, and a bridge worker that
starts offers every waiting run at once (one that died may have held them). A run offered twice is
written once (its ``done`` key); a run that a later run of its job replaced
leaves the set unsent (the later run's finish offers that one).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, cast

import redis
from celery import Celery
from celery.result import AsyncResult

from destinations.names import NEXUSLIMS_TASK
from tasks.runtime import job_store
from tasks.store.decode import text
from tasks.store.keys import NEXUSLIMS_BRIDGE_LIVE as BRIDGE_LIVE
from tasks.store.keys import NEXUSLIMS_BRIDGE_SEEN as BRIDGE_SEEN
from tasks.store.keys import NEXUSLIMS_WAITING as WAITING
from tasks.store.keys import job_key, nexuslims_done_key, nexuslims_newest_key
from tasks.store.model import JOB_FIELD, JobRecord, StoredJob

BRIDGE_TASK = NEXUSLIMS_TASK
BRIDGE_QUEUE = "nx-export.nexuslims"
# How many waiting runs a sweep reads at a time.
BATCH = 200
# A run not written yet is offered again at most this long after its previous offer.
MAX_REOFFER_SECONDS = 3600.0


def waiting_member(job_id: str, run: int) -> str:
    return f"{job_id}:{run}"


def parse_member(member: str) -> tuple[str, int | None]:
    """The job and run of a waiting entry; run None for an earlier version's bare job id."""
    job_id, colon, run = member.rpartition(":")
    if colon and run.isdigit():
        return job_id, int(run)
    return member, None


def offer_outcome(app: Celery, record: JobRecord) -> None:
    """Keep this finished run until the bridge has written it; send it now if a bridge exists."""
    store = job_store(app)
    job = record.job
    now = time.time()
    with store.client.pipeline(transaction=False) as pipe:
        pipe.zadd(WAITING, {waiting_member(job.id, job.runs): now})
        pipe.zremrangebyscore(WAITING, "-inf", now - store.retention)
        pipe.expire(WAITING, store.retention)
        pipe.exists(BRIDGE_SEEN)
        seen = pipe.execute()[-1]
    if seen:
        send_outcome(app, job.id, job.runs, job.context.get("session_identifier"))


def send_outcome(
    app: Celery, job_id: str, run: int, session: Any = None, why: str = ""
) -> AsyncResult:
    """Queue (job, run) for the bridge: the bridge reads the rest from the job store."""
    return app.send_task(
        BRIDGE_TASK,
        args=(job_id, run),
        queue=BRIDGE_QUEUE,
        argsrepr=f"(job={job_id} run={run} session={session}{why})",
    )


def bridge_heartbeat(app: Celery, interval: float) -> None:
    """A bridge worker's heartbeat: a bridge exists (for the retention period) and is alive now."""
    client = job_store(app).client
    with client.pipeline(transaction=False) as pipe:
        pipe.set(BRIDGE_SEEN, "1", ex=job_store(app).retention)
        pipe.set(BRIDGE_LIVE, "1", ex=max(2, int(2 * interval) + 1))
        pipe.execute()


def reoffer_unwritten(app: Celery, grace: float, everything: bool = False) -> int:
    """The sweep's part: send again each run waiting longer than ``grace``; return how many.

    Nothing while no bridge worker is alive: the runs wait in Redis, not in a
    queue. ``everything``: every run waiting, whenever it was last offered (a
    bridge worker that starts: one that died may have held their messages).
    """
    store = job_store(app)
    if not store.client.exists(BRIDGE_LIVE):
        return 0
    now = time.time()
    sent = 0
    if everything:
        members = [text(m) for m in cast(list[bytes], store.client.zrange(WAITING, 0, -1))]
        for start in range(0, len(members), BATCH):
            sent += _offer_again(app, members[start : start + BATCH], now, grace)[0]
        return sent
    while members := store.due(WAITING, now - grace, BATCH):
        offered, all_moved = _offer_again(app, members, now, grace)
        sent += offered
        if not all_moved or len(members) < BATCH:
            break
    return sent


def _offer_again(app: Celery, members: list[str], now: float, grace: float) -> tuple[int, bool]:
    """Send these waiting runs again; how many, and whether each was sent or dropped here."""
    store = job_store(app)
    parsed = [parse_member(member) for member in members]
    records = store.load_many([job_id for job_id, _ in parsed])
    sent, all_moved = 0, True
    for member, (_, run), record in zip(members, parsed, records, strict=True):
        job = None if record is None else record.job
        if job is None or job.finished_at is None or run not in (None, job.runs):
            store.unschedule(WAITING, member)  # gone, or replaced by a later run
        elif store.claim(f"nexuslims:{member}", grace):
            _send_again(app, member, cast(JobRecord, record), now, grace)
            sent += 1
        else:  # another worker is sending it and moves it on
            all_moved = False
    return sent, all_moved


def _send_again(app: Celery, member: str, record: JobRecord, now: float, grace: float) -> None:
    job = record.job
    finished = datetime.fromisoformat(job.finished_at or "").timestamp()
    again = now + min(MAX_REOFFER_SECONDS, max(grace, now - finished))
    current = waiting_member(job.id, job.runs)
    with job_store(app).client.pipeline(transaction=False) as pipe:
        if member != current:  # an earlier version's entry: named by its run from now on
            pipe.zrem(WAITING, member)
            pipe.zadd(WAITING, {current: again})
        else:  # XX: a run written meanwhile stays out
            pipe.zadd(WAITING, {current: again}, xx=True)
        pipe.execute()
    session = job.context.get("session_identifier")
    send_outcome(app, job.id, job.runs, session, " offered again")


def record_written(
    client: redis.Redis, job_id: str, run: int, telling: int, retention: int
) -> tuple[int, bool]:
    """After the database commit: this telling of the run is written, and the newest written.

    One transaction, compared against what was written before; returns the newest
    run written before (0: none) and whether this write must be done again. Above
    ``run``, a later run was written while this one wrote (its session lock
    expired under it): that run is made to be written again, since this write
    marked the session after it. A later telling of this run written meanwhile
    makes this one to be written again. The run leaves the waiting set only if
    the job was not told again since (``tasks.store.run_ending``).
    """
    newest_key, done_key = nexuslims_newest_key(job_id), nexuslims_done_key(job_id, run)

    def settle(pipe: Any) -> Any:
        newest = int(text(pipe.get(newest_key) or b"0"))
        before = written_telling(pipe, job_id, run)
        job = StoredJob.from_json(job_id, pipe.hget(job_key(job_id), JOB_FIELD))
        pipe.multi()
        again = before > telling  # a later telling was written under this one
        if again:
            pipe.delete(done_key)
        else:
            pipe.set(done_key, str(telling), ex=retention)
        if again or (job.runs == run and job.telling > telling):
            pipe.zadd(WAITING, {waiting_member(job_id, run): 0})
        else:
            pipe.zrem(WAITING, waiting_member(job_id, run))
        if newest <= run:
            pipe.set(newest_key, str(run), ex=retention)
        else:
            pipe.delete(nexuslims_done_key(job_id, newest))
            pipe.zadd(WAITING, {waiting_member(job_id, newest): 0})
        return newest, again

    watched = (newest_key, done_key, job_key(job_id))
    return cast(tuple[int, bool], client.transaction(settle, *watched, value_from_callable=True))


def written_telling(client: Any, job_id: str, run: int) -> int:
    """Which telling of the run the bridge committed last (0: none; an earlier version's 1)."""
    return int(text(client.get(nexuslims_done_key(job_id, run)) or b"0"))


def newest_written(client: redis.Redis, job_id: str) -> int:
    """The newest run of the job written to NexusLIMS's database (0: none)."""
    return int(text(cast(bytes | None, client.get(nexuslims_newest_key(job_id))) or b"0"))


def forget(client: redis.Redis, job_id: str, run: int) -> None:
    """The run will never be written (replaced, or written already): it waits no more."""
    client.zrem(WAITING, waiting_member(job_id, run))
