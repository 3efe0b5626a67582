"""The one base of every settings class: environment first, then ``.env``.

NexusLIMS reads its ``NX_*`` names the same way, so an existing NexusLIMS
``.env`` in the working directory configures the destinations as it is. A
plugin's own settings class derives from ``NxSettings`` too.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class NxSettings(BaseSettings):
    """Read ``NX_*`` variables from the environment, then from ``./.env``; ignore the rest."""

    # No populate_by_name: a field called ``path`` or ``url`` would then also read
    # the unrelated ``PATH`` or ``URL`` variable. Only the ``NX_*`` aliases count.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")
