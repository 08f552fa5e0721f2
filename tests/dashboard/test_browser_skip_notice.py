"""A machine without chromium says, at the end of the run, that the browser tests were
skipped and how to run them, instead of skipping them all without a word."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_without_chromium_the_run_ends_saying_the_browser_tests_were_skipped(
    tmp_path: Path,
) -> None:
    # only the virtualenv's own programs: no chromium, wherever this machine has one
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"CI", "THINKTANK_CHROMIUM", "PYTEST_ADDOPTS"}
    }
    env["PATH"] = str(Path(sys.executable).parent)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/dashboard/test_campaigns.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    notice = (
        "1 browser test skipped: "
        "no chromium on PATH (apt-get install chromium, or set THINKTANK_CHROMIUM)"
    )
    assert notice in lines, done.stdout
    assert lines.index(notice) >= len(lines) - 3  # next to the closing line, not lost above
    assert "1 skipped" in lines[-1]
