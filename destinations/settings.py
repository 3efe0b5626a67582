"""The one base of every settings class: environment first, then ``.env``.

NexusLIMS reads its ``NX_*`` names the same way, so an existing NexusLIMS
``.env`` in the working directory configures the destinations as it is. A
plugin's own settings class derives from ``NxSettings`` too.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values
from pydantic_settings import BaseSettings, SettingsConfigDict


class NxSettings(BaseSettings):
    """Read ``NX_*`` variables from the environment, then from ``./.env``; ignore the rest."""

    # No populate_by_name: a field called ``path`` or ``url`` would then also read
    # the unrelated ``PATH`` or ``URL`` variable. Only the ``NX_*`` aliases count.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")


def destination_setting(destination: str, key: str) -> str:
    """The name of one destination's setting, ``NX_EXPORT_<NAME>_<KEY>`` (``-`` read as ``_``)."""
    return f"NX_EXPORT_{destination.upper().replace('-', '_')}_{key}"


def nx_setting(name: str) -> str | None:
    """One variable by name, in the same order: the environment, then ``./.env``.

    For names built at run time (``NX_EXPORT_<DESTINATION>_...``), which no
    settings class can declare in advance.
    """
    if name in os.environ:
        return os.environ[name]
    env_file = Path(".env")
    if not env_file.is_file():
        return None
    value = dotenv_values(env_file).get(name)
    return value if value is None else str(value)
