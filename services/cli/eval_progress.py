"""What ``thinktank eval`` and ``eval-critic`` show while they run: a progress bar on stderr.

On a terminal the bar is redrawn in place; elsewhere (a log file, CI, a pipe) it prints a plain
line every twentieth of the way, so a long evaluation still shows that it moves without
flooding the log.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from training.evaluation import Progress

BAR_WIDTH = 24


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.first_ended: int | None = None
        self.shown_step = -1
        self.width = 0

    def __call__(self, progress: Progress) -> None:
        if self.first_ended is None:
            self.first_ended = progress.ended
        line = self.render(progress)
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = max(self.width, len(line))
        else:
            step = progress.ended * 20 // max(progress.total, 1)
            if step == self.shown_step and progress.ended < progress.total:
                return
            self.shown_step = step
            self.stream.write(line + "\n")
        self.stream.flush()

    def render(self, progress: Progress) -> str:
        total = max(progress.total, 1)
        filled = BAR_WIDTH * progress.ended // total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        parts = [
            f"{progress.name} [{bar}] {progress.ended}/{progress.total}",
            f"{progress.correct} correct",
        ]
        if progress.failed:
            parts.append(f"{progress.failed} failed")
        if progress.resumed:
            parts.append(f"{progress.resumed} done before")
        eta = self._eta(progress)
        if eta is not None:
            parts.append(f"eta {eta}")
        return " · ".join(parts)

    def _eta(self, progress: Progress) -> str | None:
        ran = progress.ended - (self.first_ended or 0)
        left = progress.total - progress.ended
        if ran <= 0 or left <= 0:
            return None
        seconds = (time.monotonic() - self.started) / ran * left
        minutes, seconds = divmod(int(seconds), 60)
        return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
