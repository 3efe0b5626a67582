"""Pytest fixtures around the stand-in services of ``worker.sandbox`` (see ``fixtures``)."""
