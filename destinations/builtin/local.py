"""The local archive: a copy of every record on a disk the facility controls.

It is also the example for plugin authors: a destination is a small class with
``name``, ``priority``, ``enabled``, ``validate_config`` and ``export``, whose
``export`` reports failures as results instead of raising.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from destinations.contract import ExportContext, ExportResult
from destinations.files.confined import ConfinedReadError, read_record
from destinations.settings import NxSettings


class LocalArchiveSettings(NxSettings):
    path: Path | None = Field(None, validation_alias="NX_EXPORT_LOCAL_PATH")


class LocalArchiveDestination:
    """Write ``<NX_EXPORT_LOCAL_PATH>/<instrument_pid>/<session_identifier>.xml``.

    Beside the record goes ``<session_identifier>.json``: the context and the
    results of earlier destinations this export saw.
    """

    name = "local"
    priority = 50
    depends_on: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.settings = LocalArchiveSettings()

    @property
    def enabled(self) -> bool:
        return self.settings.path is not None

    def validate_config(self) -> tuple[bool, str | None]:
        root = self.settings.path
        if root is None:
            return False, "NX_EXPORT_LOCAL_PATH is not set"
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".nx-check-"):
                pass
        except OSError as error:
            return False, f"NX_EXPORT_LOCAL_PATH {root} is not writable: {error.strerror or error}"
        return True, None

    def export(self, context: ExportContext) -> ExportResult:
        root = self.settings.path
        if root is None:
            return self._failure("NX_EXPORT_LOCAL_PATH is not set")
        try:
            folder = root / _safe_component(context.instrument_pid)
            target = folder / f"{_safe_component(context.session_identifier)}.xml"
        except ValueError as error:
            return self._failure(str(error))
        try:
            record = read_record(context.xml_file_path)
        except ConfinedReadError as error:
            return self._failure(str(error))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, record)
            _write_atomically(target.with_suffix(".json"), _sidecar(context))
        except OSError as error:
            return self._failure(f"could not write {target}: {error.strerror or error}")
        return ExportResult(
            success=True,
            destination_name=self.name,
            record_id=str(target.relative_to(root)),
            record_url=target.as_uri(),
        )

    def _failure(self, message: str) -> ExportResult:
        return ExportResult(success=False, destination_name=self.name, error_message=message)


# Kept as they are in archive names; every other character is percent-encoded.
_PLAIN = frozenset("-_.~+@,=")


def _safe_component(value: str) -> str:
    """An injective file name for ``value`` that cannot climb out of the archive or hide.

    Characters other than letters, digits and ``-_.~+@,=`` become ``%XX`` (UTF-8),
    ``%`` included, so two different ids never share a file (``a/b`` is ``a%2Fb``,
    ``a_b`` stays ``a_b``); a leading dot is encoded, so no name is hidden.
    """
    if not value:
        raise ValueError(f"{value!r} cannot name a file in the archive")
    encoded = "".join(
        ch if ch.isalnum() or ch in _PLAIN else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in value
    )
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def _write_atomically(target: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _sidecar(context: ExportContext) -> bytes:
    def default(value: Any) -> str:
        if isinstance(value, datetime | Path):
            return str(value)
        return repr(value)

    document = asdict(context)
    document["exported_at"] = datetime.now().astimezone().isoformat()
    return json.dumps(document, indent=2, default=default, ensure_ascii=False).encode()
