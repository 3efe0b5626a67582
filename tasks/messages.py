"""The JSON form of contexts and results, as they travel in task messages and the job store."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from destinations.contract import ExportContext, ExportResult
from destinations.redaction import redact_message
from destinations.redaction import redact_value as redact
from tasks.identifiers import InvalidNameError, check_name, for_log

_CONTEXT = TypeAdapter(ExportContext)
_RESULT = TypeAdapter(ExportResult)
_CONTEXT_FIELDS = {f.name for f in dataclasses.fields(ExportContext)}
# The context's names a LIMS chooses, which end up in logs, keys and titles.
NAMES = ("session_identifier", "instrument_pid", "user")
_RESULT_FIELDS = [f.name for f in dataclasses.fields(ExportResult)]


class InvalidContextError(ValueError):
    """A context that cannot describe an export; the message says which field and why."""


def context_from_message(data: Any) -> ExportContext:
    """Validate a context received as JSON and build an ``ExportContext``."""
    if isinstance(data, ExportContext):
        context = data
    else:
        if not isinstance(data, Mapping):
            raise InvalidContextError(f"context must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - _CONTEXT_FIELDS)
        if unknown:
            # Names a sender chose, escaped: this message reaches the log.
            named = ", ".join(for_log(name) for name in unknown)
            raise InvalidContextError(f"context has unknown fields: {named}")
        try:
            context = _CONTEXT.validate_python(dict(data))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'context'}: {item['msg']}"
                for item in error.errors()
            )
            raise InvalidContextError(f"invalid context: {problems}") from None
    check_context(context)
    return context


def check_context(context: ExportContext) -> None:
    """Checks pydantic's types cannot express."""
    for name in NAMES:
        try:
            check_name(name, getattr(context, name))
        except InvalidNameError as problem:
            raise InvalidContextError(f"invalid context: {problem}") from None
    if not context.session_identifier.strip():
        raise InvalidContextError("invalid context: session_identifier is empty")
    if not context.instrument_pid.strip():
        raise InvalidContextError("invalid context: instrument_pid is empty")
    if _comparable(context.dt_to) < _comparable(context.dt_from):
        raise InvalidContextError(
            f"invalid context: session ends ({context.dt_to.isoformat()}) before it starts "
            f"({context.dt_from.isoformat()})"
        )


def _comparable(moment: datetime) -> datetime:
    # Mixing naive and aware datetimes would raise; read naive ones as local time.
    return moment if moment.tzinfo else moment.astimezone()


def context_to_message(context: ExportContext) -> dict[str, Any]:
    """JSON for a task message; results of other destinations travel via the job store."""
    message: dict[str, Any] = _CONTEXT.dump_python(context, mode="json")
    message.pop("previous_results", None)
    message.pop("prepared", None)
    return message


def describe_context(context: Mapping[str, Any] | ExportContext) -> str:
    """A short, secret-free line for Flower and logs."""
    get = context.get if isinstance(context, Mapping) else lambda key: getattr(context, key, None)
    record = get("xml_file_path")
    # Escaped: a stored job's values may predate the control-character check.
    return for_log(
        f"session={get('session_identifier')!s} instrument={get('instrument_pid')!s} "
        f"record={Path(str(record)).name if record else None}"
    )


def result_to_json(result: Any, destination_name: str) -> dict[str, Any]:
    """JSON of any result object with ``ExportResult``'s fields (NexusLIMS's own included)."""
    if not isinstance(result, ExportResult):
        result = ExportResult(
            success=bool(getattr(result, "success", False)),
            destination_name=str(getattr(result, "destination_name", None) or destination_name),
            **{
                name: getattr(result, name)
                for name in _RESULT_FIELDS[2:]
                if getattr(result, name, None) is not None
            },
        )
    data: dict[str, Any] = _RESULT.dump_python(result, mode="json")
    # Results are stored in Redis and shown in Flower: a plugin that puts a
    # traceback or a signed URL in its message must not leak credentials there.
    # Record URLs keep their query (CDCS's is "data?id=…"); error messages do not.
    if data.get("error_message"):
        data["error_message"] = redact_message(data["error_message"])
    return cast(dict[str, Any], redact(data))


def result_from_json(data: Mapping[str, Any]) -> ExportResult:
    return _RESULT.validate_python(dict(data))


def failure(destination_name: str, message: str) -> ExportResult:
    return ExportResult(success=False, destination_name=destination_name, error_message=message)
