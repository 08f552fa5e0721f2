"""Load on the HTTP API: concurrent clients submitting runs and following their events.

Starts the real API (uvicorn in its own process, so client and server do not share an
interpreter lock) on 127.0.0.1 and a free port, with a scripted model that takes a fixed
latency per call, on a fresh SQLite file or a fresh database on the local PostgreSQL. Prints:
  1. throughput: N clients, each submitting runs one after another and reading each run's
     server-sent events until ``run_finished``: completed runs per second, p50 / p99 of the
     time to the first event and to ``run_finished`` (both from sending the POST), and the CPU
     the server, this client and the whole machine used meanwhile;
  2. API overhead per request: mean (p50, p99) latency of POST /v1/runs and of
     GET /v1/runs/{id}, at idle (one request at a time; each POSTed 'single' run finishes
     before the next POST) and under the same load as 1 (the load clients' own POSTs; GETs
     of the newest run from one more client), up to --samples each or --probe-seconds;
  3. errors: non-2xx answers, broken or stuck streams, runs that did not succeed (must be 0;
     the exit status is 1 otherwise).

Run: python benchmarks/api_load.py [--clients 16] [--runs-per-client 4] [--latency-ms 50]
         [--pattern single|discussion] [--database sqlite|postgres] [--samples 200]
         [--probe-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from scratch_db import create_scratch_database, drop_scratch_database
from sqlalchemy.engine import make_url

from agents.backends.scripted import ScriptedModelConfig

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
MAX_ERRORS = 50  # beyond this the measurement means nothing: stop

CEO = "### Decision: <Continue>\n### Recruit Number: 3\n### Direction: go\n### Maximum Tokens: 128"
REPLIES = {
    "ceo": [CEO],
    "recruiter": ["1. A.\n2. B.\n3. C."],
    "solver": ["2 + 3 = 5 so \\boxed{5}"],
    "critic": ["Same. [Agree]"],
    "evaluator": ["### Correctness: 1\n### Advice: none"],
}
PROBLEM = "What is 2 + 3?"
CONFIGS: dict[str, dict[str, Any]] = {
    "single": {},
    "discussion": {"agents": 3, "max_rounds": 2, "max_inner_turns": 1},
}


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (q in [0, 1])."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    mean = sum(values) / len(values)
    return (
        f"mean {ms(mean)} (p50 {ms(percentile(values, 0.5))}, "
        f"p99 {ms(percentile(values, 0.99))}; {len(values)} samples)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, all processes, from /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz


# --- the database -------------------------------------------------------------------------


def check_loopback(admin_url: str) -> None:
    host = make_url(admin_url).host or LOOPBACK
    if host not in (LOOPBACK, "localhost", "::1"):
        raise SystemExit(f"--postgres must be a server on this machine, not {host!r}")


# --- the server process -------------------------------------------------------------------


class ServerProcess:
    """``uvicorn --factory services.api.app:create_app`` in a child process; settings come
    from THINKTANK_* variables (none inherited from this shell), access log off."""

    def __init__(self, database_url: str, latency_s: float, max_runs: int, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = home / "server.log"
        model = ScriptedModelConfig(replies=REPLIES, latency_s=latency_s)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("THINKTANK_")}
        self.env.update(
            THINKTANK_DATABASE_URL=database_url,
            THINKTANK_MODELS__DEFAULT=model.model_dump_json(),
            THINKTANK_MAX_CONCURRENT_RUNS=str(max_runs),
            THINKTANK_AUTH="off",
            THINKTANK_HOME=str(home),
            THINKTANK_CONFIG=str(home / "absent.toml"),  # no thinktank.toml from the cwd
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.api.app:create_app",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=2, trust_env=False) as client:
            while True:
                if not self.alive():
                    raise RuntimeError(f"the API server exited:\n{self.log_tail()}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API server did not start:\n{self.log_tail()}")
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float | None:
        return process_cpu_s(self.proc.pid) if self.proc else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


# --- clients ------------------------------------------------------------------------------


class Abort(Exception):
    """Stop measuring: interrupted, the server is gone, or too many errors."""


@dataclass
class Bench:
    """What every client shares: where the server is, the errors, and whether to stop.

    Clients call ``check()`` at every step, so a stop request ends them even where a
    cancellation would be lost (anyio can swallow one while a connection attempt fails)."""

    server: ServerProcess
    run_timeout_s: float
    errors: list[str] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def check(self) -> None:
        if self.stop_reason is None and not self.server.alive():
            self.stop(f"the API server exited:\n{self.server.log_tail()}")
        if self.stop_reason is None and len(self.errors) > MAX_ERRORS:
            self.stop(f"more than {MAX_ERRORS} errors")
        if self.stop_reason is not None:
            raise Abort(self.stop_reason)

    def error(self, what: str) -> None:
        self.errors.append(what)
        self.check()


@dataclass
class RunTiming:
    first_event_s: float
    finished_s: float
    events: int


@dataclass
class Load:
    """What load clients record besides run timings."""

    posts: list[float] = field(default_factory=list)  # POST /v1/runs latencies
    run_ids: list[str] = field(default_factory=list)  # runs submitted, newest last


def new_client(bench: Bench) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=bench.url, timeout=30, trust_env=False)


async def submit(bench: Bench, client: httpx.AsyncClient, pattern: str) -> tuple[str | None, float]:
    """POST a run; its id (None on an error) and how long the POST took."""
    body = {"pattern": pattern, "problem": PROBLEM, "config": CONFIGS[pattern]}
    started = time.perf_counter()
    response = await client.post("/v1/runs", json=body)
    took = time.perf_counter() - started
    if response.status_code != 202:
        bench.error(f"POST /v1/runs: {response.status_code} {response.text[:200]}")
        return None, took
    return response.json()["id"], took


async def follow(
    bench: Bench, client: httpx.AsyncClient, run_id: str, started: float
) -> RunTiming | None:
    """Read the run's SSE stream until ``run_finished``; times are from ``started``."""
    first = None
    events = 0
    event_type = None
    data: list[str] = []
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        if response.status_code != 200:
            bench.error(f"GET /v1/runs/{run_id}/events: {response.status_code}")
            return None
        async for line in response.aiter_lines():
            bench.check()
            if line.startswith(":"):  # a comment: sse-starlette's keep-alive ping
                continue
            if line:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event_type = value
                elif name == "data":
                    data.append(value)
                continue
            if event_type is None and not data:
                continue
            now = time.perf_counter()  # a blank line dispatches the event
            first = first if first is not None else now
            events += 1
            if event_type == "run_finished":
                outcome = json.loads("\n".join(data))
                if outcome.get("status") != "succeeded":
                    bench.error(f"run {run_id} ended {outcome.get('status')}: {outcome}")
                    return None
                return RunTiming(first - started, now - started, events)
            event_type, data = None, []
    bench.error(f"events of {run_id}: the stream ended without run_finished ({events} events)")
    return None


async def one_run(
    bench: Bench, client: httpx.AsyncClient, pattern: str, load: Load
) -> RunTiming | None:
    """Submit a run and follow it to its end (None on an error, which is recorded)."""
    bench.check()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(bench.run_timeout_s):
            run_id, took = await submit(bench, client, pattern)
            if run_id is None:
                return None
            load.posts.append(took)
            load.run_ids.append(run_id)
            return await follow(bench, client, run_id, started)
    except TimeoutError:
        bench.error(f"a {pattern} run did not finish within {bench.run_timeout_s:g} s")
    except httpx.HTTPError as exc:
        bench.error(f"{type(exc).__name__}: {exc}")
    return None


async def load_client(
    bench: Bench,
    pattern: str,
    timings: list[RunTiming] | None = None,
    load: Load | None = None,
    *,
    runs: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs one after another: ``runs`` of them, or until ``stop`` is set."""
    load = load if load is not None else Load()
    async with new_client(bench) as client:
        done = 0
        while (runs is None or done < runs) and not (stop and stop.is_set()):
            timing = await one_run(bench, client, pattern, load)
            if timing and timings is not None:
                timings.append(timing)
            done += 1


async def probe_gets(bench: Bench, run_ids: list[str], samples: int, seconds: float) -> list[float]:
    """GET /v1/runs/{id} one at a time (of the newest run in ``run_ids``), up to ``samples``
    of them or ``seconds``."""
    gets: list[float] = []
    deadline = time.perf_counter() + seconds
    async with new_client(bench) as client:
        while len(gets) < samples and time.perf_counter() < deadline:
            bench.check()
            run_id = run_ids[-1]
            started = time.perf_counter()
            try:
                response = await client.get(f"/v1/runs/{run_id}")
            except httpx.HTTPError as exc:
                bench.error(f"GET /v1/runs/{run_id}: {type(exc).__name__}: {exc}")
                continue
            gets.append(time.perf_counter() - started)
            if response.status_code != 200:
                bench.error(f"GET /v1/runs/{run_id}: {response.status_code}")
    return gets


# --- the benchmark ------------------------------------------------------------------------


async def throughput(bench: Bench, args: argparse.Namespace) -> None:
    total = args.clients * args.runs_per_client
    print(f"1. throughput: {args.clients} clients x {args.runs_per_client} runs, one at a time")
    timings: list[RunTiming] = []
    server = bench.server
    cpu_server, cpu_client, cpu_machine = server.cpu_s(), time.process_time(), machine_cpu_s()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(args.clients):
            group.create_task(load_client(bench, args.pattern, timings, runs=args.runs_per_client))
    wall = time.perf_counter() - started
    cpu_client = time.process_time() - cpu_client
    end_server, end_machine = server.cpu_s(), machine_cpu_s()

    print(
        f"   completed runs/s      {len(timings) / wall:8.1f}    "
        f"({len(timings)}/{total} in {wall:.2f} s)"
    )
    first = [t.first_event_s for t in timings]
    finished = [t.finished_s for t in timings]
    for label, values in (("first event", first), ("run_finished", finished)):
        print(
            f"   time to {label:<13} p50 {ms(percentile(values, 0.5))}   "
            f"p99 {ms(percentile(values, 0.99))}"
        )
    if timings:
        print(f"   events per run        {sum(t.events for t in timings) / len(timings):8.1f}")
    if cpu_server is not None and end_server is not None:
        print(
            f"   CPU meanwhile         server {(end_server - cpu_server) / wall:.2f} cores, "
            f"this client {cpu_client / wall:.2f} cores"
        )
    if cpu_machine is not None and end_machine is not None:
        busy = end_machine[0] - cpu_machine[0]
        print(
            f"   machine CPU busy      {busy / wall:.2f} of {os.cpu_count()} cores "
            f"({busy / (end_machine[1] - cpu_machine[1]):.0%}; every process: the database, "
            "other users)"
        )


async def request_overhead(bench: Bench, args: argparse.Namespace, warm: Load) -> None:
    samples, seconds = args.samples, args.probe_seconds
    print(
        f"2. API overhead per request (up to {samples} samples or {seconds:g} s each; "
        f"under load: {args.clients} clients of '{args.pattern}')"
    )
    # idle: GETs of a finished run; POSTs of 'single' runs, each followed (untimed) to its
    # end before the next POST, so that no run executes while a POST is timed
    idle_gets = await probe_gets(bench, warm.run_ids, samples, seconds)
    idle = Load()
    deadline = time.perf_counter() + seconds
    async with new_client(bench) as client:
        while len(idle.posts) < samples and time.perf_counter() < deadline:
            await one_run(bench, client, "single", idle)

    # under load: the load clients' own POSTs; GETs of the newest run from one more client
    loaded = Load()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for _ in range(args.clients):
            group.create_task(load_client(bench, args.pattern, load=loaded, stop=stop))
        try:
            await asyncio.sleep(1.0)  # let the load reach a steady state
            while not loaded.run_ids:
                bench.check()
                await asyncio.sleep(0.01)
            del loaded.posts[:]
            deadline = time.perf_counter() + seconds
            loaded_gets = await probe_gets(bench, loaded.run_ids, samples, seconds)
            while len(loaded.posts) < samples and time.perf_counter() < deadline:
                bench.check()
                await asyncio.sleep(0.05)
            loaded_posts = loaded.posts[:samples]
        finally:
            stop.set()  # the load clients finish the run they are following

    print(f"   POST /v1/runs       idle   {summary(idle.posts)}")
    print(f"                       loaded {summary(loaded_posts)}")
    print(f"   GET /v1/runs/{{id}}   idle   {summary(idle_gets)}")
    print(f"                       loaded {summary(loaded_gets)}")


async def measure(bench: Bench, args: argparse.Namespace) -> None:
    # one-time costs (checkpointer setup, first imports, connection pools) out of the figures
    warm = Load()
    await load_client(bench, args.pattern, load=warm, runs=2)
    await load_client(bench, "single", load=warm, runs=1)
    await throughput(bench, args)
    await request_overhead(bench, args, warm)


def first_abort(exc: BaseException) -> Abort | None:
    """The Abort in an exception or (nested) exception group, if any."""
    if isinstance(exc, Abort):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_abort(inner)
            if found is not None:
                return found
    return None


def main(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.runs_per_client < 1 or args.samples < 1:
        raise SystemExit("--clients, --runs-per-client and --samples must be at least 1")
    if args.database == "postgres":
        check_loopback(args.postgres)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"thinktank API load: pattern {args.pattern}, scripted model {args.latency_ms:g} ms/call, "
        f"{args.database}; {os.cpu_count()} CPUs, load average {load} before start",
        flush=True,
    )
    status = 0
    pg_name = None
    bench: Bench | None = None

    def on_sigint(_signum: int, _frame: object) -> None:
        # First Ctrl-C: the clients stop at their next step and everything is cleaned up;
        # a second one raises KeyboardInterrupt at once.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if bench is None:
            raise KeyboardInterrupt
        bench.stop("interrupted")

    signal.signal(signal.SIGINT, on_sigint)
    with tempfile.TemporaryDirectory(prefix="thinktank-api-load-") as tmp:
        server = None
        try:
            if args.database == "postgres":
                database_url, pg_name = create_scratch_database(args.postgres, "thinktank_load")
            else:
                database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'load.db'}"
            max_runs = max(args.max_concurrent_runs, args.clients + 2)
            server = ServerProcess(database_url, args.latency_ms / 1000, max_runs, Path(tmp))
            server.start()
            bench = Bench(server, args.run_timeout)
            asyncio.run(measure(bench, args))
        except KeyboardInterrupt:
            print("interrupted")
            status = 130
        except BaseException as exc:
            abort = first_abort(exc)
            if abort is None:
                raise
            interrupted = bench is not None and bench.stop_reason == "interrupted"
            print(f"stopped: {abort}")
            status = 130 if interrupted else 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
            if server is not None:
                server.stop()
            if pg_name is not None:
                drop_scratch_database(args.postgres, pg_name)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    errors = bench.errors if bench is not None else []
    print(f"3. errors: {len(errors)}")
    for item in errors[:20]:
        print(f"   {item}")
    if len(errors) > 20:
        print(f"   ... and {len(errors) - 20} more")
    return status or (1 if errors else 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--runs-per-client", type=int, default=4, help="runs each client submits")
    parser.add_argument("--latency-ms", type=float, default=50, help="scripted latency per call")
    parser.add_argument("--pattern", choices=sorted(CONFIGS), default="single")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the local PostgreSQL, for --database postgres",
    )
    parser.add_argument(
        "--samples", type=int, default=200, help="POST and GET samples, idle and under load"
    )
    parser.add_argument(
        "--probe-seconds", type=float, default=20, help="time cap of each sampling phase"
    )
    parser.add_argument(
        "--max-concurrent-runs", type=int, default=64, help="the server's in-process run limit"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=30, help="seconds a run may take (else an error)"
    )
    sys.exit(main(parser.parse_args()))
