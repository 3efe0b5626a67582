"""Secrets stay in the worker's environment; only JSON is ever accepted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from celery import Celery

from tests.samples import enqueue_arguments, make_context
from tests.support import (
    WEBHOOK_SECRET,
    StartRedis,
    StartWorker,
    WorkerProcess,
    every_redis_value,
    nx_export,
    wait_for,
)
from worker.sandbox import FakeCDCS, FakeELabFTW, FakeLabArchives
from worker.sandbox.settings import fake_service_settings


def test_pickle_messages_are_refused(
    app: Any, redis_server: Any, session_worker: WorkerProcess, callback_log: Path
) -> None:
    sender = Celery(broker=redis_server.url)
    sender.conf.accept_content = ["pickle", "json"]
    for serializer in ("pickle", "json"):
        sender.send_task(
            "lims.export_finished",
            args=({"id": f"sent-as-{serializer}", "satisfied": True},),
            queue="nx-export",
            serializer=serializer,
        )

    def delivered() -> set[str]:
        lines = callback_log.read_text().splitlines() if callback_log.exists() else []
        return {json.loads(line)["id"] for line in lines}

    wait_for(lambda: "sent-as-json" in delivered())
    time.sleep(0.5)
    assert "sent-as-pickle" not in delivered()
    assert "Refusing to deserialize untrusted content of type pickle" in session_worker.log()
    assert session_worker.process is not None and session_worker.process.poll() is None


def test_no_secret_reaches_redis_logs_or_flower_arguments(
    app: Any, start_worker: StartWorker, record: Path
) -> None:
    from worker import enqueue_export

    with FakeCDCS() as cdcs, FakeELabFTW() as elab, FakeLabArchives() as labarchives:
        cdcs.fail_next(503, count=2)
        settings = {
            **fake_service_settings(cdcs, elab, labarchives),
            "NX_EXPORT_BACKOFF_SECONDS": "0.1",
            "NX_ELABFTW_API_KEY": "7-wrong-key-that-is-secret",
        }
        worker = start_worker("secrets", **settings)
        job = enqueue_export(
            make_context(record), destinations=["cdcs", "elabftw", "labarchives"], app=app
        ).wait(timeout=60)
        worker.stop()
        secrets = [
            cdcs.token,
            "7-wrong-key-that-is-secret",
            elab.api_key,
            labarchives.password,
            WEBHOOK_SECRET,
        ]
    cdcs_history = [entry["outcome"] for entry in job.destinations["cdcs"].history]
    assert cdcs_history[0] == "retry" and cdcs_history[-1] == "success"
    assert job.destinations["elabftw"].state == "FAILURE"  # credentials refused
    places = {
        "redis": b"\n".join(every_redis_value(app.backend.client)),
        "log": worker.log().encode(),
    }
    for name, haystack in places.items():
        for secret in secrets:
            assert secret.encode() not in haystack, f"a configured secret is in the {name}"


def test_redis_with_a_password_works_and_the_password_is_not_logged(
    start_redis: StartRedis, start_worker: StartWorker, record: Path
) -> None:
    password = "redis-secret-pw-123"
    worker = start_worker("password", redis=start_redis(password=password), plugins=True)
    done = nx_export(
        *enqueue_arguments(record, "--destination", "beta", "--wait", "--json"), env=worker.env
    )
    worker.stop()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["satisfied"] is True
    assert password not in worker.log()
    assert password not in done.stdout + done.stderr


def test_plugin_results_are_stored_without_secrets_or_url_queries(
    monkeypatch: Any,
) -> None:
    from destinations.contract import ExportResult
    from tasks.messages import result_to_json

    monkeypatch.setenv("NX_LABARCHIVES_ACCESS_PASSWORD", "hunter2-password")
    leaky = ExportResult(
        success=False,
        destination_name="labarchives",
        error_message=(
            "Traceback ... ConnectionError: https://api.example.org/api/tree_tools/insert_node"
            "?akid=abc&sig=c2ln&expires=1 failed; password was hunter2-password"
        ),
        metadata={"detail": ["hunter2-password"]},
    )
    stored = json.dumps(result_to_json(leaky, "labarchives"), ensure_ascii=False)
    assert "hunter2-password" not in stored
    assert "sig=" not in stored and "akid=" not in stored
    assert "https://api.example.org/api/tree_tools/insert_node?…" in stored
