"""The dashboard in a real browser (headless Chromium) against the real worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_support import (
    Dashboard,
    chromium_missing,
    headless_chromium,
)
from tests.samples import make_context
from tests.support import wait_for

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

WAIT = 30


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = headless_chromium()
    yield driver
    driver.quit()


def until(browser: Any, condition: Any, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)


def enqueue(app: Any, context: dict[str, Any], destinations: list[str]) -> Any:
    from worker import enqueue_export

    return enqueue_export(context, destinations=destinations, app=app)


def row(browser: Any, job_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')


def shown_ids(browser: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
    return [r.get_attribute("data-job-id") for r in rows]


def test_the_list_shows_jobs_newest_first_with_their_destinations(
    dashboard: Dashboard, browser: Any, app: Any, record: Path
) -> None:
    older = enqueue(app, make_context(record), ["alpha", "beta"]).wait(timeout=WAIT)
    newer = enqueue(app, make_context(record, beta="fail"), ["alpha", "beta"]).wait(timeout=WAIT)
    browser.get(dashboard.url + "/")
    assert browser.title.startswith("Jobs")
    from selenium.webdriver.common.by import By

    ids = [
        r.get_attribute("data-job-id")
        for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
    ]
    assert ids.index(newer.id) < ids.index(older.id)
    text = row(browser, newer.id).text
    assert newer.session_identifier in text and "FEI-Titan-TEM-635816" in text
    assert "alpha SUCCESS" in text and "beta FAILURE" in text and "no" in text.split()
    link = row(browser, older.id).find_element(By.CSS_SELECTOR, "a.badge")
    assert link.get_attribute("href") == older.destinations["alpha"].record_url


def test_the_failed_filter_keeps_only_failed_jobs(
    dashboard: Dashboard, browser: Any, app: Any, record: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    instrument = f"TEST-{uuid.uuid4().hex[:8]}"
    good = enqueue(app, {**make_context(record), "instrument_pid": instrument}, ["alpha"])
    bad = enqueue(app, {**make_context(record), "instrument_pid": instrument}, ["failing"])
    good, bad = good.wait(timeout=WAIT), bad.wait(timeout=WAIT)
    browser.get(dashboard.url + "/")
    Select(browser.find_element(By.NAME, "instrument")).select_by_visible_text(instrument)
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    until(browser, lambda b: "instrument=" in b.current_url)
    shown = {
        r.get_attribute("data-job-id")
        for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
    }
    assert shown == {good.id, bad.id}

    Select(browser.find_element(By.NAME, "state")).select_by_value("failed")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    until(browser, lambda b: "state=failed" in b.current_url)
    shown = {
        r.get_attribute("data-job-id")
        for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
    }
    assert shown == {bad.id}


def test_the_detail_page_shows_every_attempt(
    dashboard: Dashboard, browser: Any, app: Any, record: Path
) -> None:
    from selenium.webdriver.common.by import By

    job = enqueue(app, make_context(record, gamma="transient:1", beta="fail"),
                  ["alpha", "beta", "gamma"]).wait(timeout=WAIT)  # fmt: skip
    browser.get(f"{dashboard.url}/jobs/{job.id}")
    gamma = browser.find_element(By.ID, "dest-gamma")
    outcomes = [r.text for r in gamma.find_elements(By.CSS_SELECTOR, "table.history tbody tr")]
    assert len(outcomes) == 2
    assert "retry" in outcomes[0] and "service busy (attempt 1)" in outcomes[0]
    assert "success" in outcomes[1]
    beta = browser.find_element(By.ID, "dest-beta").text
    assert "FAILURE" in beta and "beta refused the record" in beta
    alpha = browser.find_element(By.CSS_SELECTOR, "#dest-alpha a.record")
    assert alpha.get_attribute("href") == job.destinations["alpha"].record_url
    assert job.session_identifier in browser.find_element(By.CSS_SELECTOR, "dl.context").text


def test_retry_asks_first_then_runs(
    dashboard: Dashboard, browser: Any, app: Any, record: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    from tasks.jobs import get_job

    job = enqueue(app, make_context(record, alpha="fail-first:1"), ["alpha"]).wait(timeout=WAIT)
    assert not job.satisfied
    browser.get(f"{dashboard.url}/jobs/{job.id}")
    browser.find_element(By.ID, "retry").click()
    dialog = until(browser, expected_conditions.alert_is_present())
    assert "failed or never ran" in dialog.text
    dialog.dismiss()  # the operator changes their mind: nothing runs
    assert get_job(job.id, app=app).runs == 1
    assert f"/jobs/{job.id}" in browser.current_url and "retried" not in browser.current_url

    browser.find_element(By.ID, "retry").click()
    until(browser, expected_conditions.alert_is_present()).accept()
    until(browser, lambda b: "retried=2" in b.current_url)
    # The page follows the job until it finished, then shows the outcome.
    until(browser, lambda b: "satisfied" in b.find_element(By.TAG_NAME, "h1").text
          and "not satisfied" not in b.find_element(By.TAG_NAME, "h1").text)  # fmt: skip
    again = get_job(job.id, app=app)
    assert again.runs == 2 and again.satisfied
    history = browser.find_element(By.ID, "dest-alpha").text
    assert "failure" in history and "success" in history


def test_a_running_job_updates_in_place(
    dashboard: Dashboard, browser: Any, app: Any, record: Path
) -> None:
    job = enqueue(app, make_context(record, alpha="sleep:3"), ["alpha", "beta"])
    browser.get(f"{dashboard.url}/?session={job.session_identifier}")
    assert row(browser, job.id).get_attribute("data-state") in ("queued", "running")
    browser.execute_script("window.stillTheSamePage = true;")
    until(browser, lambda b: row(b, job.id).get_attribute("data-state") == "finished")
    assert browser.execute_script("return window.stillTheSamePage === true;")  # no reload
    text = row(browser, job.id).text
    assert "alpha SUCCESS" in text and "beta SUCCESS" in text and "yes" in text.split()
    wait_for(lambda: job.refresh().finished)
