"""tests/inkscape14/run.sh where it cannot run: one line and success, except in CI, where the
Inkscape 1.4 tests must run and not running them is a failure. (The script's real work, the
root and the suite in it, is `make test-inkscape14`.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run.sh")
NOBODY = 65534

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="runs the script as another user (needs root and setpriv)",
)


def run_as_nobody(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The script run as ``nobody``, from a copy in a folder ``nobody`` may enter (a checkout
    under /root, or pytest's own temporary folder, is closed to other users)."""
    folder = Path(tempfile.mkdtemp(prefix="clipasso-run-sh-"))
    try:
        folder.chmod(0o755)
        script = folder / SCRIPT.name
        shutil.copy(SCRIPT, script)
        script.chmod(0o755)
        return _run(script, tmp_path, env)
    finally:
        shutil.rmtree(folder)


def _run(script: Path, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "HOME": str(home), **env}
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_where_it_cannot_run_it_says_so_in_one_line(tmp_path):
    done = run_as_nobody(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    assert line.startswith("inkscape14: the Inkscape 1.4 tests are skipped: ")
    assert "needs root" in line


def test_in_ci_not_running_is_a_failure(tmp_path):
    done = run_as_nobody(tmp_path, CI="true")
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("inkscape14: cannot run the Inkscape 1.4 tests: ")
