"""Faults injected for real: services restarted, processes killed."""

from __future__ import annotations

import contextlib
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

from tests.api.conftest import REPLIES

BROKER = "redis://127.0.0.1:6379/12"

# A discussion that runs its two full rounds: the critics disagree, the evaluator says wrong.
TWO_ROUNDS = {
    **REPLIES,
    "critic": ["No. [Disagree]"],
    "evaluator": ["### Correctness: 0\n### Advice: again"],
}
# per round: ceo, recruit, solve, 2 critiques, revise, 2 critiques, evaluate
TWO_ROUNDS_TURNS = 2 * 9


def restart_postgres() -> None:
    """Stop and start this machine's PostgreSQL cluster: every connection is cut."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def restart_redis() -> None:
    """Stop Redis without saving and start it again as CI does: everything in it is lost."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    with contextlib.suppress(redis.ConnectionError):  # it hangs up as it goes down
        client.shutdown(nosave=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield BROKER
    client.flushdb()


class Workers:
    """``thinktank worker`` processes on the test database, with short leases."""

    def __init__(self, database_url: str, broker: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.broker = broker
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *, latency_s: float = 0.2, jitter_s: float = 0.0) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "THINKTANK_DATABASE_URL": self.database_url,
            "THINKTANK_BROKER_URL": self.broker,
            "THINKTANK_MODELS__DEFAULT": json.dumps(
                {
                    "backend": "scripted",
                    "replies": TWO_ROUNDS,
                    "latency_s": latency_s,
                    "latency_jitter_s": jitter_s,
                }
            ),
            "THINKTANK_RUN_LEASE_S": "1.5",
            "THINKTANK_REAP_INTERVAL_S": "0.3",
            "THINKTANK_REQUEUE_AFTER_S": "2",
        }
        log = open(self.log_dir / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "worker", "--concurrency", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.iterdir()))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers(postgres_url: str, broker: str, tmp_path: Path) -> Iterator[Workers]:
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    pool = Workers(postgres_url, broker, log_dir)
    yield pool
    pool.stop()
