"""Cold start: time from the start of a run's execution to its first model request.

Each sample is a fresh process, as ``thinktank solve`` is: it opens the store (not timed, as
``solve`` opens it before the run starts), submits a discussion, and times ``execute_run``
from its call until a canned OpenAI-compatible server on loopback receives the first chat
request. Nothing is warm: no graph compiled, no checkpointer connection, no HTTP client.
Prints min and median per database with the load average beside them (target <= 25 ms).

Run from the repository root::

    python benchmarks/first_call.py [--samples 7]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPLY = {
    "id": "canned",
    "object": "chat.completion",
    "created": 0,
    "model": "canned",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The answer is \\boxed{4}."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def canned_server(first_request: list[float]) -> ThreadingHTTPServer:
    """Answers every chat request at once; notes when the first one arrived."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if not first_request:
                first_request.append(time.perf_counter())
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.dumps(REPLY).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def child(database_url: str) -> None:
    """One cold sample; prints the milliseconds from execute_run to the first request."""
    from agents.backends.openai_compat import OpenAIModelConfig
    from agents.model_map import ModelMap, ModelRouter
    from execution.runner import execute_run, submit_run
    from store.db import create_engine, migrate
    from store.runs import Store

    first_request: list[float] = []
    server = canned_server(first_request)
    spec = OpenAIModelConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="canned")
    models = ModelRouter(ModelMap(default=spec))
    # as ``thinktank solve`` does: the clients are built while the store opens
    warming = asyncio.ensure_future(asyncio.to_thread(models.warm))
    engine = create_engine(database_url)
    await migrate(engine)
    store = Store(engine)
    await warming
    run_id = await submit_run(store, "discussion", "What is 2+2?", {"max_rounds": 1})
    started = time.perf_counter()
    await execute_run(
        run_id, store=store, models=models, database_url=database_url, stream_tokens=False
    )
    print(json.dumps({"ms": (first_request[0] - started) * 1000}))
    await models.close()
    await store.close()
    await engine.dispose()
    server.shutdown()


def main(args: argparse.Namespace) -> None:
    from scratch_db import create_scratch_database, drop_scratch_database

    tmp = Path(tempfile.mkdtemp(prefix="thinktank-first-call-"))
    databases = {"sqlite": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    pg_name = None
    if args.postgres:
        databases["postgresql"], pg_name = create_scratch_database(args.postgres, "tt_first")
    try:
        for label, url in databases.items():
            samples = []
            for _ in range(args.samples):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", url],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                samples.append(json.loads(done.stdout.strip().splitlines()[-1])["ms"])
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(
                f"{label:<10} execution start -> first model request: min {min(samples):6.1f} ms, "
                f"median {statistics.median(samples):6.1f} ms over {args.samples} cold "
                f"processes (load average {load})"
            )
    finally:
        if pg_name:
            drop_scratch_database(args.postgres, pg_name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=7, help="cold processes per database")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="admin URL of a PostgreSQL server to measure on ('' to skip)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        asyncio.run(child(arguments.child))
    else:
        main(arguments)
