"""Every Redis key the worker writes, named in one place.

All keys start with ``nxexport:`` so an operator can tell them from Celery's
own (``celery-task-meta-*``, ``_kombu.*``, the queues). A job's keys expire
with it, after the retention period; the sorted sets are trimmed to it. The
export ledger (``ledger``) never expires: it is what was exported, for good. The
LabArchives destination keeps its own call slots and folder ids under
``nxexport:labarchives:`` (``destinations`` knows nothing of this package).
"""

from __future__ import annotations

import hashlib

KEY_PREFIX = "nxexport"

# -- jobs ---------------------------------------------------------------------------------

# Every job id, scored by its creation time.
JOB_INDEX = f"{KEY_PREFIX}:jobs"
# The sweep's schedules (see ``job_store``): unfinished jobs by deadline, runs
# whose canvas is not known to be sent, jobs whose every destination has its
# outcome, finished runs not yet announced.
DEADLINES = f"{KEY_PREFIX}:deadlines"
UNSENT = f"{KEY_PREFIX}:unsent"
SETTLED = f"{KEY_PREFIX}:settled"
ANNOUNCE = f"{KEY_PREFIX}:announce"


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}"


def idempotency_key(key: str) -> str:
    """The job a caller's ``job_key`` names (hashed: a key is the caller's own text)."""
    return f"{KEY_PREFIX}:key:{hashlib.sha256(key.encode()).hexdigest()}"


def claim_key(name: str) -> str:
    return f"{KEY_PREFIX}:claim:{name}"


# -- a destination of a job ---------------------------------------------------------------


def lease_key(job_id: str, destination: str) -> str:
    return f"{KEY_PREFIX}:lease:{job_id}:{destination}"


def call_log_key(job_id: str, destination: str) -> str:
    return f"{KEY_PREFIX}:calls:{job_id}:{destination}"


def waits_key(job_id: str, destination: str) -> str:
    return f"{KEY_PREFIX}:waits:{job_id}:{destination}"


def started_key(job_id: str, run: int, destination: str) -> str:
    """Set once a run's dependent (or successor) was added to its chord."""
    return f"{KEY_PREFIX}:started:{job_id}:{run}:{destination}"


# -- the export ledger (see ``ledger``) -------------------------------------------------


def ledger_key(destination: str) -> str:
    """One hash per destination: session id -> what was exported there. Never expires."""
    return f"{KEY_PREFIX}:ledger:{destination}"


# -- indexes (see ``index``) --------------------------------------------------------------

IDX = f"{KEY_PREFIX}:idx"
DESTINATION_NAMES = f"{IDX}:names:destination"
INSTRUMENT_NAMES = f"{IDX}:names:instrument"
# Set once the jobs written before the indexes existed were indexed.
INDEX_BUILT = f"{IDX}:built"


def state_key(state: str) -> str:
    return f"{IDX}:state:{state}"


def destination_key(name: str) -> str:
    return f"{IDX}:dest:{name}"


def count_scratch_key(token: str) -> str:
    """A set a count of the indexes builds and deletes in one transaction."""
    return f"{IDX}:count:{token}"


def destination_failure_key(name: str) -> str:
    return f"{IDX}:dest:{name}:failure"


def instrument_key(pid: str) -> str:
    return f"{IDX}:instrument:{pid}"


def session_key(session: str) -> str:
    return f"{IDX}:session:{session}"


# -- counters (see ``counters``) ----------------------------------------------------------

METRICS_EXPORTS = f"{KEY_PREFIX}:metrics:exports"
METRICS_DURATION = f"{KEY_PREFIX}:metrics:duration"
METRICS_RETRIES = f"{KEY_PREFIX}:metrics:retries"
METRICS_LAST_SUCCESS = f"{KEY_PREFIX}:metrics:last_success"

# -- workers ------------------------------------------------------------------------------

# What each worker serves, and its heartbeat.
CATALOG = f"{KEY_PREFIX}:catalog"
# The random key of the settings fingerprints (``destinations.fingerprint``); never expires.
FINGERPRINT_KEY = f"{KEY_PREFIX}:fingerprint-key"

# -- the NexusLIMS bridge -----------------------------------------------------------------

# Set by every bridge worker's heartbeat, for the retention period.
NEXUSLIMS_BRIDGE_SEEN = f"{KEY_PREFIX}:nexuslims:bridge"
# Set by every bridge worker's heartbeat, for two heartbeats: a bridge worker is alive.
NEXUSLIMS_BRIDGE_LIVE = f"{KEY_PREFIX}:nexuslims:bridge:live"
# Finished runs not yet written to NexusLIMS's database ("<job id>:<run>"; a bare job id,
# kept by an earlier version, stands for its job's latest run), scored by when offered.
NEXUSLIMS_WAITING = f"{KEY_PREFIX}:nexuslims:waiting"


def nexuslims_done_key(job_id: str, run: int | str) -> str:
    """Set once the run's outcome is committed to NexusLIMS's database."""
    return f"{KEY_PREFIX}:nexuslims:done:{job_id}:{run}"


def nexuslims_newest_key(job_id: str) -> str:
    """The newest run of the job written to NexusLIMS's database: an older one never is after it."""
    return f"{KEY_PREFIX}:nexuslims:newest:{job_id}"


def nexuslims_lock_key(session_identifier: str) -> str:
    return f"{KEY_PREFIX}:nexuslims:lock:{session_identifier}"


# -- destinations that are down (``breaker``) -----------------------------------------------


def breaker_key(destination: str) -> str:
    """A destination's breaker: failures in a row and since when, down since, next probe."""
    return f"{KEY_PREFIX}:breaker:{destination}"


def breaker_probe_key(destination: str) -> str:
    """Held by the one export probing a destination that is down."""
    return f"{KEY_PREFIX}:breaker:{destination}:probe"


def breaker_waiting_key(destination: str) -> str:
    """Exports waiting for a destination that is down, scored by when they come back."""
    return f"{KEY_PREFIX}:breaker:{destination}:waiting"
