"""NexusLIMS 2.8.0's way, for ``bench.nexuslims``: its three destination classes in one process.

Run in a subprocess with NexusLIMS's settings (``NX_TEST_MODE``, ``NX_DATA_PATH``,
...) and the ``NX_*`` service settings in its environment::

    python -m bench.nexuslims_baseline '<json spec>'

The spec is ``{"records": [{file, session, instrument, start, end, user}, ...],
"pause": seconds}``. Each record gets a fresh ``ExportContext``; the destinations
run one after another in NexusLIMS's priority order (CDCS 100, LabArchives 90,
eLabFTW 85), each result passed on with ``context.add_result`` as NexusLIMS's
``all`` strategy does. Only the export loop of each record is timed; ``pause``
seconds pass (untimed) between records. Prints one JSON line:
``{"records": [{"seconds", "window", "order", "results"}, ...]}`` (``window``: the
record's start and end in Unix time).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from importlib import import_module
from pathlib import Path
from typing import Any

CLASSES = (
    ("nexusLIMS.exporters.destinations.cdcs", "CDCSDestination"),
    ("nexusLIMS.exporters.destinations.elabftw", "ELabFTWDestination"),
    ("nexusLIMS.exporters.destinations.labarchives", "LabArchivesDestination"),
)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    from nexusLIMS.exporters.base import ExportContext

    # Like NexusLIMS's registry: instances made once, enabled ones sorted by priority.
    destinations = [getattr(import_module(module), name)() for module, name in CLASSES]
    disabled = [d.name for d in destinations if not d.enabled]
    if disabled:
        print(f"not enabled: {disabled}", file=sys.stderr)
        return 2
    destinations.sort(key=lambda d: d.priority, reverse=True)

    out: list[dict[str, Any]] = []
    for index, record in enumerate(spec["records"]):
        if index:
            time.sleep(float(spec.get("pause", 0)))
        context = ExportContext(
            xml_file_path=Path(record["file"]),
            session_identifier=record["session"],
            instrument_pid=record["instrument"],
            dt_from=datetime.fromisoformat(record["start"]),
            dt_to=datetime.fromisoformat(record["end"]),
            user=record.get("user"),
        )
        wall, started = time.time(), time.perf_counter()
        results = []
        for destination in destinations:
            result = destination.export(context)
            results.append(result)
            context.add_result(destination.name, result)
        seconds = time.perf_counter() - started
        out.append(
            {
                "seconds": seconds,
                "window": [wall, time.time()],
                "order": [d.name for d in destinations],
                "results": [
                    {
                        "destination": r.destination_name,
                        "success": r.success,
                        "record_url": r.record_url,
                        "error": (r.error_message or "")[-500:],
                    }
                    for r in results
                ],
            }
        )
    print(json.dumps({"records": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
