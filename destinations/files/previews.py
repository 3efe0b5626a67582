"""The preview images a notebook entry embeds, read only from NexusLIMS's data folder.

A context lists a preview per acquired file; whoever publishes the task chooses
those paths. So a preview is read only inside ``NX_DATA_PATH`` (through
``destinations.files.confined``), only the first ``MAX_PREVIEWS`` are read at all, each
at most ``MAX_PREVIEW_BYTES``, and only an image by its content (PNG, JPEG, GIF,
WebP) is kept. What is left out is said, so the entry tells its reader why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from destinations.files.confined import DATA_ROOT, ConfinedReadError, ReadSettings, open_confined

logger = logging.getLogger(__name__)

MAX_PREVIEWS = 12
MAX_PREVIEW_BYTES = 2_000_000

# Leading bytes of each accepted image format, and its MIME type.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True)
class Preview:
    """One preview image, read and recognised."""

    name: str
    mime: str
    data: bytes


def image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, GIF or WebP image by its first bytes; else None."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_previews(paths: Iterable[str]) -> tuple[list[Preview], list[str]]:
    """The previews to embed, and one note per preview (or group) left out and why.

    Empty paths (a file without a preview) are skipped silently. Paths after the
    first ``MAX_PREVIEWS`` are not read.
    """
    named = [path for path in paths if path]
    if not named:
        return [], []
    root = ReadSettings().data_path
    if root is None:
        return [], [f"previews not included: {DATA_ROOT} is not set on the worker"]
    previews: list[Preview] = []
    notes: list[str] = []
    for path in named[:MAX_PREVIEWS]:
        try:
            data = open_confined(
                path, root, MAX_PREVIEW_BYTES,
                label="preview", root_name=DATA_ROOT, limit_name="the preview limit",
            )  # fmt: skip
        except ConfinedReadError as error:
            notes.append(f"not included: {error}")
            continue
        mime = image_type(data)
        if mime is None:
            notes.append(f"not included: preview {path} is not a PNG, JPEG, GIF or WebP image")
            continue
        previews.append(Preview(Path(path).name, mime, data))
    if len(named) > MAX_PREVIEWS:
        notes.append(
            f"not included: {len(named) - MAX_PREVIEWS} more previews "
            f"(at most {MAX_PREVIEWS} are shown)"
        )
    for note in notes:
        logger.warning("previews: %s", note)
    return previews, notes
