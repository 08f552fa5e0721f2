"""A campaign driven by real Celery workers, through the real Redis and PostgreSQL: the
worker driving it is SIGKILLed mid-round and another worker resumes it at that step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

pytestmark = pytest.mark.postgres

BROKER = "redis://127.0.0.1:6379/12"
PROBLEM = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"


@pytest.fixture
def env(own_postgres_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": PROBLEM, "answer": "10"}) + "\n" for i in range(4)
        )
    )
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        json.dumps({"id": "ok", "problem": PROBLEM, "steps": ["12 - 2 = 10."], "label": -1}) + "\n"
    )
    # The solver never finds the reference answer, so games end without a game record and
    # there is nothing to train: this test is about the driving, not the trainer.
    model = {
        "backend": "scripted",
        "replies": {"verifier": ["\\boxed{-1}"]},
        "default_reply": "The answer is \\boxed{0}.",
        "latency_s": 0.3,
    }
    yield {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path / "home"),
        "THINKTANK_DATABASE_URL": own_postgres_url,
        "THINKTANK_BROKER_URL": BROKER,
        "THINKTANK_MODELS__DEFAULT": json.dumps(model),
        "THINKTANK_CAMPAIGN_STALE_S": "3",
        "THINKTANK_REAP_INTERVAL_S": "1",
        "PROBLEMS": str(problems),
        "LABELLED": str(labelled),
        "COLUMNS": "200",
    }
    client.flushdb()


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "worker", "--concurrency", "4"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def campaign_row(url: str) -> dict | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT id, status, round, step, error FROM campaigns")
            ).first()
            return dict(row._mapping) if row else None
    finally:
        engine.dispose()


def test_a_campaign_survives_the_death_of_the_worker_driving_it(
    env: dict[str, str], own_postgres_url: str
) -> None:
    sync_url = own_postgres_url  # psycopg 3 serves SQLAlchemy sync and async alike
    first = start_worker(env)
    second: subprocess.Popen[str] | None = None
    try:
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "campaign",
                "start",
                "spc",
                "--name",
                "killed",
                "--rounds",
                "2",
                "--games-per-round",
                "3",
                "--problems",
                env["PROBLEMS"],
                "--eval-problems",
                env["LABELLED"],
                "-g",
                "rollouts=2",
                "--base",
                "smollm2",
                "--no-watch",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert "sent to the workers" in started.stdout

        deadline = time.monotonic() + 90
        while True:  # wait until the first worker is in the middle of round 1's games
            row = campaign_row(sync_url)
            if row and (row["round"], row["step"]) == (1, "play"):
                break
            assert time.monotonic() < deadline, row
            time.sleep(0.2)
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        second = start_worker(env)
        deadline = time.monotonic() + 120
        while True:
            row = campaign_row(sync_url)
            assert row is not None
            if row["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, row
            time.sleep(0.5)
        assert (row["status"], row["error"]) == ("succeeded", None)

        shown = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "campaign", "show", "killed"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "succeeded" in shown.stdout
        engine = sa.create_engine(sync_url)
        with engine.connect() as connection:
            games = connection.execute(
                sa.text("SELECT count(*) FROM runs WHERE pattern = 'spc_game'")
            ).scalar_one()
            unfinished = connection.execute(
                sa.text("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
            ).scalar_one()
            rounds = connection.execute(
                sa.text("SELECT round, run_ids FROM campaign_rounds ORDER BY round")
            ).all()
        engine.dispose()
        assert games == 6  # 2 rounds of 3, none played twice
        assert unfinished == 0
        assert [r.round for r in rounds] == [0, 1, 2]
        assert all(len(r.run_ids) == 3 for r in rounds[1:])
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
