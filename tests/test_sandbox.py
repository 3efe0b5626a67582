"""The sandbox: stand-ins of CDCS, eLabFTW and LabArchives that ``nx-export demo --services``
exports the samples to with the real destination code, and whose pages a browser opens."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import PROJECT_ROOT, wait_for
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives

HOSTILE_TITLE = "<script>alert(1)</script> & co"


def test_a_stand_in_shows_a_created_record_to_a_browser_and_keeps_its_api_closed() -> None:
    with FakeCDCS() as cdcs:
        created = httpx.post(
            f"{cdcs.url}/rest/data/", headers={"Authorization": f"Token {cdcs.token}"},
            json={"template": cdcs.template_id, "title": HOSTILE_TITLE,
                  "xml_content": "<Experiment xmlns='https://data.nist.gov/od/dm/nexus/experiment/v1.0'/>"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        page = httpx.get(f"{cdcs.url}/data", params={"id": created.json()["id"]})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page.text
        assert "<script>" not in page.text  # every value is escaped
        assert "stand-in" in page.text
        # The browser's page needs no token; the API still does.
        assert httpx.post(f"{cdcs.url}/rest/data/query/", json={"query": {}}).status_code == 401
        assert cdcs.token not in page.text
    with FakeELabFTW() as elab, FakeLabArchives() as labarchives:
        assert "0 experiment(s)" in httpx.get(f"{elab.url}/experiments.php?mode=view&id=1").text
        assert httpx.get(f"{elab.url}/api/v2/experiments").status_code == 401
        assert "0 page(s)" in httpx.get(f"{labarchives.url}/").text


@pytest.mark.processes
def test_demo_with_services_exports_the_samples_to_all_four_and_serves_them(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_")}
    env["NX_EXPORT_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        demo = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "demo", "--services", "--stay", "--json"],
            stdout=stdout, stderr=stderr, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        wait_for(lambda: "serving until Ctrl-C" in err.read_text() or demo.poll() is not None,
                 timeout=180)  # fmt: skip
        assert demo.poll() is None, err.read_text()
        jobs = json.loads(out.read_text())["jobs"]
        assert len(jobs) == 3
        for job in jobs:
            destinations = job["destinations"]
            assert {n: d["state"] for n, d in destinations.items()} == dict.fromkeys(
                ["local", "cdcs", "elabftw", "labarchives"], "SUCCESS"
            ), destinations
            # The addresses the demo prints open while it stays: the stand-ins' pages.
            for name in ("cdcs", "elabftw", "labarchives"):
                url = destinations[name]["record_url"]
                assert url.startswith("http://127.0.0.1:"), url
                page = httpx.get(url)
                assert page.status_code == 200, (url, page.text)
                # One record on its own page; LabArchives' address is the notebook's.
                shown = {"cdcs": "1 record(s)", "elabftw": "1 experiment(s)",
                         "labarchives": "3 page(s)"}[name]  # fmt: skip
                assert shown in page.text, page.text
        # eLabFTW's experiment links the CDCS record (the dependent runs after it).
        first = jobs[0]["destinations"]
        experiment = httpx.get(first["elabftw"]["record_url"]).text
        assert first["cdcs"]["record_url"].split("?id=")[1] in experiment
        assert "dashboard" in err.read_text() and "flower" in err.read_text()
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=60)
    assert code == 0, err.read_text()
    with pytest.raises(httpx.ConnectError):  # the stand-ins stopped with the demo
        httpx.get(jobs[0]["destinations"]["cdcs"]["record_url"])
    # Their credentials reached the worker through its environment only: never its log.
    log = (tmp_path / "state" / "demo-worker.log").read_text()
    assert not re.search(r"cdcs-[0-9a-f]{24}|akid_[0-9a-f]{16}", log + out.read_text())
