"""Training jobs on this machine: a process (or torchrun) started here, and its signals."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from store import model_versions
from store.tables.training import TrainingRun
from training.jobs.common import LaunchOptions

log = logging.getLogger(__name__)


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
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the job for ``run``. Attached, it shares this terminal (its progress line shows,
    Ctrl-C reaches it); detached, it runs in a session of its own with its output in
    ``train.log`` of its work dir, and outlives the caller."""
    options = options or LaunchOptions()
    child_env = {**os.environ, **(env or {}), "THINKTANK_DATABASE_URL": database_url}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    work = model_versions.training_dir(run.id)
    work.mkdir(parents=True, exist_ok=True)
    output: Any = None
    if detach:
        output = log_path(run.id).open("ab")
    try:
        process = subprocess.Popen(
            job_command(run.id, options),
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


def wait_attached(process: subprocess.Popen[bytes]) -> int:
    """Wait for an attached job to end. Ctrl-C reaches the job too, which checkpoints and
    stops by itself (a second Ctrl-C stops it at once), so this only keeps waiting."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue
