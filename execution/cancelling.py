"""Ending asyncio tasks that a component started and owns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Future]) -> None:
    """Cancel every task, then wait for each to end, whatever it raises on the way out:
    a component closing must not leave tasks that still write after it is gone."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(BaseException):
            await task
