"""The job record: its states, what is stored of the job and of each destination.

A job lives in one Redis hash: field ``job`` holds a ``StoredJob``, field
``dest:<name>`` a ``DestinationEntry``, both as JSON. The states are ``str``
enums whose values are the strings stored and shown, so a state compares equal
to its string and serialises as it. Every state change of a destination is a
method of its entry, so this module alone says what a state means.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

JOB_FIELD = "job"
DESTINATION_FIELD_PREFIX = "dest:"


class DestinationState(StrEnum):
    """Where one destination of a job stands (Celery's names for a task's states)."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"

    @property
    def has_outcome(self) -> bool:
        """The destination ran to a result, successful or not."""
        return self in (DestinationState.SUCCESS, DestinationState.FAILURE)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


class JobNotFoundError(LookupError):
    """No job with this id (never created, or older than the retention period)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def destination_field(name: str) -> str:
    return f"{DESTINATION_FIELD_PREFIX}{name}"


@dataclass
class StoredJob:
    """What was asked (record, strategy, destinations) and how the latest run ended."""

    id: str
    strategy: str = "all"
    destinations: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    summary: str | None = None
    finish_task_id: str | None = None
    runs: int = 1
    created_at: str | None = None
    finished_at: str | None = None
    satisfied: bool | None = None
    # How long the current run may take before any worker ends it (NX_EXPORT_JOB_DEADLINE).
    deadline_seconds: float | None = None
    # How often the finished run was told again: an outcome still in flight when its
    # deadline ended the run arrived later (``tasks.store.run_ending``).
    retold: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, job_id: str, raw: bytes | str | None) -> StoredJob:
        data = _known_fields(cls, json.loads(raw) if raw else {})
        return cls(**{**data, "id": job_id, "runs": int(data.get("runs", 1))})

    def begin_run(self, finish_task_id: str) -> None:
        """Open another run of the job (a retry of some of its destinations)."""
        self.finished_at = None
        self.satisfied = None
        self.finish_task_id = finish_task_id
        self.runs += 1
        self.retold = 0

    def finish(self, satisfied: bool) -> None:
        self.finished_at = now_iso()
        self.satisfied = satisfied

    def retell(self, satisfied: bool) -> None:
        """The finished run's verdict as its outcomes say now; told once more."""
        self.satisfied = satisfied
        self.retold += 1

    @property
    def telling(self) -> int:
        """Which telling of the finished run this is: 1 for its finish, then one more per retell."""
        return self.retold + 1


@dataclass
class DestinationEntry:
    """One destination of a job: its state, attempts and result; every attempt in ``history``."""

    state: DestinationState = DestinationState.PENDING
    attempts: int = 0
    task_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    skip_reason: str | None = None
    # While it retries: when the next attempt is due, and since when it has failed.
    next_attempt_at: str | None = None
    failing_since: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == DestinationState.SUCCESS

    def to_json(self) -> str:
        data = asdict(self)
        for optional in ("skip_reason", "next_attempt_at", "failing_since"):
            if data[optional] is None:
                del data[optional]  # stored only once it says something
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> DestinationEntry:
        data = _known_fields(cls, json.loads(raw) if raw else {})
        entry = cls(**data)
        entry.state = DestinationState(entry.state)
        return entry

    # -- state changes -----------------------------------------------------------------------

    def start(self, task_id: str | None) -> int:
        """Count a new attempt and return its number (1 for the first)."""
        self.attempts += 1
        self.state = DestinationState.STARTED
        self.task_id = task_id
        self.started_at = self.started_at or now_iso()
        self.finished_at = None
        self.next_attempt_at = None
        return self.attempts

    def retry(self, error: str, countdown: float) -> None:
        self.state = DestinationState.RETRY
        self.error = error
        self._remember("retry", error, retry_in=round(countdown, 1))
        now = datetime.now(UTC)
        self.next_attempt_at = (now + timedelta(seconds=countdown)).isoformat()
        self.failing_since = self.failing_since or now.isoformat()

    def finish(self, result: dict[str, Any]) -> None:
        """Store a destination's result (``result_to_json``'s form), success or failure."""
        success = bool(result.get("success"))
        self.state = DestinationState.SUCCESS if success else DestinationState.FAILURE
        self.result = result
        self.error = None if success else result.get("error_message")
        self._remember("success" if success else "failure", result.get("error_message"))
        self.finished_at = now_iso()
        self.next_attempt_at = None
        if success:
            self.failing_since = None

    def skip(self, reason: str) -> None:
        self.state = DestinationState.SKIPPED
        self.error = None
        self.skip_reason = reason

    def requeue(self) -> None:
        """Wait for another run, keeping the attempts and their history."""
        self.state = DestinationState.PENDING
        self.result = None
        self.error = None
        self.finished_at = None

    def _remember(self, outcome: str, error: str | None, **extra: Any) -> None:
        attempt = {"attempt": self.attempts, "at": now_iso(), "outcome": outcome, "error": error}
        self.history = [*self.history, {**attempt, **extra}]


@dataclass
class JobRecord:
    """A job's whole hash: the job and the entry of every destination written so far."""

    job: StoredJob
    destinations: dict[str, DestinationEntry]

    def to_fields(self) -> dict[str, str]:
        return {
            JOB_FIELD: self.job.to_json(),
            **{destination_field(n): e.to_json() for n, e in self.destinations.items()},
        }

    @classmethod
    def from_fields(cls, job_id: str, raw: Mapping[str, bytes | str]) -> JobRecord:
        return cls(
            job=StoredJob.from_json(job_id, raw.get(JOB_FIELD)),
            destinations={
                key.removeprefix(DESTINATION_FIELD_PREFIX): DestinationEntry.from_json(value)
                for key, value in raw.items()
                if key.startswith(DESTINATION_FIELD_PREFIX)
            },
        )

    def planned(self) -> dict[str, DestinationEntry]:
        """The entry of every destination of the latest plan, in plan order."""
        return {
            name: self.destinations.get(name) or DestinationEntry()
            for name in self.job.destinations
        }

    def outcomes(self) -> dict[str, bool]:
        """Whether each planned destination that ran to a result succeeded."""
        return {
            name: entry.succeeded
            for name, entry in self.planned().items()
            if entry.state.has_outcome
        }

    @property
    def state(self) -> JobState:
        if self.job.finished_at is not None:
            return JobState.FINISHED
        if any(e.state != DestinationState.PENDING for e in self.planned().values()):
            return JobState.RUNNING
        return JobState.QUEUED


def _known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Drop fields this version does not know, so a newer worker's record still reads."""
    known = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in known}
