"""Fixtures for the credential tests (kept here so the suite-wide conftest stays the app's)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alerter.credentials import CredentialSettings

from .helpers import WorkOSStandIn


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """droid's store directory, as ``$HOME/.factory`` under a temporary HOME."""
    path = tmp_path / "home" / ".factory"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def settings(home: Path, workos: WorkOSStandIn) -> CredentialSettings:
    """Settings pointing at the stand-in, with a run deadline a few seconds away."""
    return CredentialSettings(
        home=home,
        workos_url=workos.url,
        timeout_seconds=2.0,
        deadline=time.monotonic() + 8,
        renew_reserve_seconds=1.0,
    )
