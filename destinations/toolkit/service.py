"""What the HTTP destinations share around their exports: settings, the record, the contract."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from destinations.contract import ExportContext, ExportResult
from destinations.errors import ExportError, PermanentExportError, TransientExportError
from destinations.files.confined import ConfinedReadError, read_record
from destinations.toolkit.http import validation_message

logger = logging.getLogger(__name__)


class ServiceDestination:
    """What CDCS, eLabFTW and LabArchives share: enabled by their settings, checked by one call.

    A service names its required settings (``required``: variable, value) and
    its check call (``check_service``, raising ``ExportError``); its ``export``
    runs ``_export`` under ``guarded_export``.
    """

    name: str

    def required(self) -> Sequence[tuple[str, str]]:
        raise NotImplementedError

    def check_service(self) -> str | None:
        """One cheap call that proves the settings work; a problem's message, or None."""
        raise NotImplementedError

    @property
    def enabled(self) -> bool:
        """Configured when every required setting is set."""
        return all(value for _, value in self.required())

    def validate_config(self) -> tuple[bool, str | None]:
        missing = missing_setting(self.name, self.required())
        if missing:
            return False, missing
        try:
            problem = self.check_service()
        except ExportError as exc:
            return False, validation_message(exc)
        return problem is None, problem

    def _failure(self, message: str) -> ExportResult:
        return failed(self.name, message)


def missing_setting(destination: str, required: Iterable[tuple[str, str]]) -> str | None:
    """The message for the first required ``(variable, value)`` that is empty, or None."""
    for env_name, value in required:
        if not value:
            return f"{destination}: setting missing: {env_name} is not set"
    return None


def record_bytes(destination: str, context: ExportContext) -> bytes:
    """The record's bytes, read confined; one that cannot be read fails the export for good."""
    try:
        return read_record(context.xml_file_path)
    except ConfinedReadError as exc:
        raise PermanentExportError(f"{destination}: {exc}") from None


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
