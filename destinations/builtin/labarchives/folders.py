"""The tree ids of LabArchives folders, remembered per notebook so a record skips the lookups.

Folders are found by listing a tree level, one rate-limited call per level.
Remembering ``NexusLIMS Records`` and ``<instrument>`` leaves three calls per
record (page, entry, attachment). Entries expire, and the destination drops a
notebook's entries when the service answers that a node does not exist (a
folder deleted or moved in the web interface).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol

KEY_PREFIX = "nxexport:labarchives:folders"
# Finding and creating two folders is at most four calls, a few seconds apart.
LOCK_SECONDS = 60


class FolderCache(Protocol):
    """Folder tree ids by notebook and path (``("NexusLIMS Records", "<instrument>")``)."""

    def get(self, nbid: str, path: tuple[str, ...]) -> str | None:
        """The cached tree id, or None."""
        ...

    def put(self, nbid: str, path: tuple[str, ...], tree_id: str) -> None:
        """Remember a folder's tree id."""
        ...

    def drop(self, nbid: str) -> None:
        """Forget every folder of a notebook."""
        ...

    def creating(self, nbid: str) -> AbstractContextManager[Any]:
        """Held while finding or creating a notebook's folders, so only one worker creates."""
        ...


def account_hash(url: str, access_key_id: str) -> str:
    """A short stable name for one service account, without revealing the key id."""
    return hashlib.sha256(f"{url}\n{access_key_id}".encode()).hexdigest()[:16]


class MemoryFolderCache:
    """Folder ids in this process, for a destination without Redis."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, tuple[str, ...]], tuple[str, float]] = {}
        self._creating = threading.Lock()

    def get(self, nbid: str, path: tuple[str, ...]) -> str | None:
        """The cached tree id, or None once expired."""
        with self._lock:
            entry = self._entries.get((nbid, path))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, nbid: str, path: tuple[str, ...], tree_id: str) -> None:
        """Remember a folder's tree id for ``ttl`` seconds."""
        with self._lock:
            self._entries[(nbid, path)] = (tree_id, time.monotonic() + self.ttl)

    def drop(self, nbid: str) -> None:
        """Forget every folder of a notebook."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == nbid]:
                del self._entries[key]

    def creating(self, nbid: str) -> AbstractContextManager[Any]:
        """One lock for the process: folder creation is rare."""
        return self._creating


class RedisFolderCache:
    """Folder ids in one Redis hash per notebook, shared by every worker.

    Parameters
    ----------
    client
        A redis-py client.
    account
        ``account_hash`` of the service account: notebook ids are per account.
    ttl
        Seconds a notebook's folder ids are kept after the last one was added.
    """

    def __init__(self, client: Any, account: str, ttl: float) -> None:
        self.client = client
        self.account = account
        self.ttl = ttl

    def _key(self, nbid: str) -> str:
        return f"{KEY_PREFIX}:{self.account}:{nbid}"

    def get(self, nbid: str, path: tuple[str, ...]) -> str | None:
        """The cached tree id, or None."""
        value = self.client.hget(self._key(nbid), json.dumps(path))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def put(self, nbid: str, path: tuple[str, ...], tree_id: str) -> None:
        """Remember a folder's tree id; the notebook's entries expire together."""
        with self.client.pipeline() as pipe:
            pipe.hset(self._key(nbid), json.dumps(path), tree_id)
            pipe.expire(self._key(nbid), max(1, int(self.ttl)))
            pipe.execute()

    def drop(self, nbid: str) -> None:
        """Forget every folder of a notebook."""
        self.client.delete(self._key(nbid))

    def creating(self, nbid: str) -> AbstractContextManager[Any]:
        """A Redis lock per notebook; it expires should its holder die."""
        lock: AbstractContextManager[Any] = self.client.lock(
            f"{self._key(nbid)}:lock", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS
        )
        return lock
