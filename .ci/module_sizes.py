"""Fail when a module of the product grows past the size a reader takes in at once."""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 400
PACKAGES = ("worker", "tasks", "destinations")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    too_long = [
        (path.relative_to(root), count)
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    ]
    for path, count in too_long:
        print(f"{path}: {count} lines (at most {LIMIT}); split it by concern", file=sys.stderr)
    return 1 if too_long else 0


if __name__ == "__main__":
    sys.exit(main())
