"""A fingerprint of the settings a destination runs with: equal settings, equal prints.

A worker reads its settings once, when it starts; an operator who corrects a key
in ``.env`` afterwards sees ``destinations --check`` pass with the new key while
the running workers still use the old one. Each worker therefore publishes, per
destination, a fingerprint of what it loaded, and the check compares it with
its own. A fingerprint is a keyed hash (HMAC-SHA256 under a random key the
facility's Redis keeps), cut to 16 hex digits: it tells settings apart without
telling anything about them, secrets included.

What counts as a destination's settings: its ``settings`` and ``http`` objects
when they are pydantic models (the built-ins'), and every ``NX_<NAME>_*`` and
``NX_EXPORT_<NAME>_*`` variable (the environment, then ``./.env``), which is
where NexusLIMS's own classes and most plugins read theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr

from destinations.settings import destination_setting


def settings_of(destination: Any) -> dict[str, Any]:
    """Everything the fingerprint of ``destination`` covers, as plain values."""
    found: dict[str, Any] = {}
    for attribute in ("settings", "http"):
        model = getattr(destination, attribute, None)
        if isinstance(model, BaseModel):
            found[attribute] = {
                key: value.get_secret_value() if isinstance(value, SecretStr) else value
                for key, value in model.model_dump().items()
            }
    own = f"NX_{destination.name.upper().replace('-', '_')}_"
    export = destination_setting(destination.name, "")
    variables = {**_dotenv(), **os.environ}
    found["variables"] = {
        name: value
        for name, value in sorted(variables.items())
        if name.startswith((own, export)) and value is not None
    }
    return found


def fingerprint(destination: Any, key: bytes) -> str:
    canonical = json.dumps(settings_of(destination), sort_keys=True, default=str)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:16]


def _dotenv() -> dict[str, str | None]:
    env_file = Path(".env")
    return dict(dotenv_values(env_file)) if env_file.is_file() else {}
