"""The destination plugin contract, compatible with NexusLIMS's exporters.

A destination is any object with ``name``, ``priority``, ``enabled``,
``validate_config()`` and ``export(context)``; ``depends_on`` and
``prepare(context)`` are optional. The
data classes mirror NexusLIMS's ``ExportContext`` and ``ExportResult`` field for
field, so NexusLIMS plugins read and write them unchanged.

What ``export`` may raise, and what the worker does with it:

- Nothing, normally: a failure is returned as ``ExportResult(success=False,
  error_message=...)`` and recorded as the destination's result, without a retry.
- ``TransientExportError``, optionally with ``retry_after`` (seconds), to ask
  for a retry: the worker tries again after an exponential backoff with
  jitter of at most ``NX_EXPORT_BACKOFF_MAX_SECONDS``, or after ``retry_after``
  when that is longer (up to ``NX_EXPORT_RETRY_AFTER_MAX_SECONDS``), until the
  job's deadline (``NX_EXPORT_JOB_DEADLINE``) or the optional cap
  ``NX_EXPORT_MAX_ATTEMPTS`` (each may be set per destination,
  ``NX_EXPORT_<NAME>_...``); then it records a failure "gave up after N
  attempts: <why>".
- ``SlotsDeferredError``, a ``TransientExportError`` for a wait that is not a
  failure (the service's call slots are taken; nothing was sent): retried
  after ``retry_after`` as often as needed, without using up an attempt.
- Anything else (``PermanentExportError`` included) is a failure: the worker
  logs the traceback and records "<name> raised <type>: <message>", without a
  retry. Returning the failure as a result is the better way.

A destination with ``depends_on`` may define ``prepare(context) -> dict``: it
runs beside the destinations it depends on (it cannot read their results),
and ``export`` then finds what it returned in ``context.prepared``. Whatever
``prepare`` raises is logged and ``context.prepared`` stays empty, so
``export`` must still be able to do everything itself.

Messages end up in job records and logs: never put a secret in one.
``ExportError`` is the base of both error classes.

``context.call_log`` remembers, per job and destination, the remote objects an
export created (``record(key, id)`` as soon as each exists, ``get(key)`` on a
later attempt), so a retry, a redelivery or ``nx-export retry`` resumes where
the last attempt stopped instead of searching the service. The worker keeps it
in Redis for the job's retention period; elsewhere (a direct call) a context
gets a log in memory, which lasts as long as the context.

``context.holds_lease()`` says whether this copy of the export still holds its
lease: a copy that was paused or cut off past the lease's lifetime may find
another copy exporting in its place. It is cheap (no round trip while the
lease's renewals are on time). A destination that gets False makes no further
call and raises ``LeaseLostError``; the worker's call log and the toolkit's
HTTP calls check it by themselves. Outside a worker it is always True.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from destinations.errors import (
    ExportError,
    LeaseLostError,
    PermanentExportError,
    SlotsDeferredError,
    TransientExportError,
)

__all__ = [
    "Activity",
    "CallLog",
    "Destination",
    "ExportContext",
    "ExportError",
    "ExportResult",
    "LeaseLostError",
    "MemoryCallLog",
    "PermanentExportError",
    "ReservationEvent",
    "SlotsDeferredError",
    "TransientExportError",
    "dependencies_of",
]


@dataclass
class ExportResult:
    """The outcome of one export attempt at one destination.

    Parameters
    ----------
    success
        Whether the record reached the destination.
    destination_name
        Name of the destination that produced this result.
    record_id, record_url
        The destination's identifier and a link people can open, on success.
    error_message
        What went wrong, on failure.
    timestamp
        When the attempt finished.
    metadata
        Destination-specific extras (JSON-serialisable).
    """

    success: bool
    destination_name: str
    record_id: str | None = None
    record_url: str | None = None
    error_message: str | None = None
    timestamp: datetime = field(default_factory=datetime.now)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Activity:
    """One acquisition activity of a session: its data files and preview images."""

    files: list[str] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)


@dataclass
class ReservationEvent:
    """The booking behind a session, when the LIMS knows it."""

    username: str | None = None
    user_email: str | None = None
    user_first_name: str | None = None
    user_last_name: str | None = None


class CallLog(Protocol):
    """What one export at one destination created so far, by key (e.g. ``"page"`` -> its id)."""

    def get(self, key: str) -> str | None:
        """The value recorded under ``key`` by this or an earlier attempt, or None."""
        ...

    def record(self, key: str, value: str) -> None:
        """Remember ``value`` under ``key`` before going on (it must survive a crash after)."""
        ...


class MemoryCallLog:
    """A call log that lasts as long as its context (direct calls, tests)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        """The value recorded under ``key``, or None."""
        return self._values.get(key)

    def record(self, key: str, value: str) -> None:
        """Remember ``value`` under ``key``."""
        self._values[key] = value


@dataclass
class ExportContext:
    """Everything a destination needs to export one record.

    The record stays on disk at ``xml_file_path``; destinations read it there.
    ``previous_results`` holds the results of the destinations this one depends
    on (for example the CDCS record a notebook links to) and the successful
    results of the job's earlier runs; never a sibling's that merely finished
    first. ``prepared`` holds what this destination's ``prepare`` returned.
    """

    xml_file_path: Path
    session_identifier: str
    instrument_pid: str
    dt_from: datetime
    dt_to: datetime
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    previous_results: dict[str, ExportResult] = field(default_factory=dict)
    activities: list[Activity] = field(default_factory=list)
    reservation_event: ReservationEvent | None = None
    prepared: dict[str, Any] = field(default_factory=dict)

    @property
    def call_log(self) -> CallLog:
        """The call log of this export (not a field: it never travels in a message)."""
        log: CallLog | None = self.__dict__.get("_call_log")
        if log is None:
            log = self.__dict__["_call_log"] = MemoryCallLog()
        return log

    @call_log.setter
    def call_log(self, log: CallLog) -> None:
        self.__dict__["_call_log"] = log

    def holds_lease(self) -> bool:
        """Whether this copy of the export may still call the service (True without a worker)."""
        check: Callable[[], bool] | None = self.__dict__.get("_lease_check")
        return True if check is None else bool(check())

    @property
    def lease_check(self) -> Callable[[], bool] | None:
        """What ``holds_lease`` asks (not a field: it never travels in a message)."""
        check: Callable[[], bool] | None = self.__dict__.get("_lease_check")
        return check

    @lease_check.setter
    def lease_check(self, check: Callable[[], bool] | None) -> None:
        self.__dict__["_lease_check"] = check

    def get_result(self, destination_name: str) -> ExportResult | None:
        """Return the result of a destination that already ran, or None."""
        return self.previous_results.get(destination_name)

    def add_result(self, destination_name: str, result: ExportResult) -> None:
        """Record the result of a destination."""
        self.previous_results[destination_name] = result

    def has_successful_export(self, destination_name: str) -> bool:
        """Whether a destination already ran and succeeded."""
        result = self.get_result(destination_name)
        return result is not None and result.success


@runtime_checkable
class Destination(Protocol):
    """What the worker needs from a destination plugin.

    ``export`` returns every failure as an ``ExportResult`` with
    ``success=False`` and a message; the one exception it may raise is
    ``TransientExportError`` (optionally with ``retry_after``), to be tried
    again later (see the module docstring for what the worker does with each).
    ``priority`` (0-1000) orders destinations, higher first. A destination may
    also declare ``depends_on: tuple[str, ...]``, the names of destinations
    whose results it reads; it then starts as soon as they finished, whatever
    their outcome, and may define ``prepare(context) -> dict`` to run beside them.
    """

    name: str
    priority: int

    @property
    def enabled(self) -> bool:
        """Whether the destination is configured and should receive records."""
        ...

    def validate_config(self) -> tuple[bool, str | None]:
        """Check the configuration; return (ok, what is wrong)."""
        ...

    def export(self, context: ExportContext) -> ExportResult:
        """Export the record described by ``context``; raise only ``TransientExportError``."""
        ...


def dependencies_of(destination: Destination) -> tuple[str, ...]:
    """The names a destination depends on (none for NexusLIMS plugins)."""
    return tuple(getattr(destination, "depends_on", ()) or ())
