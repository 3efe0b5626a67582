"""Fake CDCS, eLabFTW and LabArchives services on loopback, for tests and benchmarks.

Each fake speaks the real HTTP API, checks credentials and request shapes,
records what was created and every request, and can be told to misbehave::

    with FakeCDCS() as cdcs:
        cdcs.fail_next(503, count=2)
        ...  # point NX_CDCS_URL at cdcs.root_url, NX_CDCS_TOKEN at cdcs.token
"""

from tests.fakes.cdcs import FakeCDCS
from tests.fakes.elabftw import FakeELabFTW
from tests.fakes.labarchives import FakeLabArchives, expected_signature
from tests.fakes.server import FakeService, LoggedRequest, ServerThread

__all__ = [
    "FakeCDCS",
    "FakeELabFTW",
    "FakeLabArchives",
    "FakeService",
    "LoggedRequest",
    "ServerThread",
    "expected_signature",
]
