"""The export ledger from the command line: what backfill finds done, and ``forget``.

The ledger (``tasks.store.ledger``) keeps, for good, which record each
destination holds for each session. Backfill reads it to leave out the records
already exported everywhere the job would go (a dry run lists them); the
destination tasks check it again whatever enqueued them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from destinations.plan import ExportRequestError, plan_export
from tasks import catalog
from tasks.runtime import job_store, local_registry
from tasks.store.ledger import Ledger

# (session id, record checksum) -> (what each destination holds of it, whether that is all).
Lookup = Callable[[str, str], tuple[dict[str, dict[str, Any]], bool]]


def planned_destinations(
    app: Celery, destinations: Sequence[str], strategy: str | None
) -> tuple[list[str], str]:
    """The destinations a job would go to, and its strategy (as ``enqueue_export`` plans it)."""
    strategy = strategy or str(app.conf.nx_export_strategy)
    offered, disabled = catalog.available(app, local_registry(), destinations)
    plan = plan_export(strategy, offered, list(destinations) or None, known=sorted(disabled))
    return list(plan.destinations), plan.strategy


def backfill_lookup(
    app: Celery, destinations: Sequence[str], strategy: str | None
) -> Lookup | None:
    """What the ledger holds of a record at the destinations backfill plans for it.

    The record is done when every planned destination holds this very record
    (under ``first_success``, one of them). None when nothing can be planned:
    enqueuing then says why, record by record.
    """
    try:
        names, strategy = planned_destinations(app, destinations, strategy)
    except ExportRequestError:
        return None
    ledger = Ledger(job_store(app).client)

    def lookup(session: str, checksum: str) -> tuple[dict[str, dict[str, Any]], bool]:
        held = {
            name: entry.to_dict()
            for name, entry in ledger.held(names, session).items()
            if entry.checksum == checksum
        }
        done = bool(held) if strategy == "first_success" else len(held) == len(names)
        return held, done and bool(names)

    return lookup
