"""Destinations: where records go. The plugin contract, discovery and the built-ins.

Nothing here knows about Celery: a plugin author reads `destinations.contract`
and nothing else.
"""

from destinations.contract import (
    Activity,
    Destination,
    ExportContext,
    ExportError,
    ExportResult,
    PermanentExportError,
    ReservationEvent,
    TransientExportError,
)

__all__ = [
    "Activity",
    "Destination",
    "ExportContext",
    "ExportError",
    "ExportResult",
    "PermanentExportError",
    "ReservationEvent",
    "TransientExportError",
]
