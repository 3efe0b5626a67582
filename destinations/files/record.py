"""Checks that a record file is one the destinations can export.

Run before a job is enqueued and again on the worker, so a bad record is
reported with a specific message instead of failing in every destination.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from lxml import etree

from destinations.files.confined import ConfinedReadError, MissingFileError, open_confined

NEXUS_NAMESPACE = "https://data.nist.gov/od/dm/nexus/experiment/v1.0"
ROOT_ELEMENT = f"{{{NEXUS_NAMESPACE}}}Experiment"


class RecordError(ValueError):
    """The record file cannot be exported; the message says why."""


def check_record(
    path: Path, max_bytes: int, records_root: Path | None = None, schema: Path | None = None
) -> bytes:
    """Raise ``RecordError`` unless ``path`` is a readable, well-formed NexusLIMS record.

    With ``schema`` (an XSD), the record must also be valid against it. Returns
    the bytes checked, so a caller needing them does not open the file again.
    """
    data = read_record_file(path, max_bytes, records_root)
    check_record_bytes(data, str(path))
    if schema is not None:
        check_against_schema(data, str(path), schema)
    return data


def read_record_file(path: Path, max_bytes: int, records_root: Path | None = None) -> bytes:
    """The bytes of the record at ``path``, opened as every caller-named file is.

    Through ``open_confined``: a FIFO or a device at the path (put there since a
    check, too) is refused without blocking, the opened file must be a regular
    one, and no more than ``max_bytes`` are read. ``records_root`` None reads it
    from anywhere. Raises ``RecordError`` with the path and the reason.
    """
    try:
        data = open_confined(path, records_root, max_bytes, label="record")
    except MissingFileError:
        raise RecordError(f"record file {path} does not exist") from None
    except ConfinedReadError as error:
        raise RecordError(str(error)) from None
    if not data:
        raise RecordError(f"record file {path} is empty")
    return data


def check_against_schema(data: bytes, label: str, schema: Path) -> None:
    validator = _load_schema(str(schema))
    # Entities were refused above; parse without network access all the same.
    try:
        document = etree.fromstring(
            data, parser=etree.XMLParser(resolve_entities=False, no_network=True)
        )
    except etree.XMLSyntaxError as error:
        # Well-formed for the first check, yet beyond libxml2's limits (nesting
        # deeper than 256 elements, say): refuse it with the reason.
        raise RecordError(
            f"record {label} cannot be checked against {schema.name}: {error}"
        ) from None
    if not validator.validate(document):
        first = validator.error_log.last_error
        where = f"line {first.line}: " if first is not None else ""
        message = first.message if first is not None else "invalid"
        raise RecordError(f"record {label} is not valid against {schema.name}: {where}{message}")


@lru_cache(maxsize=4)
def _load_schema(path: str) -> etree.XMLSchema:
    try:
        return etree.XMLSchema(etree.parse(path, parser=etree.XMLParser(no_network=True)))
    except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as error:
        raise RecordError(f"NX_EXPORT_RECORD_SCHEMA {path} cannot be used: {error}") from None


def check_record_bytes(data: bytes, label: str) -> None:
    """Check the content of a record: UTF-8, XML, well formed, no entities, right root."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RecordError(f"record {label} is not UTF-8 (byte {error.start})") from None
    if not text.lstrip().startswith("<"):
        raise RecordError(f"record {label} is not XML (it does not start with '<')")
    try:
        # Entities are refused outright: an external one can read local files
        # (XXE) and nested ones can expand to gigabytes.
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise RecordError(
            f"record {label} declares XML entities, which are refused ({type(error).__name__})"
        ) from None
    except ParseError as error:
        raise RecordError(f"record {label} is not well-formed XML: {error}") from None
    if root.tag != ROOT_ELEMENT:
        raise RecordError(
            f"record {label} has root element {root.tag!r}; "
            f"expected nx:Experiment in {NEXUS_NAMESPACE}"
        )
