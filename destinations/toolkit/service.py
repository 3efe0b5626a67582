"""What the three HTTP destinations share around their exports: settings checks and the contract."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from destinations.contract import ExportContext, ExportResult
from destinations.errors import PermanentExportError, TransientExportError

logger = logging.getLogger(__name__)


def missing_setting(destination: str, required: Iterable[tuple[str, str]]) -> str | None:
    """The message for the first required ``(variable, value)`` that is empty, or None."""
    for env_name, value in required:
        if not value:
            return f"{destination}: setting missing: {env_name} is not set"
    return None


def guarded_export(
    destination: str,
    context: ExportContext,
    run: Callable[[ExportContext], ExportResult],
    transient: Mapping[type[Exception], str] | None = None,
) -> ExportResult:
    """Run ``run(context)`` under the contract: only ``TransientExportError`` gets out.

    ``transient`` maps further exception types to a message; they are raised
    as transient too. Permanent errors and anything unexpected become a failed
    result.
    """
    try:
        return run(context)
    except TransientExportError:
        raise
    except PermanentExportError as exc:
        return failed(destination, str(exc))
    except Exception as exc:
        for kind, message in (transient or {}).items():
            if isinstance(exc, kind):
                raise TransientExportError(
                    f"{destination}: {message}: {type(exc).__name__}"
                ) from None
        logger.exception(
            "%s: unexpected error exporting %s", destination, context.session_identifier
        )
        return failed(destination, f"{destination}: unexpected error: {type(exc).__name__}")


def failed(destination: str, message: str) -> ExportResult:
    return ExportResult(success=False, destination_name=destination, error_message=message)
