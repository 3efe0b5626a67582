"""The dashboard's "Retry all N shown" on the failed filter: over HTTP and in headless Chromium.

An outage is gamma failing until a flag file exists (``fail-until:<path>``); each
test keeps to jobs of an instrument of its own.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_support import (
    Dashboard,
    chromium_missing,
    headless_chromium,
)
from tests.support import failed_gamma_jobs, read_log, wait_for

WAIT = 30
FORM = re.compile(r'<form class="retry retry-all"(.*?)</form>', re.DOTALL)


def retry_all_form(dashboard: Dashboard, **params: str) -> dict[str, str] | None:
    """The hidden fields of the page's Retry all form, and its button's text."""
    page = dashboard.get("/", **params)
    assert page.status_code == 200, page.text
    found = FORM.search(page.text)
    if found is None:
        return None
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', found.group(1)))
    fields = {key: html.unescape(value) for key, value in fields.items()}
    button = re.search(r'id="retry-all">([^<]*)<', found.group(1))
    assert button
    return {**fields, "button": button.group(1)}


def test_retry_all_needs_the_token_of_its_own_filter(
    dashboard: Dashboard, app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from tasks.jobs import get_job

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag)
    instrument = jobs[0].instrument_pid
    form = retry_all_form(dashboard, state="failed", instrument=instrument)
    assert form is not None and form.pop("button") == "Retry all 5 shown"
    assert form["state"] == "failed" and form["instrument"] == instrument
    # Only the failed filter offers it.
    assert retry_all_form(dashboard, instrument=instrument) is None
    # Five jobs over three pages are still all five, on every page.
    paged = retry_all_form(dashboard, state="failed", instrument=instrument, limit="2")
    assert paged is not None and paged["button"] == "Retry all 5 shown"

    other = retry_all_form(dashboard, state="failed", destination="gamma")
    assert other is not None
    fields = {key: value for key, value in form.items() if key != "csrf"}
    for token in (None, "0" * 64, other["csrf"], dashboard.retry_token(jobs[0].id)):
        refused = dashboard.post("/retry-all", {**fields, **({"csrf": token} if token else {})})
        assert refused.status_code == 403, refused.text
        assert "did not come from the list page of this filter" in refused.text
    # The token of this filter does not stretch to a wider one.
    wider = dashboard.post("/retry-all", {**form, "instrument": ""})
    assert wider.status_code == 403
    not_failed = dashboard.post("/retry-all", {**form, "state": "all"})
    assert not_failed.status_code == 400 and "failed filter" in not_failed.text
    assert all(get_job(job.id, app=app).runs == 1 for job in jobs)
    assert len(read_log(export_log)) == 10  # alpha and gamma once each, nothing more

    flag.touch()
    accepted = dashboard.post("/retry-all", form)
    assert accepted.status_code == 200, accepted.text
    assert "Retried 5, skipped 0 (being retried elsewhere), refused 0." in accepted.text
    for job in jobs:
        assert job.id in accepted.text
        done = wait_for(lambda job=job: (j := get_job(job.id, app=app)).finished and j)
        assert done.satisfied and done.runs == 2
    # The same form again: nothing left under the filter, nothing run twice.
    again = dashboard.post("/retry-all", form)
    assert again.status_code == 200
    assert "Retried 0, skipped 0 (being retried elsewhere), refused 0." in again.text
    assert [line["name"] for line in read_log(export_log)].count("alpha") == 5


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_retry_all_asks_with_the_count_and_filter_then_shows_the_summary(
    dashboard: Dashboard, app: Any, record: Path, export_log: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from tasks.jobs import get_job

    flag = tmp_path / "gamma-is-back"
    jobs = failed_gamma_jobs(app, record, export_log, flag)
    instrument = jobs[0].instrument_pid
    browser = headless_chromium()
    try:
        until = WebDriverWait(browser, WAIT, poll_frequency=0.1).until
        browser.get(f"{dashboard.url}/?state=failed&destination=gamma&instrument={instrument}")
        button = browser.find_element(By.ID, "retry-all")
        assert button.text == "Retry all 5 shown"
        button.click()
        dialog = until(expected_conditions.alert_is_present())
        assert "Retry gamma in all 5 jobs shown" in dialog.text
        assert f"failed in gamma, instrument {instrument}" in dialog.text
        dialog.dismiss()  # the operator changes their mind: nothing runs
        assert all(get_job(job.id, app=app).runs == 1 for job in jobs)

        flag.touch()
        browser.find_element(By.ID, "retry-all").click()
        until(expected_conditions.alert_is_present()).accept()
        summary = until(lambda b: b.find_elements(By.ID, "bulk-summary"))[0]
        assert summary.text == "Retried 5, skipped 0 (being retried elsewhere), refused 0."
        rows = browser.find_elements(By.CSS_SELECTOR, "table.bulk-retried tr[data-job-id]")
        shown = {row.get_attribute("data-job-id") for row in rows}
        assert shown == {job.id for job in jobs}
        # The jobs of the filter in any state: they finish, satisfied, on the same page.
        browser.find_element(By.ID, "filter-all").click()
        until(lambda b: "state=" not in b.current_url and "instrument=" in b.current_url)
        for job in jobs:
            wait_for(lambda job=job: get_job(job.id, app=app).finished)
        browser.refresh()
        rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
        assert len(rows) == 5 and all("yes" in row.text.split() for row in rows)
    finally:
        browser.quit()
    for job in jobs:
        assert get_job(job.id, app=app).runs == 2
