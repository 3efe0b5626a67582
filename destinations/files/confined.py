"""Reading a file on a caller's behalf, confined to the folder it must come from.

Anyone who can publish a task names the paths in its context: the record
(``xml_file_path``) and the preview images. The worker reads them with its own
rights, so every such read goes through ``open_confined``, on the worker, right
before the read — a check where the job was planned proves nothing about the
worker's files, nor about the file as it is now. The commands read the records
they are named the same way (``destinations.files.record.read_record_file``): a FIFO
or a device at the path, put there even after a check, is refused at once
instead of blocking the reader for ever. The file must be a regular
file inside its root (``NX_RECORDS_PATH`` for records, ``NX_DATA_PATH`` for
previews and attachments), reached without a symlink leaving the root, and no
larger than its limit. Without ``NX_RECORDS_PATH`` a worker reads no record
at all — any file it can read would otherwise be exported, its own
``/proc/self/environ`` and credentials included — unless
``NX_EXPORT_ALLOW_ANY_RECORD_PATH`` says to read them from anywhere.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pydantic import Field

from destinations.settings import NxSettings

RECORDS_ROOT = "NX_RECORDS_PATH"
DATA_ROOT = "NX_DATA_PATH"
RECORD_LIMIT = "NX_EXPORT_MAX_RECORD_BYTES"
ANY_RECORD_PATH = "NX_EXPORT_ALLOW_ANY_RECORD_PATH"


class ReadSettings(NxSettings):
    """Where a worker may read what a caller names: the records and NexusLIMS's data."""

    records_path: Path | None = Field(None, validation_alias=RECORDS_ROOT)
    data_path: Path | None = Field(None, validation_alias=DATA_ROOT)
    max_record_bytes: int = Field(50_000_000, validation_alias=RECORD_LIMIT, gt=0)
    allow_any_record_path: bool = Field(False, validation_alias=ANY_RECORD_PATH)


class ConfinedReadError(Exception):
    """A file was not read; the message names the path and the reason."""


class MissingFileError(ConfinedReadError):
    """There is no file at the path (or a symlink there leads nowhere)."""


def read_record(path: Path | str) -> bytes:
    """The record's bytes, read on the worker within ``NX_RECORDS_PATH``."""
    settings = ReadSettings()
    return open_confined(path, worker_records_root(path, settings), settings.max_record_bytes)


def worker_records_root(path: Path | str, settings: ReadSettings | None = None) -> Path | None:
    """The folder a worker reads the record ``path`` from; None (anywhere) only by opt-out.

    Raises ``ConfinedReadError`` naming ``NX_RECORDS_PATH`` when it is unset and
    ``NX_EXPORT_ALLOW_ANY_RECORD_PATH`` is not true: a worker without a records
    folder must not export whatever file a broker client names.
    """
    settings = settings or ReadSettings()
    if settings.records_path is None and not settings.allow_any_record_path:
        raise ConfinedReadError(
            f"record {path} not read: {RECORDS_ROOT} is not set on this worker "
            f"(set it to the records folder, or {ANY_RECORD_PATH}=true to read records "
            "from anywhere)"
        )
    return settings.records_path


def open_confined(
    path: Path | str,
    root: Path | None,
    max_bytes: int,
    *,
    label: str = "record",
    root_name: str = RECORDS_ROOT,
    limit_name: str = RECORD_LIMIT,
) -> bytes:
    """Read ``path`` if it is a regular file of at most ``max_bytes`` inside ``root``.

    The path is resolved here, then its last component is opened without
    following a symlink, and the opened file must be the one resolved (same
    device and inode) and still lie inside ``root``: a path swapped for a symlink
    between the check and the read is refused, not followed. ``root`` None reads
    from anywhere, with the same file-type and size checks.

    Raises ``ConfinedReadError`` with ``label`` and the path in its message.
    """
    given = Path(os.path.abspath(path))
    real = Path(os.path.realpath(given))
    root_real = Path(os.path.realpath(root)) if root is not None else None
    if root is not None and root_real is not None and not real.is_relative_to(root_real):
        inside = given.is_relative_to(os.path.abspath(root)) or given.is_relative_to(root_real)
        where = "leaves" if inside else "is outside"
        raise ConfinedReadError(
            f"{label} {path} {where} {root_name} ({root})"
            + (" through a symlink" if inside else "")
        )
    try:
        before = os.lstat(real)
    except OSError as error:
        raise _unreadable(path, label, error) from None
    if not stat.S_ISREG(before.st_mode):
        raise ConfinedReadError(f"{label} {path} is not a regular file")
    if before.st_size > max_bytes:
        raise _too_large(path, max_bytes, label, limit_name, before.st_size)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfinedReadError(f"{label} {path} became a symlink; not followed") from None
        raise _unreadable(path, label, error) from None
    try:
        # O_NONBLOCK made the open return at once even on a FIFO or a device put in
        # place since the lstat; what was opened is judged by the descriptor.
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise ConfinedReadError(f"{label} {path} is not a regular file")
        if _identity(opened) != _identity(before):
            raise ConfinedReadError(f"{label} {path} changed while it was opened; not read")
        now = _opened_path(fd, real, opened)
        if root_real is not None and (now is None or not now.is_relative_to(root_real)):
            raise ConfinedReadError(
                f"{label} {path} leaves {root_name} ({root}) through a symlink"
            )
        data = _read_at_most(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        # It grew since it was checked, or it is one of /proc's files, which report no size.
        raise _too_large(path, max_bytes, label, limit_name, None)
    return data


def _unreadable(path: Path | str, label: str, error: OSError) -> ConfinedReadError:
    if error.errno == errno.ENOENT:
        return MissingFileError(f"cannot read the {label} file {path}: {error.strerror}")
    return ConfinedReadError(f"cannot read the {label} file {path}: {error.strerror}")


def _too_large(
    path: Path | str, max_bytes: int, label: str, limit: str, size: int | None
) -> ConfinedReadError:
    shown = f"{size} bytes, " if size is not None else ""
    return ConfinedReadError(f"{label} file {path} is {shown}larger than {limit} ({max_bytes})")


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _opened_path(fd: int, resolved: Path, opened: os.stat_result) -> Path | None:
    """Where the opened file really is: the kernel's name for the descriptor.

    Where ``/proc`` is missing, the path resolved again, trusted only if it
    still names the opened file (None when it does not).
    """
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        again = Path(os.path.realpath(resolved))
        try:
            return again if _identity(os.stat(again)) == _identity(opened) else None
        except OSError:
            return None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
