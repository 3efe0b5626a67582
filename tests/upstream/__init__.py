"""NexusLIMS 2.8.0's exporter tests, run against ``worker.compat`` and a real worker.

``upstream_*.py`` are NexusLIMS's own test files (MIT License, Copyright (c) 2025
Datasophos; LICENSE.NexusLIMS), named so that the main test run does not collect
them: tests/test_nexuslims_upstream.py runs them in a pytest process of their
own with ``harness.py`` as plugin.
"""
