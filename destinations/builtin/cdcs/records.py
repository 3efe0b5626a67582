"""Which CDCS data record is this session's, and whether it holds this very record.

CDCS keeps a title and the XML of each record, nothing else, so the session
must be found in one of them:

- a NexusLIMS record names its session in ``nx:id``; its title stays the file
  stem, and a record found by that title counts only if its ``nx:id`` is the
  session's;
- any other record is titled ``<file stem> (<session id>)`` (just the stem
  when the file is named after its session), so the title names the session.

Two records of the session are the same record when their XML has the same
checksum (over the parsed content, so CDCS re-serialising it does not matter);
otherwise the one found is an earlier build of the session's record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring

from destinations.contract import ExportContext
from destinations.files.record import NEXUS_NAMESPACE

SAME, OLDER = "same", "older"


@dataclass
class SessionRecord:
    """The record being exported, as CDCS sees it."""

    title: str
    session: str
    checksum: str
    title_names_session: bool
    older: str | None = None  # set by a lookup that found an earlier build

    @classmethod
    def of(cls, context: ExportContext, xml_text: str) -> SessionRecord:
        stem = context.xml_file_path.stem
        session = context.session_identifier
        root = _parse(xml_text)
        in_record = record_session_id(root) == session
        title = stem if stem == session or in_record else f"{stem} ({session})"
        names_session = title != stem or stem == session
        return cls(title, session, content_checksum(xml_text, root), names_session)

    def verdict(self, candidate: dict[str, Any]) -> str | None:
        """``SAME`` (this session, this content), ``OLDER`` (this session), or None (not ours)."""
        if candidate.get("title") != self.title or "id" not in candidate:
            return None
        content = candidate.get("xml_content")
        root = _parse(content) if isinstance(content, str) else None
        named = record_session_id(root)
        if named != self.session and not (named is None and self.title_names_session):
            return None
        if not isinstance(content, str) or content_checksum(content, root) == self.checksum:
            return SAME  # without the content, the title is all there is to go by
        return OLDER


def record_session_id(root: Element | None) -> str | None:
    """The session a NexusLIMS record names in ``nx:id``, if any."""
    if root is None:
        return None
    value = (root.findtext("nx:id", None, {"nx": NEXUS_NAMESPACE}) or "").strip()
    return value or None


def content_checksum(xml_text: str, root: Element | None = None) -> str:
    """SHA-256 over the parsed record (tags, attributes, text), else over the raw text."""
    root = root if root is not None else _parse(xml_text)
    digest = hashlib.sha256()
    if root is None:
        digest.update(xml_text.encode())
    else:
        _feed(digest, root)
    return digest.hexdigest()


def _feed(digest: Any, element: Element) -> None:
    digest.update(repr((element.tag, sorted(element.attrib.items()))).encode())
    digest.update(repr(((element.text or "").strip(), (element.tail or "").strip())).encode())
    for child in element:
        _feed(digest, child)
    digest.update(b"/")


def _parse(xml_text: str) -> Element | None:
    try:
        root: Element = fromstring(xml_text.encode(), forbid_dtd=True)
    except Exception:  # not XML, or refused by defusedxml: compare the raw text
        return None
    return root
