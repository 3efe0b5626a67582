"""Resuming an export from its call log: reuse what an earlier attempt created.

Before each create call an export records its key as *sent*; once the service
answers, the new object's id replaces it. A later attempt (retry, redelivery,
``nx-export retry``) then knows, for every object, one of three things:

- an id: it exists; reuse it without a call;
- *sent*: the call went out but its answer was lost (a cut connection, a
  crash, an error answer): it may exist, so look it up before creating it;
- nothing: it was never asked for; create it without searching.

An attempt whose earlier attempts kept no log (a direct call with a fresh
context, a job begun before the log existed) may have created anything: it
looks everything up first, as exports did before the log.

*Sent* carries when (``(sent) <unix time>``). A call sent by another copy of
the export — one that lost its lease, paused or cut off mid-call — may still be
answered until that time plus the whole-call deadline (``NX_HTTP_TOTAL_TIMEOUT``);
until then a lookup could miss what the service is still creating, so the
attempt defers (``AnswerPendingError``: retried without using up an attempt)
and looks up afterwards. A call that ended unanswered in the copy that made it
(an error answer, a timeout, a cut connection) is marked bare ``(sent)``, as
all were before the time was kept: it is looked up at once. Every create first
checks that this copy still holds its export's lease (``ExportContext.holds_lease``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from destinations.contract import CallLog, ExportContext, MemoryCallLog
from destinations.errors import AnswerPendingError, LeaseLostError
from destinations.toolkit.http import HttpSettings

SENT = "(sent)"  # no service hands out this id
BEGAN = "began"


def sent_mark(when: float) -> str:
    """The log's value for a create call sent at ``when`` (unix time)."""
    return f"{SENT} {when:.3f}"


def is_sent(value: str | None) -> bool:
    """Whether ``value`` marks a create call sent without an answer (with or without its time)."""
    return value is not None and (value == SENT or value.startswith(f"{SENT} "))


def sent_at(value: str) -> float | None:
    """When a sent mark's call went out; None for a mark without its time."""
    try:
        return float(value.removeprefix(SENT))
    except ValueError:
        return None


class Resume:
    """One attempt's view of its export's call log."""

    def __init__(self, context: ExportContext, answer_within: float | None = None) -> None:
        self.log: CallLog = getattr(context, "call_log", None) or MemoryCallLog()
        holds = getattr(context, "holds_lease", None)
        self.holds_lease: Callable[[], bool] = holds if callable(holds) else lambda: True
        # How long after it was sent a create call may still be answered.
        self.answer_within = (
            HttpSettings().total_timeout if answer_within is None else answer_within
        )
        attempt = int(context.metadata.get("export_attempt", 1) or 1)
        began = self.log.get(BEGAN)
        # Without a log of the earlier attempts, they may have created anything.
        self.unknown_past = began is None and attempt > 1
        if began is None:
            self.log.record(BEGAN, str(attempt))

    def done(self, key: str) -> str | None:
        """The id recorded under ``key``, if the object was created."""
        value = self.log.get(key)
        return None if value is None or is_sent(value) else value

    def may_exist(self, key: str) -> bool:
        """Whether an earlier attempt may have created ``key`` without recording its id.

        ``AnswerPendingError`` while its create call may still be answered.
        """
        value = self.log.get(key)
        if not is_sent(value):
            return value is None and self.unknown_past
        when = sent_at(str(value))
        wait = 0.0 if when is None else when + self.answer_within - time.time()
        if wait > 0:
            raise AnswerPendingError(
                f"{key}: a create call sent {time.time() - float(when or 0):.0f} s ago may "
                f"still be answered; looking it up in {wait:.0f} s",
                retry_after=wait,
            )
        return True

    def check_lease(self) -> None:
        """Raise ``LeaseLostError`` unless this copy still holds its export's lease."""
        if not self.holds_lease():
            raise LeaseLostError("this copy lost its export's lease: another copy exports")

    def create(self, key: str, make: Callable[[], str]) -> str:
        """Call ``make`` (a create call returning the new id), recorded before and after."""
        self.check_lease()
        self.log.record(key, sent_mark(time.time()))
        try:
            value = make()
        except LeaseLostError:
            raise
        except Exception:
            # The call ended here unanswered: nothing can answer it any more, so the
            # next attempt looks it up at once (a copy that lost its lease cannot say so).
            with contextlib.suppress(Exception):
                self.log.record(key, SENT)
            raise
        self.log.record(key, value)
        return value

    def remember(self, key: str, value: str) -> str:
        """Record an object found at the service, or made without ``create``; returns ``value``."""
        self.log.record(key, value)
        return value

    def obtain(
        self, key: str, make: Callable[[], str], find: Callable[[], str | None]
    ) -> tuple[str, bool]:
        """The object's id and whether it already existed: recorded, found, or created now."""
        done = self.done(key)
        if done is not None:
            return done, True
        if self.may_exist(key):
            existing = find()
            if existing is not None:
                return self.remember(key, existing), True
        return self.create(key, make), False
