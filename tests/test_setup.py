"""The project's own set-up: scripts/system-deps.sh as a user without root runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "system-deps.sh"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run the script as another user")


def run_as_nobody(commands: list[str], *args: str) -> subprocess.CompletedProcess:
    """The script as user 'nobody', with only ``commands`` on PATH (what that user has installed)."""
    bin_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"sysdeps-bin-{os.getpid()}"
    shutil.rmtree(bin_dir, ignore_errors=True)
    bin_dir.mkdir()
    for name in ["bash", "grep", "id", "ldconfig", *commands]:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if found:
            (bin_dir / name).symlink_to(found)
    script = bin_dir / SCRIPT.name  # a copy: the checkout may be unreadable to other users (/root)
    shutil.copy(SCRIPT, script)
    script.chmod(0o755)
    bin_dir.chmod(0o755)
    try:
        return subprocess.run([shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
                               str(bin_dir / "bash"), str(script), *args],
                              env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(bin_dir, ignore_errors=True)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make setup)")
def test_without_root_a_missing_browser_only_means_its_test_skips():
    result = run_as_nobody(["espeak-ng"], "--test")
    assert result.returncode == 0, result.stderr
    assert "chromium is not installed" in result.stderr and "will skip" in result.stderr


def test_without_root_a_missing_library_says_what_to_install():
    result = run_as_nobody([])  # no espeak-ng on this user's PATH
    assert result.returncode == 1
    assert "speechcodec needs the system packages: espeak-ng" in result.stderr
    assert "apt-get install espeak-ng" in result.stderr
