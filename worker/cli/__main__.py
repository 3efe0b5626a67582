"""``python -m worker.cli``: the same as ``nx-export``."""

from worker.cli import main

main()
