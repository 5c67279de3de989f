"""Tests of the Triton kernels under the Triton interpreter (CPU tensors, no GPU).

TRITON_INTERPRET is read when triton is imported, so these tests run in their own pytest process:
``TRITON_INTERPRET=1 python -m pytest tests/interpret`` (make test does). In any other process they
are skipped.
"""

import os

import pytest

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def pytest_collection_modifyitems(config, items):
    if INTERPRET:
        return
    skip = pytest.mark.skip(reason="run under TRITON_INTERPRET=1 in its own process (make test does)")
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)
