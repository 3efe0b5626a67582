"""The session details both notebooks show: who, what, when, and links to other records.

eLabFTW's experiment body and LabArchives' summary entry list the same rows
and the same "View in CDCS" link; each adds its own headings and extras. Every
value is HTML-escaped here, so neither notebook can forget it. ``session_user``
is also who CDCS makes the record's owner, so every destination names the same
person.
"""

from __future__ import annotations

from html import escape

from destinations.contract import ExportContext


def session_user(context: ExportContext) -> str | None:
    """The session's user: ``context.user``, else the reservation's username, else None.

    ``context.user`` is what the LIMS (or ``nx-export enqueue --user``) recorded
    for the session, so it wins; the reservation fills in when it is empty.
    """
    event = context.reservation_event
    return context.user or (event.username if event else None)


def cdcs_url(context: ExportContext) -> str | None:
    """The CDCS record URL, when CDCS already exported this record."""
    result = context.get_result("cdcs")
    return result.record_url if result is not None and result.success else None


def session_rows(context: ExportContext) -> list[tuple[str, str]]:
    """The session details as (label, value) rows, in display order."""
    return [
        ("Session ID", context.session_identifier),
        ("Instrument", context.instrument_pid),
        ("User", session_user(context) or "unknown"),
        ("Start", context.dt_from.isoformat()),
        ("End", context.dt_to.isoformat()),
    ]


def session_details_html(context: ExportContext) -> str:
    """The session details as an HTML list."""
    items = "".join(
        f"<li><strong>{escape(label)}:</strong> {escape(value)}</li>"
        for label, value in session_rows(context)
    )
    return f"<ul>{items}</ul>"


def link_rows(context: ExportContext) -> list[str]:
    """One paragraph per related record already exported (today: the CDCS record)."""
    url = cdcs_url(context)
    return [link_html(url, "View in CDCS")] if url else []


def link_html(url: str, label: str) -> str:
    """A paragraph holding one link."""
    return f'<p><a href="{escape(url)}">{escape(label)}</a></p>'


def session_summary_html(
    context: ExportContext, heading: str, links_heading: str | None = None
) -> list[str]:
    """The summary's HTML blocks: heading, details, then the links (under their heading).

    Callers append their own blocks and join them with newlines.
    """
    parts = [f"<h2>{escape(heading)}</h2>", session_details_html(context)]
    links = link_rows(context)
    if links and links_heading:
        parts.append(f"<h2>{escape(links_heading)}</h2>")
    return parts + links
