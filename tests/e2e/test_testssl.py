"""testssl.sh (Debian's) judges the HTTPS listener: only TLS 1.2 and 1.3, no weak cipher class.

Runs in the loopback-only namespace like the browser tests, so the scanner cannot reach anything else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.e2e.conftest import ServeProcess

pytestmark = pytest.mark.netns

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")


def test_testssl_finds_only_tls12_and_tls13_and_no_weak_ciphers(serve: ServeProcess, tmp_path: Path) -> None:
    if TESTSSL is None:
        if IN_CI:
            pytest.fail("testssl.sh is not installed (make test installs it)")
        pytest.skip("testssl.sh is not installed (make test installs it)")
    report = tmp_path / "testssl.json"
    subprocess.run(
        [TESTSSL, "--protocols", "--std", "--quiet", "--color", "0", "--warnings", "batch",
         "--jsonfile", str(report), serve.url],
        capture_output=True, text=True, timeout=300, check=False,
    )
    findings = {item["id"]: item["finding"] for item in json.loads(report.read_text())}
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[old] == "not offered", (old, findings[old])
    assert findings["TLS1_2"] == "offered"
    assert findings["TLS1_3"].startswith("offered")
    for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                 "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
        assert findings[weak] == "not offered", (weak, findings[weak])
    assert findings["cipherlist_STRONG"] == "offered"
