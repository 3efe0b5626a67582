"""Which files of a folder any process opened: Linux inotify, read through ctypes.

The kernel reports every open (``IN_OPEN``) whatever the mount's atime options,
so a test can count the files a worker process read without reaching into it.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path
from types import TracebackType

IN_OPEN = 0x00000020
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows


class FileOpens:
    """Watch ``folder`` for opens; ``names()`` returns the files opened so far."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = -1
        self._seen: set[str] = set()

    def __enter__(self) -> FileOpens:
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self._fd, str(self.folder).encode(), IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {self.folder}")
        return self

    def names(self) -> set[str]:
        """Every file name opened in the folder since the watch began."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return set(self._seen)
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length]
                if mask & IN_OPEN and name.strip(b"\0"):
                    self._seen.add(name.rstrip(b"\0").decode())
                offset += _EVENT.size + length

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
