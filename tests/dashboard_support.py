"""``nx-export dashboard`` in a subprocess, and a headless Chromium to look at it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port, serving, worker_env

AUTH = ("ops", "dashboard-password-for-tests")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@dataclass
class Dashboard:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, auth: Any = AUTH, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=auth, params=params, timeout=30)

    def post(self, path: str, data: dict[str, str], auth: Any = AUTH) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", auth=auth, data=data, timeout=30)

    def retry_token(self, job_id: str) -> str:
        page = self.get(f"/jobs/{job_id}").text
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found, page
        return found.group(1)


@contextmanager
def running_dashboard(broker_url: str, log_dir: Path) -> Iterator[Dashboard]:
    port = free_port()
    env = worker_env(broker_url, None, NX_EXPORT_DASHBOARD_AUTH=":".join(AUTH))
    log_path = log_dir / "dashboard.log"
    url = f"http://127.0.0.1:{port}"
    arguments = ["dashboard", "--port", str(port), "--address", "127.0.0.1"]
    with serving(arguments, env, log_path, f"{url}/healthz") as process:
        yield Dashboard(url, process, log_path)


def chromium_missing() -> str | None:
    if CHROMIUM and CHROMEDRIVER:
        return None
    return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"


def headless_chromium(
    width: int = 1400, height: int = 900, auth: tuple[str, str] = AUTH
) -> Any:
    """Debian's chromium through its chromedriver, sending the dashboard's credentials."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    token = base64.b64encode(":".join(auth).encode()).decode()
    # Every request of the page, fetch() included, carries the basic auth header.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )
    return driver
