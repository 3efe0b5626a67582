"""Names with control characters are refused at every entry; none can forge a log line."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.samples import enqueue_arguments, make_context, session_record_text
from tests.support import StartRedis, StartWorker, nx_export, worker_env

FORGED = "[2026-01-01 00:00:00,000: CRITICAL/MainProcess] forged"
# Newline, CR, other C0, ESC, DEL, C1 (NEL), and a Unicode line separator.
CONTROLS = ["\n", "\r", "\x01", "\x1b", "\x7f", "\x85", "\u2028"]
FIELDS = {"session_identifier": "--session-id", "instrument_pid": "--instrument", "user": "--user"}


def test_enqueue_refuses_control_characters_in_flags(session_worker: Any, record: Path) -> None:
    client = worker_env(os.environ["NX_EXPORT_BROKER_URL"], None)
    for field, option in [*FIELDS.items(), ("job_key", "--job-key")]:
        for char in CONTROLS:
            value = f"bad{char}value"
            arguments = enqueue_arguments(record, "--destination", "alpha")
            if option in arguments:
                arguments[arguments.index(option) + 1] = value
            else:
                arguments += [option, value]
            done = nx_export(*arguments, env=client)
            assert done.returncode == 2, (field, repr(char), done.stdout, done.stderr)
            assert field in done.stderr and "control character" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr


def test_enqueue_and_backfill_refuse_control_characters_read_from_the_record(
    session_worker: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    for number, char in enumerate(["&#10;", "&#13;", "&#x85;"]):
        (folder / f"session-{number}.xml").write_text(
            session_record_text(f"nx-id{char}{FORGED}", user=f"ada{char}x"), encoding="utf-8"
        )
    client = worker_env(os.environ["NX_EXPORT_BROKER_URL"], None)
    for record in sorted(folder.iterdir()):
        done = nx_export("enqueue", str(record), "--destination", "alpha", env=client)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "session_identifier" in done.stderr and "control character" in done.stderr
    for dry_run in (["--dry-run"], []):
        done = nx_export("backfill", str(folder), "--destination", "alpha", "--json", *dry_run,
                         env=client, timeout=120)  # fmt: skip
        assert done.returncode == 2, (done.stdout, done.stderr)
        report = json.loads(done.stdout)
        assert report["enqueued"] == [] and len(report["refused"]) == 3, report
        for refused in report["refused"]:
            assert "session_identifier" in refused["reason"], refused


def test_enqueue_export_raises_a_value_error_naming_the_field(app: Any, record: Path) -> None:
    from worker import enqueue_export

    for field in FIELDS:
        for char in CONTROLS:
            context = {**make_context(record), field: f"x{char}{FORGED}"}
            with pytest.raises(ValueError, match=f"{field} must not contain control characters"):
                enqueue_export(context, destinations=["alpha"], app=app)
    with pytest.raises(ValueError, match="job_key must not contain control characters"):
        enqueue_export(make_context(record), destinations=["alpha"], app=app, job_key="k\n1")


def test_a_task_sent_by_name_is_refused_and_cannot_forge_a_log_line(
    start_redis: StartRedis, start_worker: StartWorker, record: Path, tmp_path: Path
) -> None:
    redis = start_redis()
    worker = start_worker("forge", redis=redis, plugins=True)
    client = Celery(broker=redis.url, backend=redis.url)
    valid = make_context(record)
    sent = {
        # Refused: each names its field.
        "session_identifier": {"context": {**valid, "session_identifier": f"s\n{FORGED}"}},
        "instrument_pid": {"context": {**valid, "instrument_pid": f"i\r\n{FORGED}"}},
        "user": {"context": {**valid, "user": f"u\u2028{FORGED}"}},
        "job_key": {"context": valid, "job_key": f"k\n{FORGED}"},
        # Refused for other reasons, with the caller's text in the message.
        "unknown fields": {"context": {**valid, f"field\n{FORGED}": 1}},
        "does not exist": {"context": {**valid, "xml_file_path": str(tmp_path / f"r\n{FORGED}")}},
        "unknown destination": {"context": valid, "destinations": [f"d\n{FORGED}"]},
    }
    results = {}
    for expected, kwargs in sent.items():
        kwargs.setdefault("destinations", ["failing"])
        results[expected] = client.send_task(
            "export.record", kwargs=kwargs, queue="nx-export", task_id=str(uuid.uuid4())
        )
    outcomes = {name: result.get(timeout=30, propagate=False) for name, result in results.items()}
    states = {name: result.state for name, result in results.items()}
    client.close()
    worker.stop()
    log = worker.log()
    forged = [line for line in log.splitlines() if line.startswith(FORGED[:40])]
    assert forged == [], forged
    assert states == dict.fromkeys(sent, "FAILURE"), (states, outcomes)
    for expected, outcome in outcomes.items():
        assert expected in str(outcome), (expected, outcome)
    assert "session_identifier must not contain control characters" in log
