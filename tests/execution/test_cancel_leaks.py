"""A run cancelled inside this process (Ctrl-C in the CLI, an embedded server shutting down,
a campaign driver's task cancelled) lets go of the SQLite database at once: the next writer
neither waits on "database is locked" nor needs a garbage collection to get in."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from agents.backends.scripted import ScriptedBackend, Slow
from agents.model_map import ModelRouter
from execution.checkpoints import open_checkpointer
from execution.runner import execute_run, submit_run
from tests.conftest import RunHarness

PROBLEM = "What is 6 times 7?"
HINTS = "<abstraction>Seven is five and two.</abstraction>\n<abstraction>Six tens.</abstraction>"


def assert_writable(database_url: str) -> None:
    """Another writer (a second process, the CLI) gets the write lock within two seconds."""
    writer = sqlite3.connect(Path(make_url(database_url).database or ""), timeout=2)
    try:
        writer.execute("BEGIN IMMEDIATE")  # raises "database is locked" past the timeout
        writer.rollback()
    finally:
        writer.close()


async def test_a_checkpoint_write_under_way_as_the_checkpointer_closes_leaves_no_lock(
    sqlite_url: str,
) -> None:
    # As a cancelled run ends, LangGraph stores the error writes of the tasks it cut off from
    # background tasks that are still running when the run's checkpointer closes.
    for attempt in range(10):
        run = {"thread_id": f"run-{attempt}", "checkpoint_ns": "", "checkpoint_id": "1"}
        async with open_checkpointer(sqlite_url) as saver:
            late = asyncio.create_task(
                saver.aput_writes({"configurable": run}, [("answer", "42")], "task")
            )
            await asyncio.sleep(0)  # the write has reached the connection
        await late  # it finished before the connection closed
        assert_writable(sqlite_url)


async def test_a_run_cancelled_in_process_resumes_at_once_in_the_same_process(
    harness: RunHarness,
) -> None:
    # The cut-off writes race the checkpointer's close across threads; several cancelled runs
    # in a row make it near certain that one of them loses the race when the leak is there.
    for _ in range(6):
        hanging = ScriptedBackend(
            {
                "abstraction_player": [HINTS],
                "solution_player": [Slow("\\boxed{42}", 0.0)] * 2 + [Slow("never seen", 60.0)],
            }
        )
        run_id = await submit_run(
            harness.store, "rlad", PROBLEM, {"abstractions": 2, "solutions_per_abstraction": 2}
        )
        cancelled = asyncio.create_task(
            execute_run(
                run_id,
                store=harness.store,
                models=ModelRouter.single(hanging),
                database_url=harness.database_url,
                owner="worker-a",
            )
        )
        while sum(t.node == "solve" for t in await harness.store.turns(run_id)) < 2:
            await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert_writable(harness.database_url)

        finisher = ScriptedBackend({"solution_player": ["\\boxed{42}"]})
        resumed = await asyncio.wait_for(
            execute_run(
                run_id,
                store=harness.store,
                models=ModelRouter.single(finisher),
                database_url=harness.database_url,
                owner="worker-b",
            ),
            timeout=10,
        )

        assert resumed["status"] == "succeeded" and resumed["answer"] == "42"
        assert finisher.calls("abstraction_player") == []
        assert len(finisher.calls("solution_player")) == 2
