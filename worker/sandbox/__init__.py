"""Local stand-ins of CDCS, eLabFTW and LabArchives, for trying the exporters without accounts.

Each stand-in speaks the HTTP calls NexusLIMS's exporters make (as the services
document them), checks credentials and request shapes, keeps what was created,
logs every request and can be told to misbehave. ``nx-export demo --services``
exports the sample records to them with the real destination code; the tests and
benchmarks use them as their fake services::

    with FakeCDCS() as cdcs:
        cdcs.fail_next(503, count=2)
        ...  # point NX_CDCS_URL at cdcs.root_url, NX_CDCS_TOKEN at cdcs.token

They are stand-ins, not a test of the real services: a real CDCS, eLabFTW or
LabArchives may answer differently.
"""

from worker.sandbox.cdcs import FakeCDCS
from worker.sandbox.elabftw import FakeELabFTW
from worker.sandbox.labarchives import FakeLabArchives, expected_signature
from worker.sandbox.server import FakeService, LoggedRequest, ServerThread

__all__ = [
    "FakeCDCS",
    "FakeELabFTW",
    "FakeLabArchives",
    "FakeService",
    "LoggedRequest",
    "ServerThread",
    "expected_signature",
]
