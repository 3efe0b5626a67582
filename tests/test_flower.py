"""Flower against the real worker: what an operator sees, and enqueuing through its HTTP API.

Flower is started the way operators start it (``nx-export flower``) before the
tasks run, because it only knows what it saw as events.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard_support import chromium_missing, headless_chromium
from tests.samples import make_context
from tests.support import (
    RedisServer,
    WorkerProcess,
    free_port,
    serving,
    wait_for,
    worker_env,
)

AUTH = ("user", "pass")
START_TIMEOUT = 60


@dataclass
class Flower:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, auth: Any = AUTH, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=auth, params=params, timeout=10)

    def post(self, path: str, body: dict[str, Any], auth: Any = AUTH) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", auth=auth, json=body, timeout=10)

    def tasks(self, **params: Any) -> dict[str, dict[str, Any]]:
        response = self.get("/api/tasks", **params)
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks


def _wait_until(flower: Flower, condition: Any, what: str) -> Any:
    """Like ``wait_for``, but fails at once, with Flower's log, if Flower exited."""

    def check() -> Any:
        if flower.process.poll() is not None:
            raise AssertionError(f"Flower exited with {flower.process.returncode}:\n{flower.log()}")
        try:
            return condition()
        except httpx.HTTPError:
            return None

    try:
        return wait_for(check, timeout=START_TIMEOUT, interval=0.2)
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}\nFlower log:\n{flower.log()}") from None


@pytest.fixture(scope="module")
def flower(
    redis_server: RedisServer,
    session_worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Flower]:
    port = free_port()
    env = worker_env(redis_server.url, None, FLOWER_BASIC_AUTH=":".join(AUTH))
    log_path = tmp_path_factory.mktemp("flower") / "flower.log"
    url = f"http://127.0.0.1:{port}"
    arguments = ["flower", f"--port={port}", "--address=127.0.0.1"]
    with serving(arguments, env, log_path, f"{url}/healthcheck") as process:
        running = Flower(url, process, log_path)

        def sees_session_worker() -> bool:
            # status=true reads Flower's event state: true once the worker's heartbeats arrive.
            workers = running.get("/api/workers", status="true").json()
            return any(name.startswith("session@") and up for name, up in workers.items())

        _wait_until(running, sees_session_worker, "Flower never saw the session worker's events")
        yield running


def test_a_failed_destination_shows_as_a_failed_task_and_the_job_still_finishes(
    flower: Flower, app: Any, record: Path
) -> None:
    from worker import enqueue_export

    context = make_context(record)
    job = enqueue_export(context, app=app, strategy="all", destinations=["alpha", "failing"])
    assert not job.wait(timeout=30).satisfied

    def job_tasks() -> dict[str, dict[str, Any]] | None:
        mine = {
            task["name"]: task
            for task in flower.tasks().values()
            if job.id in str(task.get("args") or "")
        }
        wanted = {
            "export.alpha": "SUCCESS",
            "export.failing": "FAILURE",
            "export.finish": "FAILURE",
        }
        # The job-finished notifications name the job too; they are not its export tasks.
        done = {name: task.get("state") for name, task in mine.items() if name in wanted}
        return {name: mine[name] for name in wanted} if done == wanted else None

    mine = _wait_until(flower, job_tasks, "Flower did not show the job's three tasks finished")

    # The failed destination is red in Flower, with its error; its sibling still ran.
    assert "DestinationFailedError" in mine["export.failing"]["exception"]
    assert "failing refused the record" in mine["export.failing"]["exception"]
    assert "'success': True" in mine["export.alpha"]["result"]

    finish = mine["export.finish"]
    assert finish["uuid"] == job.finish_task_id
    assert "JobFailedError" in finish["exception"]
    assert "1 of 2 destinations failed" in finish["exception"]
    assert "failing: failing refused the record" in finish["exception"]
    assert "alpha:" not in finish["exception"]
    assert context["session_identifier"] in finish["exception"]

    # Flower's FAILURE filter shows the failed destination and the job's finish, not alpha.
    failed = flower.tasks(state="FAILURE")
    assert job.finish_task_id in failed
    names = sorted(t["name"] for t in failed.values() if job.id in t["args"])
    assert names == ["export.failing", "export.finish"]

    # The arguments shown are the short summary, never the context itself.
    for name, task in mine.items():
        shown = task["args"]
        assert context["session_identifier"] in shown, (name, shown)
        assert f"job={job.id}" in shown and "record=record.xml" in shown, (name, shown)
        # The session first: Flower's args column shows the start of it.
        assert shown.startswith(f"(session={context['session_identifier']} "), (name, shown)
        assert len(shown) < 250, (name, shown)
        for hidden in (str(record), "behaviour", "metadata", "dt_from", context["dt_to"]):
            assert hidden not in shown, (name, hidden, shown)


def test_job_enqueued_through_flowers_api_completes(flower: Flower, app: Any, record: Path) -> None:
    from worker import get_job

    context = make_context(record)
    body = {"kwargs": {"context": context, "strategy": "all", "destinations": ["beta"]}}
    response = flower.post("/api/task/async-apply/export.record", body)
    assert response.status_code == 200, response.text
    task_id = response.json()["task-id"]

    def answered() -> dict[str, Any] | None:
        answer: dict[str, Any] = flower.get(f"/api/task/result/{task_id}").json()
        return answer if answer["state"] in ("SUCCESS", "FAILURE") else None

    answer = _wait_until(flower, answered, "export.record sent through Flower did not finish")
    assert answer["state"] == "SUCCESS", answer
    job = get_job(answer["result"]["job_id"], app=app).wait(timeout=30)
    assert job.satisfied and job.finished
    assert list(job.destinations) == ["beta"]
    assert job.destinations["beta"].state == "SUCCESS"
    assert job.session_identifier == context["session_identifier"]


def test_api_requires_basic_auth(flower: Flower) -> None:
    assert flower.get("/api/tasks", auth=None).status_code == 401
    assert flower.get("/api/tasks", auth=("user", "wrong")).status_code == 401
    refused = flower.post("/api/task/async-apply/export.record", {"kwargs": {}}, auth=None)
    assert refused.status_code == 401
    assert flower.get("/api/tasks").status_code == 200


def test_the_task_list_opens_with_the_columns_an_operator_needs(flower: Flower) -> None:
    page = flower.get("/tasks").text
    headers = re.findall(r"<th[^>]*>([^<]+)</th>", page)
    assert headers == ["Name", "args", "State", "Exception", "Received", "Runtime", "Worker"]


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_the_failed_list_shows_each_session_and_error_on_a_1400_px_screen(
    flower: Flower, app: Any, record: Path, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from worker import enqueue_export

    context = make_context(record)
    job = enqueue_export(context, app=app, strategy="all", destinations=["alpha", "failing"])
    assert not job.wait(timeout=30).satisfied
    session = context["session_identifier"]
    _wait_until(
        flower,
        lambda: any(t["name"] == "export.failing" and session in t["args"]
                    for t in flower.tasks(state="FAILURE").values()),
        "Flower did not list the failed destination",
    )  # fmt: skip
    browser = headless_chromium(width=1400, height=900, auth=AUTH)
    try:
        browser.get(f"{flower.url}/tasks")
        search = WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "input[type=search]")
        )
        search.send_keys(f"state:FAILURE {session}")

        def failed_row() -> str | None:
            try:  # the list refreshes itself: a row read may be gone the next moment
                rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
            except StaleElementReferenceException:
                return None
            return next((text for text in rows if "export.failing" in text), None)

        row = WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda _: failed_row())
        # What failed, where an operator looks: the session and the error, in the list.
        assert f"session={session}" in row
        assert "failing refused the record" in row
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 1400, f"the task list is {width} px wide"
        browser.save_screenshot(str(tmp_path / "flower-failed.png"))
        if os.environ.get("TEST_SCREENSHOTS"):
            browser.save_screenshot(os.environ["TEST_SCREENSHOTS"] + "/flower-failed.png")
    finally:
        browser.quit()

