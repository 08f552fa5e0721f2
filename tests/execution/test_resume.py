"""A worker killed mid-discussion loses nothing: the run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli

CEO = "### Decision: <Continue>\n### Recruit Number: 3\n### Direction: go\n### Maximum Tokens: 128"


def stored_turns(db: Path) -> list[tuple[int, str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            return conn.execute("SELECT id, key, completion FROM turns ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []


def test_a_killed_run_resumes_without_losing_or_repeating_a_turn(tmp_path: Path) -> None:
    slow_model = {
        "backend": "scripted",
        "latency_s": 0.3,
        "replies": {
            "ceo": [CEO],
            "recruiter": ["1. A.\n2. B.\n3. C."],
            "solver": ["\\boxed{5}"],
            "critic": ["No. [Disagree]"],
            "evaluator": ["### Correctness: 0\n### Advice: again"],
        },
    }
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps(slow_model),
    }
    db = tmp_path / "thinktank.db"
    solve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "solve",
            "2+3?",
            "--max-rounds",
            "2",
            "--max-inner-turns",
            "1",
            "-q",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(stored_turns(db)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(solve.pid, signal.SIGKILL)
    solve.wait(timeout=10)
    before = stored_turns(db)
    assert len(before) >= 5, "the run should have been killed mid-discussion"

    with sqlite3.connect(db) as conn:
        run_id, status = conn.execute("SELECT id, status FROM runs").fetchone()
    assert status == "running"

    resumed = run_cli(env, "runs", "resume", run_id, "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.strip() == "5"

    after = stored_turns(db)
    assert after[: len(before)] == before  # nothing stored before the kill changed
    keys = [key for _, key, _ in after]
    assert len(keys) == len(set(keys))  # no turn made twice
    # two full rounds: ceo, recruit, solve, 2 critiques, revise, 2 critiques, evaluate
    assert len(keys) == 2 * 9
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, stop_reason FROM runs").fetchone() == (
            "succeeded",
            "max_rounds",
        )
