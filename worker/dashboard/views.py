"""What the pages show, apart from the web plumbing: filters from a query string,
a job's context without secrets, times for people."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from tasks.identifiers import InvalidNameError, check_name, shown
from tasks.jobs import ExportJob
from tasks.messages import redact
from tasks.query import JobQuery, QueryError

PAGE_SIZE = 50
FILTERS = ("state", "destination", "instrument", "session", "since")
# Every query parameter checked for control characters.
CHECKED = (*FILTERS, "limit", "cursor")
# Context keys whose values are never shown, whatever the LIMS put there.
SECRET_KEY = re.compile(r"pass|secret|token|key|auth|credential|cookie", re.IGNORECASE)


def query_from(params: Mapping[str, str], default_limit: int = PAGE_SIZE) -> JobQuery:
    """A ``JobQuery`` from the page's or the API's parameters; ``QueryError`` if one is bad."""
    since = (params.get("since") or "").strip()
    limit = (params.get("limit") or "").strip()
    for name in CHECKED:
        # No stored id has one, and an error page or a log must not repeat it raw.
        check_filter(name, params.get(name) or "")
    try:
        size = int(limit) if limit else default_limit
    except ValueError:
        raise QueryError(f"limit must be a whole number (got {shown(limit)})") from None
    return JobQuery(
        state=(params.get("state") or "all").strip() or "all",
        destination=(params.get("destination") or "").strip() or None,
        instrument=(params.get("instrument") or "").strip() or None,
        session=(params.get("session") or "").strip() or None,
        since=parse_since(since) if since else None,
        limit=size,
        cursor=params.get("cursor") or None,
    )


def check_filter(name: str, value: str) -> None:
    """``QueryError`` naming the parameter when its value holds a control character."""
    try:
        check_name(name, value)
    except InvalidNameError as problem:
        raise QueryError(str(problem)) from None


def parse_since(value: str) -> datetime:
    """An aware moment from 1970 on that a timestamp can hold; ``QueryError`` otherwise."""
    problem = (
        f"since {shown(value)} is not an ISO 8601 date or time between 1970-01-01 and "
        "9999-12-30 (e.g. 2026-03-04 or 2026-03-04T09:00)"
    )
    try:
        moment = datetime.fromisoformat(value)
        moment = moment if moment.tzinfo else moment.astimezone()
        # Year 1 in a zone east of UTC, or 9999-12-31 west of it, is out of range.
        timestamp = moment.astimezone(UTC).timestamp()
    except (ValueError, OverflowError, OSError):
        raise QueryError(problem) from None
    if timestamp < 0:
        raise QueryError(problem)
    return moment


def filter_link(params: Mapping[str, str], **changes: str | None) -> str:
    """The list page's URL with these filters changed (None drops one), from the first page."""
    kept = {key: params[key] for key in FILTERS if params.get(key)}
    for key, value in changes.items():
        if value:
            kept[key] = value
        else:
            kept.pop(key, None)
    return "/?" + urlencode(kept) if kept else "/"


def safe_context(value: Any, key: str = "") -> Any:
    """The job's context as stored, with secret-looking keys and configured secrets blanked."""
    if key and SECRET_KEY.search(key):
        return "***"
    if isinstance(value, Mapping):
        return {k: safe_context(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_context(item) for item in value]
    return redact(value)


def when(iso: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def moment(seconds: float | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def link(url: str | None) -> str | None:
    """A record URL that is safe as a link (http or https), or None."""
    if not url:
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def retryable(job: ExportJob) -> bool:
    """What ``retry_failed`` would accept: a finished job with something left to run."""
    if not job.finished or (job.strategy == "first_success" and job.satisfied):
        return False
    return any(not status.succeeded for status in job.destinations.values())
