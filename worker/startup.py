"""What a worker found when it started: every destination, its queue and its check.

``nx-export worker`` prints this report before consuming anything; with
``NX_EXPORT_STRICT_STARTUP=true`` it refuses to start when an enabled
destination fails ``validate_config``. ``nx-export destinations`` shows the same.
"""

from __future__ import annotations

from typing import Any

from destinations.contract import dependencies_of
from destinations.files.confined import ANY_RECORD_PATH, DATA_ROOT, RECORDS_ROOT, ReadSettings
from destinations.names import queue_name
from destinations.registry import Registry


def destination_rows(registry: Registry, check: bool) -> list[dict[str, Any]]:
    """One row per discovered destination; ``check`` runs ``validate_config`` on enabled ones."""
    enabled = registry.enabled()
    replaced = {name: previous for name, previous, _ in registry.replaced}
    rows = []
    for destination in registry:
        row: dict[str, Any] = {
            "name": destination.name,
            "enabled": destination.name in enabled,
            "priority": destination.priority,
            "depends_on": list(dependencies_of(destination)),
            "queue": queue_name(destination.name),
            "origin": registry.origins[destination.name],
        }
        if destination.name in replaced:
            row["replaces"] = replaced[destination.name]
        if destination.name in registry.dependency_settings:
            row["depends_on_from"] = registry.dependency_settings[destination.name]
        if check and row["enabled"]:
            try:
                ok, message = destination.validate_config()
            except Exception as error:  # validate_config should not raise; report it if it does
                ok, message = False, f"validate_config raised {type(error).__name__}: {error}"
            row["valid"], row["problem"] = ok, message
        rows.append(row)
    return rows


def skipped_rows(registry: Registry) -> list[dict[str, str]]:
    return [{"origin": origin, "reason": reason} for origin, reason in registry.skipped]


def failed_checks(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{row['name']}: {row['problem']}" for row in rows if row.get("valid") is False]


def read_report() -> list[str]:
    """How this worker reads what a caller names, one line each; warnings say so."""
    settings = ReadSettings()
    if settings.records_path is not None:
        lines = [f"records: read only below {RECORDS_ROOT} ({settings.records_path})"]
    elif settings.allow_any_record_path:
        lines = [
            f"WARNING: records: {RECORDS_ROOT} is not set and {ANY_RECORD_PATH} is true: "
            "records are read from anywhere; any path a task names that this worker can "
            "read is exported"
        ]
    else:
        lines = [
            f"WARNING: records: {RECORDS_ROOT} is not set: every record is refused "
            f"(set it to the records folder, or {ANY_RECORD_PATH}=true to read from anywhere)"
        ]
    if settings.data_path is None:
        lines.append(f"WARNING: {DATA_ROOT} is not set: preview images are not read")
    return lines
