"""The ``NX_*`` settings that point every destination at a set of running fakes."""

from __future__ import annotations

from tests.fakes.cdcs import FakeCDCS
from tests.fakes.elabftw import FakeELabFTW
from tests.fakes.labarchives import FakeLabArchives


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
