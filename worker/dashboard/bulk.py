"""The list page's "Retry all N shown": every job of the failed filter, retried in one POST.

The button is offered on the failed filter only. Its form carries the filter and
a token bound to it (``RetryTokens`` with the purpose ``retry-all``), so a token
from one filter's page retries nothing under another. The POST runs the same
bulk retry as ``nx-export retry --failed`` (``tasks.bulk_retry``) over the same
query and shows its summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from celery import Celery
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from tasks.bulk_retry import failed_query, retry_all_failed
from tasks.query import JobPage, JobQuery, QueryError, count_jobs
from worker.dashboard import views
from worker.dashboard.security import RetryTokens

PURPOSE = "retry-all"


def retry_query(query: JobQuery) -> JobQuery:
    """The bulk retry's query for the filter ``query`` shows (any page, any page size)."""
    if query.state != "failed":
        raise QueryError(f"Retry all takes the failed filter (state=failed, got {query.state!r})")
    return failed_query(query.destination, query.instrument, query.session, query.since)


def filter_key(query: JobQuery) -> str:
    """The filter as the token binds it: every field, normalised."""
    return urlencode({"state": query.state, "destination": query.destination or "",
                      "instrument": query.instrument or "", "session": query.session or "",
                      "since": query.since.isoformat() if query.since else ""})  # fmt: skip


def describe(query: JobQuery) -> str:
    """The filter in words, for the confirmation and the summary."""
    parts = ["failed" if not query.destination else f"failed in {query.destination}"]
    if query.instrument:
        parts.append(f"instrument {query.instrument}")
    if query.session:
        parts.append(f"session {query.session}")
    if query.since:
        parts.append(f"created since {views.when(query.since.isoformat())} UTC")
    return ", ".join(parts)


def offer(
    query: JobQuery, page: JobPage, params: Mapping[str, str], tokens: RetryTokens,
    celery: Celery,
) -> dict[str, Any] | None:  # fmt: skip
    """What the list page needs for its "Retry all" form; None when not on the failed filter."""
    if query.state != "failed" or not page.jobs:
        return None
    bulk = retry_query(query)
    paged = query.cursor is not None or page.next_cursor is not None
    count = count_jobs(bulk, app=celery) if paged else len(page.jobs)
    what = f"{query.destination} in " if query.destination else "the failed destinations of "
    return {
        "count": count,
        "paged": paged,
        "token": tokens.token(filter_key(bulk), PURPOSE),
        "fields": {key: params[key] for key in views.FILTERS if params.get(key)},
        "confirm": f"Retry {what}all {count} jobs shown ({describe(bulk)})? A job being "
        "retried elsewhere meanwhile is skipped.",
    }


def retry_all(
    request: Request, form: Mapping[str, list[str]], tokens: RetryTokens,
    templates: Jinja2Templates, celery: Celery,
) -> Response:  # fmt: skip
    """Check the filter and its token, retry its jobs, show the summary."""
    fields = {key: (form.get(key) or [""])[0] for key in views.FILTERS}
    try:
        bulk = retry_query(views.query_from(fields))
    except QueryError as problem:
        return PlainTextResponse(f"refused: {problem}\n", status_code=400)
    if not tokens.check(filter_key(bulk), (form.get("csrf") or [""])[0], PURPOSE):
        return PlainTextResponse(
            "refused: this retry did not come from the list page of this filter (missing or "
            "wrong token); reload the page and press Retry all again\n",
            status_code=403,
        )
    report = retry_all_failed(bulk, celery)
    context = {
        "report": report,
        "filter": describe(bulk),
        "failed_link": views.filter_link(fields),
        "all_link": views.filter_link(fields, state=None),
    }
    return templates.TemplateResponse(request, "retried.html", context)
