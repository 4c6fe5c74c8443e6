"""The real droid CLI (0.225.2) still works after the job renewed its login, and vice versa.

``droid doctor --auth --json`` reads the store offline and reports whether it loaded it and
until when its token is valid. droid is pointed at the WorkOS stand-in and at closed
loopback ports for everything else, so nothing leaves 127.0.0.1.

The binary: ``$DROID_BIN``, else ``.cache/droid-0.225.2/package/bin/droid`` (see
``.ci/fetch-droid.sh``). Without it these tests are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from alerter.credentials import CredentialSettings, open_login, token_expiry
from tests.conftest import same_clock

from .helpers import HOUR, SOON, login_data, no_keyring, write_keyfile_store

REPO = Path(__file__).resolve().parents[2]
DROID_VERSION = "0.225.2"
CLOSED_PORT = "http://127.0.0.1:9"


def droid_binary() -> Path | None:
    configured = os.environ.get("DROID_BIN")
    path = Path(configured) if configured else REPO / f".cache/droid-{DROID_VERSION}/package/bin/droid"
    return path if path.is_file() and os.access(path, os.X_OK) else None


DROID = droid_binary()
pytestmark = pytest.mark.skipif(
    DROID is None,
    reason=f"real droid {DROID_VERSION} not found: set DROID_BIN or run .ci/fetch-droid.sh",
)


def droid_env(user_home: Path, workos_url: str) -> dict[str, str]:
    """Return the environment that runs droid on ``user_home``'s file store, on loopback only."""
    return {
        "HOME": str(user_home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FACTORY_DISABLE_KEYRING": "1",  # the file store, as on a headless server
        "FACTORY_WORKOS_BASE_URL": workos_url,
        "FACTORY_API_BASE_URL": CLOSED_PORT,
        "FACTORY_TELEMETRY_INGEST_BASE_URL": CLOSED_PORT,
        "FACTORY_DROID_AUTO_UPDATE_ENABLED": "false",
        "HTTPS_PROXY": CLOSED_PORT,
        "HTTP_PROXY": CLOSED_PORT,
        "NO_PROXY": "127.0.0.1,localhost",
        **same_clock(),  # droid judges the token's expiry by the same clock as this test
    }


def droid_doctor(user_home: Path, workos_url: str) -> dict[str, dict]:
    """Run ``droid doctor --auth --json`` with HOME=user_home; return its results by id."""
    done = subprocess.run(
        [str(DROID), "doctor", "--auth", "--json"],
        env=droid_env(user_home, workos_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stdout)
    return {result["id"]: result for result in report["results"]}


def iso_ms(unix: float) -> str:
    """Format like JavaScript's Date.toISOString()."""
    moment = datetime.fromtimestamp(unix, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_droid_loads_the_login_the_job_renewed(tmp_path, workos):
    home = tmp_path / ".factory"
    write_keyfile_store(home, login_data(SOON))
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 8, renew_reserve_seconds=1
    )

    login = open_login(settings, env={}, key_lookup=no_keyring)
    new_token = workos.issued[0]["access_token"]
    assert login.bearer() == new_token

    results = droid_doctor(tmp_path, workos.url)
    assert results["auth.credentials"]["status"] == "pass"
    assert results["auth.credentials"]["detail"] == ("stored login session loaded from credential storage")
    assert results["auth.tokenExpiry"]["detail"].startswith(
        f"access token valid until {iso_ms(token_expiry(new_token))}"
    )
    assert results["auth.verify"]["status"] == "pass"
    assert len(workos.issued) == 1  # droid did not need to renew it

    # The next run finds the renewed login and does not call WorkOS.
    requests_so_far = len(workos.requests)  # includes droid doctor's invalid-token probe
    again = open_login(settings, env={}, key_lookup=no_keyring)
    assert again.bearer() == new_token
    assert len(workos.requests) == requests_so_far


def test_job_uses_the_login_droid_renewed(tmp_path, workos):
    home = tmp_path / ".factory"
    write_keyfile_store(home, login_data(-HOUR))  # expired: droid renews it itself

    results = droid_doctor(tmp_path, workos.url)
    assert results["auth.verify"]["status"] == "pass"
    assert len(workos.issued) == 1
    assert not list(home.glob("*auth.v2.write*"))  # droid released its lock

    requests_so_far = len(workos.requests)
    settings = CredentialSettings(
        home=home, workos_url=workos.url, deadline=time.monotonic() + 8, renew_reserve_seconds=1
    )
    login = open_login(settings, env={}, key_lookup=no_keyring)
    assert login.bearer() == workos.issued[0]["access_token"]
    assert len(workos.requests) == requests_so_far
