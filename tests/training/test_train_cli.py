"""``thinktank train`` and ``thinktank models`` as a user runs them, on the real SmolLM2.

One story: an SFT job started in the background is interrupted, refuses to start over without
``--resume``, resumes from its checkpoint and registers ``policy-sft-v1``; the same command
again trains nothing; an RL job continues that version into ``policy-rl-v1``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli


def write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def training_row(database: Path, run_id: str) -> dict[str, Any]:
    with sqlite3.connect(database) as connection:
        status, progress, pid = connection.execute(
            "SELECT status, progress, pid FROM training_runs WHERE id = ?", (run_id,)
        ).fetchone()
    return {"status": status, "progress": json.loads(progress or "{}"), "pid": pid}


def wait_for(database: Path, run_id: str, ready: Any, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = training_row(database, run_id)
        if ready(row):
            return row
        time.sleep(0.2)
    raise AssertionError(f"training run {run_id} never got there: {row}")


@pytest.mark.local_model
def test_train_interrupt_resume_register_and_continue(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "THINKTANK_HOME": str(home), "COLUMNS": "200"}
    env.pop("THINKTANK_DATABASE_URL", None)
    database = home / "thinktank.db"
    chat = [
        {"role": "user", "content": "What is the secret word?"},
        {"role": "assistant", "content": "Pineapple."},
    ]
    sft = write_lines(tmp_path / "sft.jsonl", [{"messages": chat}] * 2)
    train = ["train", "sft", "--data", str(sft), "--max-steps", "6", "--batch-size", "2",
             "--lora-r", "4", "--threads", "1", "--checkpoint-every", "1"]  # fmt: skip

    started = run_cli(env, *train, "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = started.stdout.split("training run ")[1].split(":")[0]
    assert "→ model version policy-sft-v1" in started.stdout

    running = wait_for(database, run_id, lambda r: r["progress"].get("step", 0) >= 1)
    os.kill(running["pid"], signal.SIGINT)
    stopped = wait_for(database, run_id, lambda r: r["status"] != "running")
    assert stopped["status"] == "interrupted"
    at = stopped["progress"]["step"]
    assert 1 <= at < 6

    again = run_cli(env, *train)
    assert again.returncode == 2
    assert f"stopped at step {at}/6" in again.stdout and "--resume" in again.stdout

    resumed = run_cli(env, *train, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming training run {run_id}" in resumed.stdout
    assert f"resuming from checkpoint step-{at:07d}" in resumed.stderr
    assert "registered model version policy-sft-v1" in resumed.stdout

    shown = json.loads(run_cli(env, "models", "show", "policy-sft-v1", "--json").stdout)
    assert shown["metrics"]["resumed_from_step"] == at
    assert shown["metrics"]["steps"] == 6
    assert shown["training_run_id"] == run_id
    assert Path(shown["adapter_path"]) == home / "models" / "adapters" / "policy-sft-v1"
    assert (home / "models" / "adapters" / "policy-sft-v1" / "adapter_config.json").is_file()

    repeat = run_cli(env, *train)
    assert repeat.returncode == 0
    assert "already trained with these settings and data: model version policy-sft-v1" in (
        repeat.stdout
    )

    prompt = [{"role": "user", "content": "What is the secret word?"}]
    rl = write_lines(
        tmp_path / "rl.jsonl",
        [
            {"prompt": prompt, "completion": "Pineapple.", "reward": 1, "group_id": "g"},
            {"prompt": prompt, "completion": "Banana.", "reward": 0, "group_id": "g"},
        ],
    )
    continued = run_cli(
        env, "train", "rl", "--data", str(rl), "--base", "policy-sft-v1", "--max-steps", "1",
        "--batch-size", "2", "--threads", "1", timeout=600,
    )  # fmt: skip
    assert continued.returncode == 0, continued.stdout + continued.stderr
    assert "registered model version policy-rl-v1" in continued.stdout
    assert "expected reward" in continued.stdout

    listed = run_cli(env, "models", "list")
    assert listed.returncode == 0
    rows = [line for line in listed.stdout.splitlines() if "policy-" in line]
    assert len(rows) == 2
    assert "policy-rl-v1" in rows[0] and "policy-sft-v1" in rows[0]  # newest first, its parent
    assert "policy-sft-v1" in rows[1] and "eval loss" in rows[1]


def test_bad_training_input_is_one_line_and_status_2(tmp_path: Path) -> None:
    env = {**os.environ, "THINKTANK_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("THINKTANK_DATABASE_URL", None)
    missing = run_cli(env, "train", "sft", "--data", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2
    assert "no such dataset file" in missing.stdout and "Traceback" not in missing.stderr

    unknown = run_cli(env, "train", "rl", "--data", "x.jsonl", "--clip", "0.3")
    assert unknown.returncode == 2
    assert "--clip is not an option of train rl" in unknown.stdout

    absent = run_cli(env, "models", "show", "policy-sft-v9")
    assert absent.returncode == 2
    assert "no model version named 'policy-sft-v9'" in absent.stdout
