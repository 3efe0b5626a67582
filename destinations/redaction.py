"""Blanking secrets out of text that may be stored, shown or logged.

A service's error body can echo the credential it was sent, whole or in part,
escaped or encoded. ``redact`` blanks, for each secret:

* every occurrence of the secret itself (secrets of 4 characters or more);
* every run of ``MIN_RUN`` (8) or more characters that is a substring of the
  secret — anywhere in the text, not only at its ends — so a secret cut by a
  length limit, by a line break in a log, or quoted in pieces leaks no prefix
  or suffix longer than 7 characters;
* the same for the secret's JSON-escaped, URL-encoded and base64 forms.

Redact first, then shorten (``redact_then_cut``): cutting first can leave a
secret's prefix that no longer matches the whole secret.

Substrings are matched by their 8-character windows: every window of the text
that is also a window of a secret form is blanked, and overlapping blanked
windows merge into one ``***``. A run of 8 or more characters of the secret is
made of such windows, so it is always blanked. Ordinary text rarely shares 8
characters in a row with a generated token; a secret that is an English word
may blank that word elsewhere too, which is the safe way to be wrong.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

MIN_RUN = 8
# Shorter secrets are too likely to match ordinary text; they are blanked only whole.
MIN_SECRET = 4
MASK = "***"
SECRET_NAME = re.compile(r"^NX_.*(TOKEN|KEY|PASSWORD|SECRET)", re.IGNORECASE)


def configured_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment's ``NX_*TOKEN|KEY|PASSWORD|SECRET*`` variables."""
    environ = os.environ if environ is None else environ
    return [
        value for name, value in environ.items()
        if SECRET_NAME.match(name) and len(value) >= MIN_SECRET
    ]  # fmt: skip


@lru_cache(maxsize=256)
def secret_forms(secret: str) -> frozenset[str]:
    """The secret as it may appear in a body: as-is, JSON-escaped, URL-encoded, base64."""
    raw = secret.encode()
    encoded = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        encoded,
        encoded.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
    }
    return frozenset(form for form in forms if len(form) >= MIN_SECRET)


def _windows(forms: Iterable[str]) -> frozenset[str]:
    return frozenset(
        form[start : start + MIN_RUN] for form in forms for start in range(len(form) - MIN_RUN + 1)
    )


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and every 8-character run of one, replaced by ``***``."""
    forms = {form for secret in secrets if secret and len(secret) >= MIN_SECRET
             for form in secret_forms(secret)}  # fmt: skip
    if not forms or not text:
        return text
    # Whole forms first (this also catches secrets of 4 to 7 characters).
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    windows = _windows(forms)
    if not windows:
        return text
    hidden = bytearray(len(text))  # 1 where a character belongs to a secret's run
    for start in range(len(text) - MIN_RUN + 1):
        if text[start : start + MIN_RUN] in windows:
            hidden[start : start + MIN_RUN] = b"\x01" * MIN_RUN
    if not any(hidden):
        return text
    pieces: list[str] = []
    for index, char in enumerate(text):
        if not hidden[index]:
            pieces.append(char)
        elif index == 0 or not hidden[index - 1]:
            pieces.append(MASK)
    return "".join(pieces)


def redact_configured(text: str, extra: Iterable[str] = ()) -> str:
    """``redact`` with the environment's configured secrets and ``extra`` ones."""
    return redact(text, [*configured_secrets(), *extra])


def redact_then_cut(text: str, limit: int, secrets: Iterable[str] = ()) -> str:
    """At most ``limit`` characters of ``text``, cut only after every secret is blanked."""
    return redact_configured(text, secrets)[:limit]


# -- messages as they are stored or shown --------------------------------------------------

URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s'\"<>]*")


def redact_message(message: str) -> str:
    """An error message as it may be stored or shown: URL queries cut, secrets blanked."""
    return redact_configured(URL_QUERY.sub(r"\1?…", message))


def redact_value(value: Any) -> Any:
    """Blank the configured secrets (and any 8-character run of one) out of every string."""
    if isinstance(value, str):
        return redact_configured(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    return value
