"""One log record, one line of the worker's log it cannot forge.

Names a caller chose (session ids, record paths, destination names, job ids)
reach the log as arguments of a message or inside an exception's message,
which Celery logs with its traceback. A newline there would start a line of
the caller's making, such as a fake ``CRITICAL/MainProcess`` one. Every handler
of the worker's loggers gets ``EscapeControlCharacters``: string arguments are
escaped (``\\n``, ``\\x1b``...), and so is each exception's own message in a
traceback; the traceback's frames keep their lines.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger

from tasks.identifiers import control_character, for_log

# As the standard library words them between chained exceptions.
CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _escaped(value: Any) -> Any:
    return for_log(value) if isinstance(value, str) and control_character(value) else value


def exception_text(error: BaseException) -> str:
    """The traceback of ``error`` (and of its causes), each exception's message on one line."""
    return "".join(_lines(traceback.TracebackException.from_exception(error), set())).rstrip("\n")


def _lines(exception: traceback.TracebackException, seen: set[int]) -> list[str]:
    seen.add(id(exception))
    lines: list[str] = []
    cause, context = exception.__cause__, exception.__context__
    if cause is not None and id(cause) not in seen:
        lines += [*_lines(cause, seen), CAUSE]
    elif context is not None and not exception.__suppress_context__ and id(context) not in seen:
        lines += [*_lines(context, seen), CONTEXT]
    if exception.stack:
        lines += ["Traceback (most recent call last):\n", *exception.stack.format()]
    message = "".join(exception.format_exception_only()).rstrip("\n")
    lines.append(for_log(message) + "\n")
    return lines


class EscapeControlCharacters(logging.Filter):
    """Escapes control characters in a record's string arguments and exception messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_escaped(arg) for arg in record.args)
        elif isinstance(record.args, dict):  # Celery logs with one mapping of arguments
            record.args = {key: _escaped(value) for key, value in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = exception_text(record.exc_info[1])
        return True


_FILTER = EscapeControlCharacters()


def _add_to_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
    for handler in (logger or logging.getLogger()).handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def install() -> None:
    """Idempotent; called when the app is built, before Celery sets up its logging."""
    after_setup_logger.connect(_add_to_handlers, weak=False)
    after_setup_task_logger.connect(_add_to_handlers, weak=False)
