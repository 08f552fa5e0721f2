"""Training jobs on this machine: a process (or torchrun) started here, and its signals."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from store import model_versions
from store.tables.training import TrainingRun
from training.jobs.common import EXIT_INTERRUPTED, LaunchOptions, settle

log = logging.getLogger(__name__)

PARENT_ENV = "THINKTANK_JOB_PARENT"
"""Set by a launcher the job must not outlive: its pid (see :func:`die_with_parent`)."""
PR_SET_PDEATHSIG = 1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has exited; only its parent has not looked
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def signal_local(run: TrainingRun) -> bool:
    """Ask the run's process on this machine to checkpoint and stop (SIGTERM); whether
    there was one to ask."""
    if run.pid is None or run.host != socket.gethostname() or not pid_alive(run.pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(run.pid, signal.SIGTERM)
    return True


def job_command(run_id: str, options: LaunchOptions, python: str = sys.executable) -> list[str]:
    entry = ["-m", "training.jobs", "run", run_id]
    if options.nproc_per_node > 1 or options.launcher == "torchrun":
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={options.nproc_per_node}",
            *entry,
        ]
    return [python, *entry]


def log_path(run_id: str) -> Path:
    return model_versions.training_dir(run_id) / "train.log"


async def launch(
    store: Any,
    run: TrainingRun,
    *,
    database_url: str,
    options: LaunchOptions | None = None,
    detach: bool = False,
    tied: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the job for ``run``. Attached, it shares this terminal (its progress line shows,
    Ctrl-C reaches it); detached, it runs in a session of its own with its output in
    ``train.log`` of its work dir, and outlives the caller unless ``tied``: a tied job gets
    SIGTERM (checkpoint and stop) when this process ends, however it ends. Only a single
    process can be tied; torchrun's workers are not this process's children."""
    options = options or LaunchOptions()
    child_env = {**os.environ, **(env or {}), "THINKTANK_DATABASE_URL": database_url}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.pop(PARENT_ENV, None)
    command = job_command(run.id, options)
    if tied and command[1:3] == ["-m", "training.jobs"]:
        child_env[PARENT_ENV] = str(os.getpid())
    work = model_versions.training_dir(run.id)
    work.mkdir(parents=True, exist_ok=True)
    output: Any = None
    if detach:
        output = log_path(run.id).open("ab")
    try:
        process = subprocess.Popen(
            command,
            env=child_env,
            stdout=output,
            stderr=subprocess.STDOUT if detach else None,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    finally:
        if output is not None:
            output.close()
    await model_versions.record_launch(
        store, run.id, pid=process.pid, host=socket.gethostname(), launcher=options.launcher
    )
    return process


def die_with_parent() -> None:
    """In a job launched ``tied``: have Linux send SIGTERM when the launcher dies, and stop
    at once if it already has. Elsewhere (not Linux, not tied) nothing happens."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot tie this training to its launcher: errno %d", ctypes.get_errno())
        return
    if os.getppid() != int(parent):  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


TiedJob = tuple[subprocess.Popen[bytes], str]
"""A tied job's process and the id of its training run."""


async def stop_tied(store: Any, tied: list[TiedJob], *, grace_s: float) -> None:
    """Ask tied jobs to checkpoint and stop (SIGTERM), wait up to ``grace_s`` for them, kill
    those still running, and record as interrupted (resumable) any run whose job ended
    without recording it: one still loading its model, or killed."""
    live = [(process, run_id) for process, run_id in tied if process.poll() is None]
    for process, _ in live:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process, run_id in live:
        try:
            await asyncio.to_thread(process.wait, max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("training process %d did not stop in %gs; killing it", process.pid, grace_s)
            process.kill()
            await asyncio.to_thread(process.wait)
        with contextlib.suppress(Exception):  # a store gone away: refresh_status settles it
            await settle(
                store,
                run_id,
                EXIT_INTERRUPTED,
                error="stopped with the server that launched it; it resumes from its last "
                "checkpoint",
            )


def wait_attached(process: subprocess.Popen[bytes]) -> int:
    """Wait for an attached job to end. Ctrl-C reaches the job too, which checkpoints and
    stops by itself (a second Ctrl-C stops it at once), so this only keeps waiting."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue
