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


class PermanentExportError(ExportError):
    """Trying again will not help: bad credentials, other 4xx, malformed answers.

    Destinations return it as a failed result; one that escapes ``export()`` is
    recorded as a failure too, without a retry.
    """


class SlotsDeferredError(TransientExportError):
    """The service's call slots are taken for a while: come back after ``retry_after``.

    Nothing was sent. The worker retries without using up an attempt, however
    long the wait; the slots stay reserved for the export's return.
    """
