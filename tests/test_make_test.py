"""`make test` runs every stage even when an earlier one failed, and still fails then: one run
shows every failure. Checked on the real Makefile with stand-in stages (TEST_STAGES)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def make_test(stages: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("no make here")
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "test", f"TEST_STAGES={stages}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_failed_stage_does_not_stop_the_next_and_fails_the_run():
    done = make_test("help no-such-stage help")
    assert done.returncode != 0
    assert done.stdout.count("make test   set up") == 2  # help ran before and after
    assert "== make no-such-stage ==" in done.stdout
    assert "make test: these stages failed: no-such-stage" in done.stderr


def test_every_stage_passing_passes():
    done = make_test("help help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("make test: every stage passed")
