"""One ERROR line per failed destination in the worker log.

A destination that fails ends its task in FAILURE, and Celery logs that line at
ERROR: it names the task, the session (its arguments) and the error. The same
failure used to come twice more: Celery's Redis backend logs the chord's
``ChordError`` with a traceback, and the job's ``export.finish`` fails with
``JobFailedError`` (an expected failure now: ``throws``, logged at INFO). The
chord's line says nothing the destination's did not, so it is logged at INFO.
"""

from __future__ import annotations

import logging

CHORD_LOGGER = "celery.backends.redis"


class ChordErrorAtInfo(logging.Filter):
    """The backend's "Chord … raised: ChordError(…)" at INFO, without its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith("Chord %r raised"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Idempotent; called when the app is built."""
    chord_logger = logging.getLogger(CHORD_LOGGER)
    if not any(isinstance(f, ChordErrorAtInfo) for f in chord_logger.filters):
        chord_logger.addFilter(ChordErrorAtInfo())
