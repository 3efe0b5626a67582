"""The worker's own settings, read from ``NX_*`` environment variables and ``.env``.

Destinations own their settings (``NX_CDCS_*`` and so on); only what the worker
itself needs lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError

from destinations.settings import NxSettings, destination_setting, nx_setting
from tasks.export.retry_policy import RetryPolicy
from tasks.store.breaker import BreakerPolicy

Strategy = Literal["all", "first_success", "best_effort"]


def _default_state_dir() -> Path:
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nexuslims-export"


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the variable."""


class WorkerSettings(NxSettings):
    """Settings of the worker, its clients and the embedded Redis."""

    broker_url: str | None = Field(
        None,
        validation_alias="NX_EXPORT_BROKER_URL",
        description="Redis URL of the broker (redis://, rediss://, or sentinel://h1:26379;"
        "sentinel://h2:26379;... with NX_EXPORT_REDIS_MASTER_NAME); unset starts a private Redis "
        "under the state dir.",
    )
    result_backend: str | None = Field(
        None,
        validation_alias="NX_EXPORT_RESULT_BACKEND",
        description="Redis URL of the result backend; defaults to the broker.",
    )
    redis_master_name: str | None = Field(
        None,
        validation_alias="NX_EXPORT_REDIS_MASTER_NAME",
        description="Name of the primary the Sentinels watch; needed with sentinel:// URLs.",
    )
    sentinel_password: SecretStr | None = Field(
        None,
        validation_alias="NX_EXPORT_SENTINEL_PASSWORD",
        description="Password of the Sentinels themselves (their requirepass), if they have one.",
    )
    strategy: Strategy = Field(
        "all",
        validation_alias="NX_EXPORT_STRATEGY",
        description="Default strategy: all, first_success or best_effort.",
    )
    retention_days: float = Field(
        30.0,
        validation_alias="NX_EXPORT_RETENTION_DAYS",
        gt=0,
        description="How long jobs and results stay readable.",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        validation_alias="NX_EXPORT_STATE_DIR",
        description="Where the embedded Redis keeps its socket, data and log.",
    )
    records_path: Path | None = Field(
        None,
        validation_alias="NX_RECORDS_PATH",
        description="When set, only records below this folder are accepted.",
    )
    max_record_bytes: int = Field(
        50_000_000,
        validation_alias="NX_EXPORT_MAX_RECORD_BYTES",
        gt=0,
        description="Largest record file accepted.",
    )
    record_schema: Path | None = Field(
        None,
        validation_alias="NX_EXPORT_RECORD_SCHEMA",
        description="An XSD every record must be valid against before it is enqueued.",
    )
    plugins: str = Field(
        "",
        validation_alias="NX_EXPORT_PLUGINS",
        description="Extra destination classes, 'module:Class,module:Class'; they win over "
        "built-ins and entry points of the same name.",
    )
    max_attempts: int | None = Field(
        None,
        validation_alias="NX_EXPORT_MAX_ATTEMPTS",
        ge=1,
        description="An optional cap on the attempts at a destination on transient errors, "
        "the first included; unset, a transient error is retried until the job's deadline.",
    )
    backoff_seconds: float = Field(
        2.0,
        validation_alias="NX_EXPORT_BACKOFF_SECONDS",
        gt=0,
        description="First retry delay; it doubles each retry, with jitter.",
    )
    backoff_max_seconds: float = Field(
        600.0,
        validation_alias="NX_EXPORT_BACKOFF_MAX_SECONDS",
        gt=0,
        description="Longest retry delay; kept below a quarter of the visibility timeout.",
    )
    retry_after_max_seconds: float = Field(
        1800.0,
        validation_alias="NX_EXPORT_RETRY_AFTER_MAX_SECONDS",
        gt=0,
        description="Longest Retry-After honoured; kept below half the visibility timeout.",
    )
    breaker_failures: int = Field(
        5,
        validation_alias="NX_EXPORT_BREAKER_FAILURES",
        ge=1,
        description="Consecutive calls that find a destination down (refused, reset, timed "
        "out, 502/503/504), across jobs, before its exports wait for a probe.",
    )
    breaker_probe_seconds: float = Field(
        30.0,
        validation_alias="NX_EXPORT_BREAKER_PROBE_SECONDS",
        gt=0,
        description="How often a destination that is down is probed; doubles per failed probe.",
    )
    breaker_probe_max_seconds: float = Field(
        300.0,
        validation_alias="NX_EXPORT_BREAKER_PROBE_MAX_SECONDS",
        gt=0,
        description="The longest interval between two probes of a destination that is down.",
    )
    strict_startup: bool = Field(
        False,
        validation_alias="NX_EXPORT_STRICT_STARTUP",
        description="Refuse to start a worker when an enabled destination fails its check.",
    )
    visibility_timeout: int = Field(
        3600,
        validation_alias="NX_EXPORT_VISIBILITY_TIMEOUT",
        gt=0,
        description="Seconds before Redis hands an unacknowledged task to another worker.",
    )
    dashboard_auth: SecretStr | None = Field(
        None,
        validation_alias="NX_EXPORT_DASHBOARD_AUTH",
        description="user:password of the dashboard's basic auth; the dashboard needs it.",
    )
    job_deadline: float = Field(
        86400.0,
        validation_alias="NX_EXPORT_JOB_DEADLINE",
        gt=0,
        description="Seconds after which any running worker ends a job that has not finished.",
    )
    heartbeat_seconds: float = Field(
        30.0,
        validation_alias="NX_EXPORT_HEARTBEAT_SECONDS",
        gt=0,
        description="How often a worker says it is alive and sweeps for overdue jobs.",
    )
    lease_seconds: float = Field(
        60.0,
        validation_alias="NX_EXPORT_LEASE_SECONDS",
        gt=0,
        description="Lifetime of an export's lease, renewed every third of it while it runs.",
    )
    lost_task_seconds: float = Field(
        300.0,
        validation_alias="NX_EXPORT_LOST_TASK_SECONDS",
        gt=0,
        description="A destination task in no queue, held by no worker and not running for "
        "this long is sent again (a purged queue, a Redis that lost its last writes).",
    )

    @property
    def uses_embedded_redis(self) -> bool:
        return not self.broker_url

    @property
    def embedded_socket(self) -> Path:
        return self.state_dir / "redis.sock"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"redis+socket://{self.embedded_socket}"

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self.effective_broker_url

    @property
    def redis_location(self) -> str:
        """Where the result backend's Redis is, for messages: never its password."""
        if self.uses_embedded_redis:
            return f"the private Redis ({self.embedded_socket})"
        url = urlsplit(self.effective_result_backend.split(";")[0])
        return f"{url.hostname or url.path}:{url.port or 6379}"

    @property
    def broker_uses_sentinel(self) -> bool:
        return is_sentinel_url(self.effective_broker_url)

    @property
    def backend_uses_sentinel(self) -> bool:
        return is_sentinel_url(self.effective_result_backend)

    def check_redis(self) -> None:
        """``SettingsError`` for a Sentinel URL that cannot work: no master name, mixed schemes."""
        urls = {
            "NX_EXPORT_BROKER_URL": self.broker_url,
            "NX_EXPORT_RESULT_BACKEND": self.result_backend,
        }
        for variable, url in urls.items():
            if not url:
                continue
            chunks = [chunk.strip() for chunk in url.split(";")]
            sentinels = [chunk.startswith(SENTINEL_SCHEME) for chunk in chunks]
            if any(sentinels) and not all(sentinels):
                raise SettingsError(
                    f"invalid setting: {variable}: every address of a Sentinel URL must be "
                    f"sentinel://host:port, separated by ';'"
                )
            if all(sentinels) and not self.redis_master_name:
                raise SettingsError(
                    f"invalid setting: NX_EXPORT_REDIS_MASTER_NAME: required when {variable} "
                    "is a sentinel:// URL (the name the Sentinels know the primary by, e.g. "
                    "'mymaster')"
                )


SENTINEL_SCHEME = "sentinel://"


def is_sentinel_url(url: str) -> bool:
    """True for ``sentinel://host:port[;sentinel://host:port...]``."""
    return url.strip().startswith(SENTINEL_SCHEME)


DESTINATION_POLICY_KEYS = {
    "MAX_ATTEMPTS": ("max_attempts", int),
    "BACKOFF_SECONDS": ("backoff", float),
    "BACKOFF_MAX_SECONDS": ("backoff_max", float),
    "RETRY_AFTER_MAX_SECONDS": ("retry_after_max", float),
    "RATE_LIMIT": ("rate_limit", str),
    "BREAKER_FAILURES": ("breaker_failures", int),
    "BREAKER_PROBE_SECONDS": ("breaker_probe", float),
    "BREAKER_PROBE_MAX_SECONDS": ("breaker_probe_max", float),
}


def destination_policy(
    name: str, settings: WorkerSettings, read: Callable[[str], str | None] = nx_setting
) -> RetryPolicy:
    """Retry and rate settings of one destination: ``NX_EXPORT_<NAME>_<KEY>`` over the defaults.

    Read like every other setting (the environment, then ``./.env``), by ``read``.

    The backoff ceiling stays below a quarter of the visibility timeout, and the
    longest ``Retry-After`` honoured below half of it, so a task waiting for its
    retry is never handed to a second worker meanwhile.
    """
    values: dict[str, Any] = {
        "max_attempts": settings.max_attempts,
        "backoff": settings.backoff_seconds,
        "backoff_max": settings.backoff_max_seconds,
        "retry_after_max": settings.retry_after_max_seconds,
        "rate_limit": None,
        "breaker_failures": settings.breaker_failures,
        "breaker_probe": settings.breaker_probe_seconds,
        "breaker_probe_max": settings.breaker_probe_max_seconds,
    }
    for suffix, (key, kind) in DESTINATION_POLICY_KEYS.items():
        variable = destination_setting(name, suffix)
        raw = read(variable)
        if raw is None or raw == "":
            continue
        try:
            values[key] = kind(raw)
        except ValueError:
            raise SettingsError(
                f"invalid setting: {variable}: expected {kind.__name__} (got {raw!r})"
            ) from None
        if kind is not str and values[key] <= 0:
            raise SettingsError(f"invalid setting: {variable}: must be above 0 (got {raw!r})")
    probe = values.pop("breaker_probe")
    values["breaker"] = BreakerPolicy(
        values.pop("breaker_failures"), probe, max(probe, values.pop("breaker_probe_max"))
    )
    values["backoff_max"] = min(values["backoff_max"], settings.visibility_timeout / 4)
    values["retry_after_max"] = min(values["retry_after_max"], settings.visibility_timeout / 2)
    return RetryPolicy(**values)


def load_settings() -> WorkerSettings:
    """Read the settings, turning pydantic's report into one message per variable."""
    try:
        settings = WorkerSettings()
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
    settings.check_redis()
    return settings


def describe_validation_error(error: ValidationError) -> str:
    """Name each offending variable and its problem; show the value unless it is a URL."""
    lines = []
    for item in error.errors():
        variable = ".".join(str(part) for part in item["loc"])
        # URLs (the result backend's too) may carry a password; every other setting is harmless.
        secret = any(word in variable.upper() for word in ("URL", "BACKEND", "PASSWORD"))
        shown = "" if secret else f" (got {item.get('input')!r})"
        lines.append(f"{variable}: {item['msg']}{shown}")
    return "invalid setting: " + "; ".join(lines)
