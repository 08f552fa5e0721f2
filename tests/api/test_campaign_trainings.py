"""A campaign's trainings do not outlive the embedded server that started them: the real
``thinktank serve`` (no broker), a real LoRA training launched by its campaign, and the server
stopped (SIGTERM) or killed (SIGKILL) while that training runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import free_port
from tests.api.test_campaigns_api import REPLIES, game_problems
from tests.graphs.test_spc_game import PROBLEM, SOLUTION
from training.jobs.local import pid_alive

# the world of the API's campaign test: only the sneaky generator has a signal to train on
CAMPAIGN = {
    "kind": "spc",
    "base": "smollm2",
    "name": "tied",
    "rounds": 1,
    "games_per_round": 2,
    "baseline": False,
    "problems": "apples.jsonl",
    "eval_problems": "labelled.jsonl",
    "game": {"rollouts": 2, "step_index": 2},
    # far more steps than the test waits for: the training is still running when the server goes
    "train": {"max_steps": 10_000, "batch_size": 2, "lora_r": 4, "max_length": 256, "threads": 1},
}


class Server:
    """``thinktank serve`` in a process of its own, on a SQLite file in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.database = home / "api.db"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "THINKTANK_HOME": str(home),
            "THINKTANK_DATABASE_URL": f"sqlite+aiosqlite:///{self.database}",
            "THINKTANK_MODELS__DEFAULT": json.dumps({"backend": "scripted", "replies": REPLIES}),
        }
        env.pop("THINKTANK_BROKER_URL", None)
        self.log = (home / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "--port", str(port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, (home / "serve.log").read_text()
            assert time.monotonic() < deadline, "thinktank serve did not start"
            time.sleep(0.2)

    def training(self) -> tuple[str, str, int | None]:
        with sqlite3.connect(self.database) as db:
            row = db.execute("SELECT id, status, pid FROM training_runs").fetchone()
        return row or ("", "", None)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "home"
    problems = home / "problems"
    problems.mkdir(parents=True)
    rows = game_problems()
    (problems / "apples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labelled = [{"id": "ok", "problem": PROBLEM, "steps": SOLUTION.split("\n\n"), "label": -1}]
    (problems / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled))
    running = Server(home)
    yield running
    running.close()
    _, _, pid = running.training()
    if pid is not None and pid_alive(pid):  # never leave a trainer behind, whatever failed
        os.kill(pid, signal.SIGKILL)


@pytest.mark.local_model
@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_campaigns_training_ends_with_the_embedded_server(
    server: Server, ending: signal.Signals
) -> None:
    response = httpx.post(f"{server.url}/v1/campaigns", json=CAMPAIGN, timeout=30)
    assert response.status_code == 202, response.text

    deadline = time.monotonic() + 300
    while True:  # until the trainer has loaded its model and records its progress
        run_id, status, pid = server.training()
        if status == "running" and pid is not None:
            break
        assert server.process.poll() is None, (server.home / "serve.log").read_text()
        assert time.monotonic() < deadline, f"no training started: {status!r}"
        time.sleep(0.5)
    assert pid_alive(pid)

    server.process.send_signal(ending)
    server.process.wait(timeout=90)
    deadline = time.monotonic() + 90
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the training outlived the server that started it"
        time.sleep(0.5)
    # it stopped as on a Ctrl-C: checkpointed, and resumable by the campaign's next driver
    assert server.training()[:2] == (run_id, "interrupted")
