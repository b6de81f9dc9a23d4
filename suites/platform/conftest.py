"""Fixtures for the tests that prove a platform's own parts."""

from __future__ import annotations

import pytest

from cluster.local.platform import LocalPlatform
from cluster.platform import Platform


@pytest.fixture
def local(platform: Platform, request: pytest.FixtureRequest) -> LocalPlatform:
    """The session's platform when it is the local one; elsewhere the test is skipped, saying why
    (the module docstring's first line names what it proves)."""
    if not isinstance(platform, LocalPlatform):
        why = (request.module.__doc__ or "proves the local platform's own parts").strip().splitlines()[0]
        pytest.skip(f"local platform only: {why}")
    return platform
