"""Settings come from the environment first, then ``.env`` in the working directory."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import StartRedis, StartWorker, nx_export, worker_env

NEXUSLIMS_ENV = """\
NX_CDCS_URL=http://127.0.0.1:1/
NX_CDCS_TOKEN=cdcs-token-from-dotenv
NX_ELABFTW_URL=http://127.0.0.1:1
NX_ELABFTW_API_KEY=elab-key-from-dotenv
NX_LABARCHIVES_URL=http://127.0.0.1:1/api
NX_LABARCHIVES_ACCESS_KEY_ID=akid-from-dotenv
NX_LABARCHIVES_ACCESS_PASSWORD=password-from-dotenv
NX_LABARCHIVES_USER_ID=uid-from-dotenv
NX_HTTP_READ_TIMEOUT=7
NX_EXPORT_LOCAL_PATH={archive}
"""


def list_destinations(cwd: Path, **extra: str) -> dict[str, dict[str, Any]]:
    env = worker_env(os.environ["NX_EXPORT_BROKER_URL"], None, **extra)
    done = nx_export("destinations", "--json", env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)["destinations"]}


def test_a_nexuslims_dotenv_enables_all_three_services(redis_server: Any, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(NEXUSLIMS_ENV.format(archive=tmp_path / "archive"))
    rows = list_destinations(tmp_path)
    enabled = {name for name, row in rows.items() if row["enabled"]}
    assert {"cdcs", "elabftw", "labarchives", "local"} <= enabled


def test_without_a_dotenv_the_services_stay_disabled(redis_server: Any, tmp_path: Path) -> None:
    rows = list_destinations(tmp_path)
    assert not any(rows[name]["enabled"] for name in ("cdcs", "elabftw", "labarchives"))


def test_the_environment_wins_over_dotenv(redis_server: Any, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(NEXUSLIMS_ENV.format(archive=tmp_path / "archive"))
    rows = list_destinations(tmp_path, NX_CDCS_TOKEN="")
    assert rows["cdcs"]["enabled"] is False
    assert rows["elabftw"]["enabled"] is True


def test_http_settings_read_dotenv(tmp_path: Path, monkeypatch: Any) -> None:
    from destinations.toolkit.http import HttpSettings

    (tmp_path / ".env").write_text("NX_HTTP_READ_TIMEOUT=7\nNX_CERT_BUNDLE_FILE=/etc/ca.pem\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NX_HTTP_READ_TIMEOUT", raising=False)
    settings = HttpSettings()
    assert settings.read_timeout == 7
    assert str(settings.cert_bundle_file) == "/etc/ca.pem"


def test_only_the_nx_names_are_read(tmp_path: Path, monkeypatch: Any) -> None:
    from destinations.builtin.cdcs.destination import CDCSSettings
    from destinations.builtin.local import LocalArchiveSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.environ["PATH"])
    monkeypatch.setenv("URL", "http://elsewhere.invalid/")
    monkeypatch.setenv("TOKEN", "not-ours")
    assert LocalArchiveSettings().path is None
    cdcs = CDCSSettings()
    assert cdcs.url == ""
    assert cdcs.token.get_secret_value() == ""


def test_the_broker_patch_refuses_a_kombu_whose_method_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import broker_close

    def changed(self: object, asynchronous: bool = False, ssl: bool = False) -> None: ...

    monkeypatch.setattr(broker_close, "_connparams", changed)
    with pytest.raises(broker_close.IncompatibleKombuError, match=r"kombu 5\.7"):
        broker_close.install()
    monkeypatch.undo()
    broker_close.install()  # the kombu installed is the one it was made for


def test_a_channel_that_lost_its_connection_reports_a_lost_connection() -> None:
    """Not an AttributeError: Celery rejects (drops) a retry whose publish raised one."""
    from types import SimpleNamespace

    import redis
    from kombu.transport import redis as kombu_redis

    from worker import broker_close

    broker_close.install()
    for channel in (SimpleNamespace(connection=None),
                    SimpleNamespace(connection=SimpleNamespace(client=None))):  # fmt: skip
        with pytest.raises(redis.ConnectionError, match="broker connection was closed"):
            kombu_redis.Channel._connparams(channel)


@pytest.mark.processes
def test_the_check_names_a_worker_still_running_with_settings_changed_since_it_started(
    start_redis: StartRedis, start_worker: StartWorker, tmp_path: Path
) -> None:
    facility = tmp_path / "facility"
    facility.mkdir()
    (facility / ".env").write_text(f"NX_EXPORT_LOCAL_PATH={tmp_path / 'old-archive'}\n")
    worker = start_worker("loaded", redis=start_redis(), cwd=facility)
    client = worker_env(worker.env["NX_EXPORT_BROKER_URL"], None)

    same = nx_export("destinations", "--check", "--json", env=client, cwd=facility)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["workers_with_other_settings"] == []

    # The operator corrects the setting; the running worker still uses what it loaded.
    (facility / ".env").write_text(f"NX_EXPORT_LOCAL_PATH={tmp_path / 'new-archive'}\n")
    changed = nx_export("destinations", "--check", "--json", env=client, cwd=facility)
    assert changed.returncode == 1
    report = json.loads(changed.stdout)
    assert {row["name"]: row.get("valid") for row in report["destinations"]}["local"] is True
    assert report["workers_with_other_settings"] == [
        {"worker": "loaded@" + socket.gethostname(), "destination": "local"}
    ]
    text = nx_export("destinations", "--check", env=client, cwd=facility)
    assert "worker loaded@" in text.stderr and "restart it" in text.stderr
    # Nothing of the settings themselves is published, only the fingerprint.
    catalog = redis.Redis.from_url(client["NX_EXPORT_BROKER_URL"]).hgetall("nxexport:catalog")
    assert b"old-archive" not in b"".join(catalog.values())
