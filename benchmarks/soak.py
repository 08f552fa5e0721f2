"""A bounded soak of the production shape on loopback, with faults injected at random.

Starts, on this machine: a scratch database on the local PostgreSQL, a Redis database of its
own as the broker (flushed at start and end), one ``thinktank serve`` API process and
``--workers`` ``thinktank worker`` processes with short run leases, all on a scripted model
(50-200 ms per call) that fails a ``--fault-rate`` share of its calls with a retryable model
error. ``--concurrency`` clients submit runs over HTTP (discussion, self_consistency, single,
mixed) and poll them to their end, for ``--minutes``. Meanwhile a worker is killed with SIGKILL
every ``--kill-every`` seconds on average and a fresh one started: its runs must be picked up
by the others' reapers once their leases expire and resume from their checkpoints. Faults stop
at the deadline; then the runs still going get ``--drain-s`` to end.

An injected model error comes before any text of its call, so the call is tried again (after a
backoff of 0.25-1 s, announced as a ``turn_retry`` event; the retried call stores one turn):
a run fails only when one of its calls fails every one of its three tries, about
``--fault-rate`` cubed of the calls (1 in a million at 1%), so nearly every run succeeds.

Prints: runs completed; runs failed, grouped by reason (a call out of tries fails its run: that
is the expected outcome of injected model errors); runs unfinished after the drain (must be 0);
turns lost (must be 0: a turn key seen while a run went on and missing at the end, or a turn of
the fault-free transcript missing from a succeeded run); duplicate turn keys (must be 0); turns
that no fault-free run makes; runs resumed on another worker; and the resident memory (VmRSS)
of the API process and the workers at start and end. Exit status 1 when a must-be-0 is not.

Run: python benchmarks/soak.py [--minutes 10] [--concurrency 32] [--fault-rate 0.01]
         [--kill-every 30] [--seed 0] [--workers 2] [--drain-s 120]
         [--postgres ADMIN_URL] [--broker redis://127.0.0.1:6379/11]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from scratch_db import create_scratch_database, drop_scratch_database
from sqlalchemy.engine import make_url

from agents.backends.scripted import ScriptedBackend, ScriptedModelConfig
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from store.db import create_engine, migrate
from store.runs import Store

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("succeeded", "failed", "cancelled")

# Two full discussion rounds (the critics disagree, the evaluator says wrong): 18 calls, so a
# worker kill often lands mid-run.
REPLIES = {
    "ceo": [
        "### Decision: <Continue>\n### Recruit Number: 3\n### Direction: go\n"
        "### Maximum Tokens: 128"
    ],
    "recruiter": ["1. A.\n2. B.\n3. C."],
    "solver": ["2 + 3 = 5 so \\boxed{5}"],
    "critic": ["No. [Disagree]"],
    "evaluator": ["### Correctness: 0\n### Advice: again"],
}
PROBLEM = "What is 2 + 3?"
# pattern -> (share of submitted runs, config); self-consistency without early stopping, so
# that its turns do not depend on which sample answers first.
MIX: dict[str, tuple[float, dict[str, Any]]] = {
    "discussion": (0.4, {"agents": 3, "max_rounds": 2, "max_inner_turns": 1}),
    "self_consistency": (0.3, {"samples": 4, "early_stop": False}),
    "single": (0.3, {}),
}
LEASE_S = 3.0
REAP_INTERVAL_S = 1.0
REQUEUE_AFTER_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB, from /proc (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reason_of(error: str | None) -> str:
    """A failure's reason with what differs between runs (ids, numbers) taken out."""
    text = (error or "no error recorded").strip().splitlines()[0]
    text = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", text)
    return text[:160]


async def reference_keys(home: Path) -> dict[str, list[str]]:
    """The turn keys each pattern's run makes when nothing goes wrong (in-process, SQLite)."""
    url = f"sqlite+aiosqlite:///{home / 'reference.db'}"
    engine = create_engine(url)
    await migrate(engine)
    store = Store(engine)
    keys = {}
    try:
        for pattern, (_, config) in MIX.items():
            run_id = await submit_run(store, pattern, PROBLEM, config)
            models = ModelRouter.single(ScriptedBackend(REPLIES))
            outcome = await execute_run(run_id, store=store, models=models, database_url=url)
            if outcome["status"] != "succeeded":
                raise SystemExit(f"the fault-free {pattern} run ended {outcome['status']}")
            keys[pattern] = [turn.key for turn in await store.turns(run_id)]
    finally:
        await store.close()
        await engine.dispose()
    return keys


# --- processes ----------------------------------------------------------------------------


class Services:
    """The API process and the workers, with the environment they share."""

    def __init__(self, args: argparse.Namespace, database_url: str, home: Path) -> None:
        self.args = args
        self.home = home
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("THINKTANK_")}
        self.env.update(
            THINKTANK_DATABASE_URL=database_url,
            THINKTANK_BROKER_URL=args.broker,
            THINKTANK_AUTH="off",
            THINKTANK_HOME=str(home),
            THINKTANK_CONFIG=str(home / "absent.toml"),  # no thinktank.toml from the cwd
            THINKTANK_RUN_LEASE_S=str(LEASE_S),
            THINKTANK_REAP_INTERVAL_S=str(REAP_INTERVAL_S),
            THINKTANK_REQUEUE_AFTER_S=str(REQUEUE_AFTER_S),
        )
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.started = 0  # workers started so far, for log names and seeds

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.home / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", *command],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_api(self, timeout_s: float = 60) -> None:
        self.api = self.spawn(
            "api", ["serve", "--host", LOOPBACK, "--port", str(self.port)], self.env
        )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2, trust_env=False) as client:
            while True:
                if self.api.poll() is not None:
                    raise RuntimeError(f"the API exited:\n{self.log_tail('api')}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start:\n{self.log_tail('api')}")
                time.sleep(0.1)

    def start_worker(self) -> subprocess.Popen[bytes]:
        index = self.started
        self.started += 1
        model = ScriptedModelConfig(
            replies=REPLIES,
            latency_s=0.05,
            latency_jitter_s=0.15,
            failure_rate=self.args.fault_rate,
            seed=self.args.seed * 1000 + index,  # each worker its own sequence of faults
        )
        env = {**self.env, "THINKTANK_MODELS__DEFAULT": model.model_dump_json()}
        per_worker = max(1, math.ceil(self.args.concurrency / self.args.workers))
        process = self.spawn(f"worker-{index}", ["worker", "--concurrency", str(per_worker)], env)
        self.workers.append(process)
        self.wait_ready(process, f"worker-{index}")
        return process

    def wait_ready(
        self, process: subprocess.Popen[bytes], name: str, timeout_s: float = 90
    ) -> None:
        """Until Celery logs that the worker is ready: its reaper and loop are up by then."""
        deadline = time.monotonic() + timeout_s
        while " ready." not in self.log_tail(name, 200):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log_tail(name)}")
            time.sleep(0.2)

    def alive_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.home / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        processes = [p for p in [*self.workers, self.api] if p is not None and p.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# --- the soak -----------------------------------------------------------------------------


@dataclass
class Tracked:
    """One submitted run, as the client saw it."""

    pattern: str
    watched: bool  # its turns are read while it goes on
    seen_keys: set[str] = field(default_factory=set)
    status: str = "queued"
    error: str | None = None
    final_keys: list[str] = field(default_factory=list)


@dataclass
class Soak:
    args: argparse.Namespace
    services: Services
    rng: random.Random
    runs: dict[str, Tracked] = field(default_factory=dict)
    http_errors: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    kill_log: list[str] = field(default_factory=list)
    peak_rss: dict[str, float] = field(default_factory=dict)
    start_rss: str = ""

    def pick_pattern(self) -> str:
        names = list(MIX)
        return self.rng.choices(names, weights=[MIX[n][0] for n in names])[0]


async def request(soak: Soak, client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    """A JSON answer, or None after counting the error (the soak keeps going)."""
    try:
        response = await client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        soak.http_errors[f"{method} {path.split('/')[2]}: {type(exc).__name__}"] += 1
        return None
    if response.status_code >= 400:
        soak.http_errors[f"{method} {path.split('/')[2]}: {response.status_code}"] += 1
        return None
    return response.json()


async def client_loop(
    soak: Soak, client: httpx.AsyncClient, submit_until: float, end: float
) -> None:
    """Submit a run, follow it to its end, again, until ``submit_until``."""
    while time.monotonic() < submit_until:
        pattern = soak.pick_pattern()
        body = {"pattern": pattern, "problem": PROBLEM, "config": MIX[pattern][1]}
        created = await request(soak, client, "POST", "/v1/runs", json=body)
        if created is None:
            await asyncio.sleep(1)
            continue
        run = soak.runs[created["id"]] = Tracked(pattern, soak.rng.random() < soak.args.watch_share)
        await follow(soak, client, created["id"], run, end)


async def follow(
    soak: Soak, client: httpx.AsyncClient, run_id: str, run: Tracked, end: float
) -> None:
    polls = 0
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        polls += 1
        if run.watched and polls % 3 == 0:
            turns = await request(soak, client, "GET", f"/v1/runs/{run_id}/turns")
            if turns is not None:
                run.seen_keys.update(turn["key"] for turn in turns)
        view = await request(soak, client, "GET", f"/v1/runs/{run_id}")
        if view is not None:
            run.status, run.error = view["status"], view["error"]
            if run.status in TERMINAL:
                return


async def killer(soak: Soak, until: float) -> None:
    """SIGKILL a random worker every so often and start a replacement at once."""
    while True:
        wait = soak.rng.expovariate(1 / soak.args.kill_every)
        if time.monotonic() + wait >= until:
            return
        await asyncio.sleep(wait)
        alive = soak.services.alive_workers()
        if not alive:
            continue
        victim = soak.rng.choice(alive)
        victim.kill()
        await asyncio.to_thread(victim.wait, 10)
        soak.kills += 1
        replacement = await asyncio.to_thread(soak.services.start_worker)
        soak.kill_log.append(
            f"{time.strftime('%H:%M:%S')} killed pid {victim.pid}, started {replacement.pid}"
        )


async def memory_sampler(soak: Soak) -> None:
    while True:
        api = soak.services.api
        for worker in soak.services.alive_workers():
            rss = rss_mib(worker.pid)
            if rss is not None:
                soak.peak_rss["worker"] = max(soak.peak_rss.get("worker", 0.0), rss)
        if api and (rss := rss_mib(api.pid)) is not None:
            soak.peak_rss["api"] = max(soak.peak_rss.get("api", 0.0), rss)
        await asyncio.sleep(2)


def rss_line(services: Services) -> str:
    api = rss_mib(services.api.pid) if services.api else None
    workers = [rss_mib(w.pid) for w in services.alive_workers()]
    shown = ", ".join(f"{r:.0f}" for r in workers if r is not None)
    return f"API {api or 0:.0f} MiB; workers {shown} MiB"


def attempts_by_run(database_url: str) -> dict[str, int]:
    import psycopg

    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT id, attempts FROM runs").fetchall())


async def soak_main(args: argparse.Namespace, soak: Soak, reference: dict[str, list[str]]) -> int:
    services = soak.services
    start = time.monotonic()
    submit_until = start + args.minutes * 60
    end = submit_until + args.drain_s
    sampler = asyncio.create_task(memory_sampler(soak))
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(
        base_url=services.url, timeout=30, trust_env=False, limits=limits
    ) as client:
        clients = [
            asyncio.create_task(client_loop(soak, client, submit_until, end))
            for _ in range(args.concurrency)
        ]
        kill_task = asyncio.create_task(killer(soak, submit_until))
        await asyncio.gather(*clients)
        kill_task.cancel()
        drained = time.monotonic() - submit_until
        # the final transcripts, and the state of every run, read once more
        for run_id, run in soak.runs.items():
            view = await request(soak, client, "GET", f"/v1/runs/{run_id}")
            if view is not None:
                run.status, run.error = view["status"], view["error"]
            turns = await request(soak, client, "GET", f"/v1/runs/{run_id}/turns")
            run.final_keys = [t["key"] for t in turns] if turns is not None else []
    sampler.cancel()
    ran_s = time.monotonic() - start
    end_rss = rss_line(services)
    attempts = await asyncio.to_thread(attempts_by_run, services.env["THINKTANK_DATABASE_URL"])

    by_status = Counter(run.status for run in soak.runs.values())
    failed = Counter(reason_of(r.error) for r in soak.runs.values() if r.status == "failed")
    lost = 0
    lost_detail: list[str] = []
    duplicates = 0
    unexpected = 0
    for run_id, run in soak.runs.items():
        final = set(run.final_keys)
        duplicates += len(run.final_keys) - len(final)
        expected = set(reference[run.pattern])
        missing = run.seen_keys - final
        if run.status == "succeeded":
            missing |= expected - final
        unexpected += len(final - expected)
        if missing:
            lost += len(missing)
            lost_detail.append(f"{run_id} ({run.pattern}, {run.status}): {sorted(missing)[:5]}")
    unfinished = sum(n for status, n in by_status.items() if status not in TERMINAL)
    resumed = sum(1 for run_id in soak.runs if attempts.get(run_id, 0) > 1)
    watched = sum(run.watched for run in soak.runs.values())

    print(f"\nran {ran_s:.0f} s (faults for {args.minutes:g} min, drain {drained:.0f} s)")
    patterns = dict(Counter(r.pattern for r in soak.runs.values()))
    print(f"runs submitted      {len(soak.runs)} {patterns}")
    print(f"runs completed      {by_status.get('succeeded', 0)}")
    print(f"runs failed         {by_status.get('failed', 0)}")
    for reason, count in failed.most_common():
        print(f"    {count:5d}  {reason}")
    stuck = {s: n for s, n in by_status.items() if s not in TERMINAL}
    print(f"runs unfinished     {unfinished} {stuck}")
    print(f"turns lost          {lost}   (must be 0; {watched} runs watched while they went on)")
    for line in lost_detail[:10]:
        print(f"    {line}")
    print(f"duplicate turns     {duplicates}   (must be 0)")
    print(f"unexpected turns    {unexpected}   (keys no fault-free run makes)")
    print(f"worker kills        {soak.kills}; runs resumed on another worker {resumed}")
    print(f"HTTP errors         {sum(soak.http_errors.values())} {dict(soak.http_errors)}")
    print(f"memory at start     {soak.start_rss}")
    print(f"memory at end       {end_rss}")
    peaks = ", ".join(f"{k} {v:.0f} MiB" for k, v in soak.peak_rss.items())
    print(f"peak RSS sampled    {peaks}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average        {load}")
    return 1 if lost or duplicates or unfinished else 0


def main(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.concurrency < 1 or args.workers < 1 or args.kill_every <= 0:
        raise SystemExit("--minutes, --concurrency, --workers and --kill-every must be positive")
    if not 0 <= args.fault_rate <= 1:
        raise SystemExit("--fault-rate is a share of model calls, between 0 and 1")
    host = make_url(args.postgres).host or LOOPBACK
    if host not in (LOOPBACK, "localhost", "::1"):
        raise SystemExit(f"--postgres must be a server on this machine, not {host!r}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"thinktank soak: {args.minutes:g} min, {args.concurrency} concurrent runs, "
        f"{args.workers} workers, model fault rate {args.fault_rate:g} per call, a worker "
        f"killed every ~{args.kill_every:g} s, seed {args.seed}; {os.cpu_count()} CPUs, "
        f"load average {load} before start",
        flush=True,
    )
    broker = redis.Redis.from_url(args.broker)
    broker.flushdb()
    database_url, db_name = create_scratch_database(args.postgres, "thinktank_soak")
    services: Services | None = None
    with tempfile.TemporaryDirectory(prefix="thinktank-soak-") as tmp:
        home = Path(tmp)
        try:
            reference = asyncio.run(reference_keys(home))
            services = Services(args, database_url, home)
            services.start_api()
            for _ in range(args.workers):
                services.start_worker()
            soak = Soak(args, services, random.Random(args.seed))
            soak.start_rss = rss_line(services)
            print(f"memory at start: {soak.start_rss}", flush=True)
            status = asyncio.run(soak_main(args, soak, reference))
            if soak.kill_log:
                print("kills: " + "; ".join(soak.kill_log))
            return status
        finally:
            if services is not None:
                services.stop()
            broker.flushdb()
            drop_scratch_database(args.postgres, db_name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long faults are injected")
    parser.add_argument("--concurrency", type=int, default=32, help="runs going at once")
    parser.add_argument(
        "--fault-rate", type=float, default=0.01, help="share of model calls that fail"
    )
    parser.add_argument(
        "--kill-every", type=float, default=30, help="mean seconds between worker kills"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds patterns, kills and faults")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--drain-s", type=float, default=120, help="time for runs to end after")
    parser.add_argument(
        "--watch-share", type=float, default=0.5, help="share of runs whose turns are read live"
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the local PostgreSQL (a scratch database is made and dropped)",
    )
    parser.add_argument(
        "--broker", default="redis://127.0.0.1:6379/11", help="a Redis database of its own"
    )
    sys.exit(main(parser.parse_args()))
