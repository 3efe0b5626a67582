"""Row 7: one record to the fake CDCS, eLabFTW and LabArchives, NexusLIMS 2.8.0's classes vs us.

The measuring is ``bench.nexuslims``; this module turns its two sides into table rows.
"""

from __future__ import annotations

from bench.harness import RECORD, Harness
from bench.nexuslims import MIN_GAP, TARGETS, NexusLIMSRow, Side
from bench.report import Row
from bench.stats import median


def nexuslims(bench: Harness) -> list[Row]:
    runner = NexusLIMSRow(
        bench.app,
        bench.redis,
        bench.logs.parent,
        RECORD,
        bench.sizes.nexuslims_repeats,
        bench.pool,
        bench.concurrency,
    )
    label = "7. one record → CDCS + eLabFTW + LabArchives, create L=300 ms"
    problem = runner.import_problem()
    if problem:
        return [Row(label, "ms", note=f"skipped: nexuslims not importable ({problem})")]
    theirs, ours = runner.measure()
    runs = len(ours.first)
    gap = min(ours.min_gaps)
    limit_ok = gap >= MIN_GAP
    rows = []
    for index, (what, baseline, mine, target) in enumerate(
        (
            ("first record for an instrument (its folder created)", theirs.first, ours.first,
             TARGETS[0]),
            ("second record, same instrument (folders exist)", theirs.second, ours.second,
             TARGETS[1]),
        )
    ):
        row = Row(
            f"{label}: {what}, median of {runs}",
            "ms",
            median(mine) * 1000,
            median(baseline) * 1000,
            "NexusLIMS 2.8.0 sequential",
            f"≤ {target:.2f}",
        )
        row.met = row.ratio is not None and row.ratio <= target and limit_ok
        row.note = note(index, theirs, ours, limit_ok)
        rows.append(row)
    return rows


def note(index: int, nexuslims: Side, ours: Side, limit_ok: bool) -> str:
    def calls(side: Side) -> str:
        counts = sorted({run[index] for run in side.la_calls})
        return "/".join(str(c) for c in counts)

    gap = min(ours.min_gaps)
    verdict = "honoured" if limit_ok else "**VIOLATED**"
    return (
        f"LabArchives calls per record: ours {calls(ours)}, NexusLIMS {calls(nexuslims)}; "
        f"LabArchives 1 call/s limit {verdict} by ours: min gap between its requests "
        f"{gap:.3f} s (all {len(ours.min_gaps)} runs; "
        f"NexusLIMS {min(nexuslims.min_gaps):.3f} s)"
    )
