"""What may be stored or shown of a message: configured secrets blanked, URL queries cut.

Secrets are the values of the ``NX_*TOKEN``, ``*KEY``, ``*PASSWORD`` and
``*SECRET`` variables of this process; a signed URL's query is a secret too.
"""

from __future__ import annotations

import os
import re
from typing import Any, cast


def redact_message(message: str) -> str:
    """An error message as it may be stored or shown: URL queries cut, secrets blanked."""
    return cast(str, redact(URL_QUERY.sub(r"\1?…", message)))


SECRET_NAME = re.compile(r"^NX_.*(TOKEN|KEY|PASSWORD|SECRET)", re.IGNORECASE)
URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s'\"<>]*")


def redact(value: Any) -> Any:
    """Blank the configured secrets out of every string in ``value``."""
    if isinstance(value, str):
        text = value
        for secret in _configured_secrets():
            text = text.replace(secret, "***")
        return text
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def _configured_secrets() -> list[str]:
    return [
        value for name, value in os.environ.items() if SECRET_NAME.match(name) and len(value) >= 4
    ]
