"""NexusLIMS 2.8.0's own tests of ``export_records``, ``was_successfully_exported`` and
its strategies, run against ``worker.compat`` and a real worker.

The tests are NexusLIMS's (tests/upstream/, MIT, see LICENSE.NexusLIMS there),
changed only where they import the API and where their dummy records lacked
NexusLIMS's ``nx:Experiment`` root. They run in a pytest process of their own
(tests/upstream/harness.py): NexusLIMS reads its settings once, on import.
Every test must pass but the few listed in ``KEPT_DIFFERENCES``, where the
worker differs from NexusLIMS on purpose (those may pass by chance too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nexuslims_support import nexuslims_settings, require_nexuslims
from tests.support import PROJECT_ROOT, worker_env

# Starts workers, Redis servers or other processes of its own: not in the fast tier.
pytestmark = pytest.mark.processes

UPSTREAM_TESTS = 42

KEPT_DIFFERENCES = {
    # NexusLIMS runs destinations one after another, each seeing every result so
    # far; the worker runs destinations without dependencies side by side, and a
    # destination sees the results of those it depends on.
    "tests/upstream/upstream_strategies.py::TestInterDestinationDependencies::"
    "test_dependency_chain": "independent destinations run in parallel",
}


def run_upstream(tmp_path: Path) -> dict[str, dict[str, str]]:
    report = tmp_path / "outcomes.json"
    env = worker_env(
        "redis://127.0.0.1:1/0",  # replaced by the harness with its own Redis
        None,
        **nexuslims_settings(tmp_path / "nexuslims"),
        NEXUSLIMS_UPSTREAM_DIR=str(tmp_path / "harness"),
        NEXUSLIMS_UPSTREAM_REPORT=str(report),
    )
    # One process: NexusLIMS's tests share the harness's one worker and database.
    command = [sys.executable, "-m", "pytest", "tests/upstream", "-q", "-n", "0",
               "-p", "no:cacheprovider",
               "-p", "tests.upstream.harness", "--confcutdir", "tests/upstream",
               "-o", "python_files=upstream_*.py"]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=600,
    )
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes: dict[str, dict[str, str]] = json.loads(report.read_text())
    return outcomes


def test_nexuslims_own_exporter_tests_pass_against_the_worker(tmp_path: Path) -> None:
    require_nexuslims(tmp_path / "probe")
    outcomes = run_upstream(tmp_path)
    passed = sorted(name for name, o in outcomes.items() if o["outcome"] == "passed")
    failed = {name: o["message"] for name, o in outcomes.items() if o["outcome"] != "passed"}
    print(f"NexusLIMS's exporter tests against the worker: {len(passed)} of {len(outcomes)} pass")
    assert len(outcomes) == UPSTREAM_TESTS, sorted(outcomes)
    unexpected = {name: message for name, message in failed.items() if name not in KEPT_DIFFERENCES}
    assert not unexpected, json.dumps(unexpected, indent=1)
