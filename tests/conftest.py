"""Fixtures shared by the test modules."""

import pytest

from nrnm_fast import available_backends


@pytest.fixture(params=available_backends("cpu"))
def backend(request):
    """Each backend available for CPU tensors: the properties hold for every implementation."""
    return request.param
