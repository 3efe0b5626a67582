"""The ``NX_*`` settings that point every destination at a set of running stand-ins."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from worker.sandbox.cdcs import FakeCDCS
from worker.sandbox.elabftw import FakeELabFTW
from worker.sandbox.labarchives import FakeLabArchives


def fake_service_settings(
    cdcs: FakeCDCS, elab: FakeELabFTW, labarchives: FakeLabArchives
) -> dict[str, str]:
    """NexusLIMS's own variable names, as a facility's ``.env`` would set them."""
    return {
        "NX_CDCS_URL": cdcs.root_url,
        "NX_CDCS_TOKEN": cdcs.token,
        "NX_ELABFTW_URL": elab.url,
        "NX_ELABFTW_API_KEY": elab.api_key,
        "NX_LABARCHIVES_URL": labarchives.api_url,
        "NX_LABARCHIVES_ACCESS_KEY_ID": labarchives.akid,
        "NX_LABARCHIVES_ACCESS_PASSWORD": labarchives.password,
        "NX_LABARCHIVES_USER_ID": labarchives.uid,
        "NX_LABARCHIVES_NOTEBOOK_ID": "nb-1",
        "NX_HTTP_READ_TIMEOUT": "5",
    }


@contextmanager
def running_stand_ins() -> Iterator[dict[str, str]]:
    """Start the three stand-ins on free loopback ports; yield the settings naming them.

    Their credentials are made up anew each time and reach a worker only through its
    environment, as real ones would.
    """
    with FakeCDCS() as cdcs, FakeELabFTW() as elab, FakeLabArchives() as labarchives:
        yield fake_service_settings(cdcs, elab, labarchives)
