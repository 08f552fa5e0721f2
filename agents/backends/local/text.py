"""Text rules both local engines share: stop strings, and what of a partial text may stream."""

from __future__ import annotations

from collections.abc import Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string (excluded), and whether one was found."""
    positions = [index for stop in stops if stop and (index := text.find(stop)) >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


def stable_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of a partial text that can be streamed without ever being taken back.

    Holds back an incomplete UTF-8 character (decoded as U+FFFD) and any tail that could be
    the start of a stop string, since the stop string itself is never part of the text.
    """
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:length]):
                hold = length
                break
    return text[: len(text) - hold]
