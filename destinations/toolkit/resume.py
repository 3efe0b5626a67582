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
"""

from __future__ import annotations

from collections.abc import Callable

from destinations.contract import CallLog, ExportContext, MemoryCallLog

SENT = "(sent)"  # no service hands out this id
BEGAN = "began"


class Resume:
    """One attempt's view of its export's call log."""

    def __init__(self, context: ExportContext) -> None:
        self.log: CallLog = getattr(context, "call_log", None) or MemoryCallLog()
        attempt = int(context.metadata.get("export_attempt", 1) or 1)
        began = self.log.get(BEGAN)
        # Without a log of the earlier attempts, they may have created anything.
        self.unknown_past = began is None and attempt > 1
        if began is None:
            self.log.record(BEGAN, str(attempt))

    def done(self, key: str) -> str | None:
        """The id recorded under ``key``, if the object was created."""
        value = self.log.get(key)
        return None if value in (None, SENT) else value

    def may_exist(self, key: str) -> bool:
        """Whether an earlier attempt may have created ``key`` without recording its id."""
        value = self.log.get(key)
        return value == SENT or (value is None and self.unknown_past)

    def create(self, key: str, make: Callable[[], str]) -> str:
        """Call ``make`` (a create call returning the new id), recorded before and after."""
        self.log.record(key, SENT)
        value = make()
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
