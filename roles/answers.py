"""Reading answers out of model text: ``\\boxed{}`` first, common fallbacks after, and votes.

Pure functions: every pattern uses them to decide what a solution's final answer is, and the
vote that self-consistency and the parallel patterns take is over normalized answers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

THINK_END = "</think>"

_FALLBACKS = (
    re.compile(r"final answer\s*(?:is|:)\s*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.IGNORECASE | re.M),
    re.compile(r"the answer is\s*:?\s*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.IGNORECASE | re.M),
    re.compile(r"answer\s*:\s*\$?([^\n$]+?)\$?\s*$", re.IGNORECASE | re.M),
)


def shared_text(text: str) -> str:
    """What other agents may see: the text after the last ``</think>``, when there is one."""
    if THINK_END in text:
        return text.rsplit(THINK_END, 1)[1].strip()
    return text.strip()


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: ``\\boxed{}`` if present, else a stated final answer."""
    visible = shared_text(text)
    boxed = last_boxed(visible)
    if boxed is not None:
        return boxed or None
    for pattern in _FALLBACKS:
        matches = pattern.findall(visible)
        if matches:
            answer = matches[-1].strip().rstrip(".").strip()
            if answer:
                return answer
    return None


def normalize_answer(answer: str) -> str:
    """A canonical form for voting: spacing, ``$``, ``\\text{}``, trailing zeros of decimals."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:left|right|,|!|;)", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s).rstrip(".").lower()
    if re.fullmatch(r"-?\d+(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.\d+", s):
        s = s.rstrip("0").rstrip(".")
    return s


def majority_answer(answers: Iterable[str | None]) -> tuple[str | None, int]:
    """The most common answer (first seen wins ties) and how many votes it got."""
    firsts: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for answer in answers:
        if answer is None:
            continue
        key = normalize_answer(answer)
        firsts.setdefault(key, answer)
        counts[key] += 1
    if not counts:
        return None, 0
    best = max(counts, key=lambda k: (counts[k], -list(firsts).index(k)))
    return firsts[best], counts[best]
