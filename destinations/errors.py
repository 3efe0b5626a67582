"""The two kinds of failure the worker's retry policy relies on.

Part of the plugin contract: ``destinations.contract`` (and ``destinations``)
re-export them and say which one ``export`` may raise.
"""

from __future__ import annotations


class ExportError(Exception):
    """A destination could not export a record.

    Messages name the destination, the call and what came back, never a secret.
    """


class TransientExportError(ExportError):
    """Worth trying again later: connection errors, timeouts, 429, 502/503/504.

    ``retry_after`` is the delay in seconds the service asked for, if any.
    Destinations may let this one exception out of ``export()`` to ask the
    worker for a retry; every other failure is returned as a result.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailableError(TransientExportError):
    """The service did not answer, or answered that it is down: connection refused or
    reset, a timeout, 502/503/504. Consecutive ones across jobs mark the destination
    *down*: its exports then wait for a probe instead of calling it (``tasks.export.outage``).
    """


class PermanentExportError(ExportError):
    """Trying again will not help: bad credentials, other 4xx, malformed answers.

    Destinations return it as a failed result; one that escapes ``export()`` is
    recorded as a failure too, without a retry.
    """


class DeferredExportError(TransientExportError):
    """Not yet: come back after ``retry_after``; nothing was sent.

    The worker retries without using up an attempt, however long the wait.
    """


class SlotsDeferredError(DeferredExportError):
    """The service's call slots are taken for a while: come back after ``retry_after``.

    Nothing was sent. The worker retries without using up an attempt, however
    long the wait; the slots stay reserved for the export's return.
    """


class AnswerPendingError(DeferredExportError):
    """An earlier copy's create call may still be answered: look it up only after that.

    The call log says the call was sent, and when; until that time plus the
    whole-call deadline (``NX_HTTP_TOTAL_TIMEOUT``) has passed, a lookup could
    miss an object the service is still creating. Nothing was sent.
    """


class LeaseLostError(TransientExportError):
    """This copy of the export no longer holds its lease: another copy may be exporting.

    Raised before a call or a write that the copy may no longer make. A
    destination lets it out of ``export`` (it is transient, so the service
    destinations' guards pass it on); the worker then stores nothing of this
    copy and makes no further call.
    """
