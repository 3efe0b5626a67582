"""The dashboard's web app: pages, JSON API, retry, metrics and health check.

Server-rendered from the package's own templates and static files: no build
step and nothing fetched from elsewhere, so it works on an offline network.
Handlers that talk to Redis are plain functions, which Starlette runs in its
thread pool; the event loop never waits on Redis.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from celery import Celery
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tasks.export.outage import breaker_states
from tasks.jobs import JobNotFoundError, job_from_record, retry_failed
from tasks.query import MAX_LIMIT, JobPage, JobQuery, QueryError, find_jobs, get_jobs
from tasks.runtime import job_store
from tasks.store import index as job_index
from worker.dashboard import bulk, views
from worker.dashboard.metrics import exposition
from worker.dashboard.security import BasicAuth, RetryTokens

HERE = Path(__file__).parent


def _version() -> str:
    try:
        return version("nexuslims-export-worker")
    except PackageNotFoundError:
        return "dev"


class Dashboard:
    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        self.tokens = RetryTokens()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        env.filters["when"] = views.when
        env.filters["moment"] = views.moment
        env.globals.update(link=views.link, asset_version=_version())
        self.templates = Jinja2Templates(env=env)

    @property
    def store(self) -> Any:
        return job_store(self.celery)

    # -- pages ---------------------------------------------------------------------------

    def jobs_page(self, request: Request) -> Response:
        params = dict(request.query_params)
        error = None
        try:
            query = views.query_from(params)
            page = find_jobs(query, app=self.celery)
        except QueryError as problem:
            error, query, page = str(problem), JobQuery(), JobPage([], None)
        store = self.store
        names = job_index.names(store.client, job_index.DESTINATION_NAMES, store.retention)
        here = views.filter_link(params)
        context = {
            "query": query,
            "page": page,
            "error": error,
            "here": here,
            "next_link": (here + ("&" if "?" in here else "?") + "cursor=" + page.next_cursor)
            if page.next_cursor
            else None,
            "paged": bool(params.get("cursor")),
            "counts": job_index.live_count(store.client, store.retention),
            "destinations": names,
            "services": breaker_states(self.celery, names),
            "instruments": job_index.names(
                store.client, job_index.INSTRUMENT_NAMES, store.retention
            ),
            "state_link": lambda state: views.filter_link(params, state=state),
            "bulk": None if error else bulk.offer(query, page, params, self.tokens, self.celery),
        }
        return self.templates.TemplateResponse(
            request, "jobs.html", context, status_code=400 if error else 200
        )

    def job_page(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        job_id = request.path_params["job_id"]
        stored = self.store.load(job_id)
        if stored is None:
            return self.templates.TemplateResponse(
                request, "missing.html", {"job_id": job_id}, status_code=404
            )
        job = job_from_record(stored, self.celery)
        retried = request.query_params.get("retried")
        context = {
            "job": job,
            "context": views.safe_context(stored.job.context),
            "token": self.tokens.token(job_id) if views.retryable(job) else None,
            "notice": f"Retry started: run {retried} of this job." if retried else None,
            "error": error,
        }
        return self.templates.TemplateResponse(request, "job.html", context, status_code=status)

    async def retry(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        if not self.tokens.check(job_id, (form.get("csrf") or [""])[0]):
            return PlainTextResponse(
                "refused: this retry did not come from the job's page (missing or wrong token); "
                "reload the page and press Retry again\n",
                status_code=403,
            )
        try:
            job = await run_in_threadpool(retry_failed, job_id, None, self.celery)
        except JobNotFoundError as problem:
            return PlainTextResponse(f"{problem}\n", status_code=404)
        except ValueError as problem:  # still running, or nothing to retry
            return await run_in_threadpool(self.job_page, request, str(problem), 409)
        return RedirectResponse(f"/jobs/{job_id}?retried={job.runs}", status_code=303)

    async def retry_all(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        return await run_in_threadpool(
            bulk.retry_all, request, form, self.tokens, self.templates, self.celery
        )

    # -- JSON --------------------------------------------------------------------------

    def api_jobs(self, request: Request) -> Response:
        ids = request.query_params.getlist("id")
        if ids:
            jobs = get_jobs(ids[:MAX_LIMIT], app=self.celery)
            return JSONResponse({"jobs": [job.to_dict() for job in jobs], "next_cursor": None})
        try:
            query = views.query_from(dict(request.query_params))
            return JSONResponse(find_jobs(query, app=self.celery).to_dict())
        except QueryError as problem:
            return JSONResponse({"error": str(problem)}, status_code=400)

    def api_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        stored = self.store.load(job_id)
        if stored is None:
            return JSONResponse({"error": f"no job {job_id}"}, status_code=404)
        data = job_from_record(stored, self.celery).to_dict()
        data["context"] = views.safe_context(stored.job.context)
        return JSONResponse(data)

    # -- operations ----------------------------------------------------------------------

    def metrics(self, request: Request) -> Response:
        return Response(exposition(self.celery), media_type=CONTENT_TYPE_LATEST)

    def healthz(self, request: Request) -> Response:
        try:
            self.store.client.ping()
        except Exception as problem:  # any Redis or connection error: not healthy
            return PlainTextResponse(f"redis unreachable: {type(problem).__name__}\n", 503)
        return PlainTextResponse("ok\n")


def create_app(celery: Celery, user: str, password: str) -> Any:
    """The ASGI app, every path but ``/healthz`` behind basic auth."""
    dashboard = Dashboard(celery)
    routes = [
        Route("/", dashboard.jobs_page),
        Route("/jobs/{job_id}", dashboard.job_page),
        Route("/jobs/{job_id}/retry", dashboard.retry, methods=["POST"]),
        Route("/retry-all", dashboard.retry_all, methods=["POST"]),
        Route("/api/jobs", dashboard.api_jobs),
        Route("/api/jobs/{job_id}", dashboard.api_job),
        Route("/metrics", dashboard.metrics),
        Route("/healthz", dashboard.healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return BasicAuth(Starlette(routes=routes), user, password)
