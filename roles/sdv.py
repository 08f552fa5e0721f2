"""Solve-Detect-Verify (FlexiVe): the detector's and the verifier's prompts, schemas, parsers.

Pure functions and data. The solver writes with the baselines' prompt
(:func:`roles.baselines.solver_messages`), so sdv and self-consistency solve alike and differ
only in what happens around the solver.

- Detect: a solver's text that ends on a hesitation cue ("wait", "hmm", ...) is shown back to
  the solver model, which is asked whether the solution is already complete. The answer is
  read from the Yes/No log-probabilities of its first token when the backend returns them,
  else from its one-word reply.
- Conclude: a solver stopped early is asked to state its final answer.
- Verify: the solution is split into paragraphs, tagged ``<paragraph_i>``, and put into the
  ProcessBench critique template; a check answers with the index of the earliest wrong
  paragraph, or -1, in ``\\boxed{}``. Fast checks are told to answer at once; slow checks to
  go through the paragraphs. Their agreement decides whether slow checks are needed.
- Refine: a solution found wrong goes back to the solver with the verifier's feedback.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from string import Template
from typing import Literal

from pydantic import BaseModel, Field

from roles.answers import last_boxed
from roles.baselines import solver_messages
from roles.messages import ChatMessage
from roles.parsing import Parsed

DEFAULT_CUES: tuple[str, ...] = (
    "wait",
    "hmm",
    "alternatively",
    "double-check",
    "let me check",
    "let me double-check",
    "make sure",
    "another way",
    "let me verify",
    "to confirm",
)
"""The released FlexiVe code's hesitation keywords (R1-style; chosen empirically)."""

# --- prompts ---------------------------------------------------------------------------------

DETECT_QUESTION = (
    "Given the current solution to a math problem, check whether it is a complete solution "
    "(i.e. it contains the final answer).\n\n"
    "You should respond with only one word: `Yes` if the current solution is complete, or "
    "`No` if it is not."
)

CONCLUDE_INSTRUCTION = (
    "Stop checking now. Based on your solution so far, state the final answer as \\boxed{answer}."
)

# ProcessBench's critique template (QwenLM/ProcessBench, used verbatim by FlexiVe).
VERIFY_TEMPLATE = Template(
    """The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed from 0):

[Math Problem]

${problem}

[Solution]

${tagged_response}

Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in a paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the index of -1 (which typically denotes "not found").

Please put your final answer (i.e., the index) in \\boxed{}."""  # noqa: E501
)

# FlexiVe's fast mode closes the thinking block of an R1-style verifier so it answers at once;
# an instruction does the same for models without one. The slow mode leaves it open.
VERIFY_MODE_INSTRUCTION: dict[str, str] = {
    "fast": "Answer at once, without explanation: reply with only the index in \\boxed{}.",
    "slow": "Think it through paragraph by paragraph before you give the index.",
}

REFINE_TEMPLATE = Template(
    """Your solution has an error. Here's the feedback from verification:

${feedback}

Note: When analyzing your solution, the verifier breaks it down into paragraphs at blank lines and at hesitation words like "wait", "hmm", "let me check". Each paragraph corresponds to a step in your reasoning.

Please correct your solution and try again. Provide a complete solution with clear reasoning steps, then give the final answer as \\boxed{answer}."""  # noqa: E501
)

FIRST_WRONG_FEEDBACK = Template(
    """The earliest error is in paragraph ${index}:

${paragraph}${comments}"""
)

NO_VERDICT_FEEDBACK = "The verifier could not confirm that the solution is correct."


def detector_messages(problem: str, text_so_far: str) -> list[ChatMessage]:
    """The solver model sees its own text so far and is asked whether it is complete. The
    probe opens exactly as the solver's own prompt and text do, so an engine that reuses
    cached prefixes reads only the question anew (FlexiVe's probe is the solver continuing)."""
    return [
        *solver_messages(problem),
        ChatMessage(role="assistant", content=text_so_far),
        ChatMessage(role="user", content=DETECT_QUESTION),
    ]


def conclude_messages(problem: str, partial: str) -> list[ChatMessage]:
    """A solver stopped early is asked for its final answer."""
    return [
        *solver_messages(problem),
        ChatMessage(role="assistant", content=partial),
        ChatMessage(role="user", content=CONCLUDE_INSTRUCTION),
    ]


def tag_paragraphs(paragraphs: Sequence[str]) -> str:
    return "\n\n".join(
        f"<paragraph_{i}>\n{paragraph}\n</paragraph_{i}>" for i, paragraph in enumerate(paragraphs)
    )


def verifier_messages(
    problem: str, paragraphs: Sequence[str], mode: Literal["fast", "slow"]
) -> list[ChatMessage]:
    prompt = VERIFY_TEMPLATE.substitute(problem=problem, tagged_response=tag_paragraphs(paragraphs))
    return [ChatMessage(role="user", content=f"{prompt}\n\n{VERIFY_MODE_INSTRUCTION[mode]}")]


def refine_messages(problem: str, solution: str, feedback: str) -> list[ChatMessage]:
    """FlexiVe's refinement turn: the original solution, then the verifier's feedback."""
    return [
        *solver_messages(problem),
        ChatMessage(role="assistant", content=solution),
        ChatMessage(role="user", content=REFINE_TEMPLATE.substitute(feedback=feedback)),
    ]


def verifier_feedback(
    first_wrong: int | None, paragraphs: Sequence[str], verifier_text: str
) -> str:
    """What the solver is told: the wrong paragraph and the verifier's own comments, if any
    (its boxed index removed, as FlexiVe does)."""
    if first_wrong is None or not 0 <= first_wrong < len(paragraphs):
        return NO_VERDICT_FEEDBACK
    comments = re.sub(r"\\boxed\s*\{[^}]*\}", "", verifier_text).strip()
    return FIRST_WRONG_FEEDBACK.substitute(
        index=first_wrong,
        paragraph=paragraphs[first_wrong],
        comments=f"\n\nThe verifier's comments:\n{comments}" if comments else "",
    )


# --- hesitation cues ---------------------------------------------------------------------------


class Cue(BaseModel):
    """One hesitation cue found in a solver's text: ``text[start:end]`` is the cue."""

    cue: str
    start: int
    end: int


def cue_pattern(cues: Sequence[str]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive matcher of ``cues`` (longest first, so "let me
    double-check" wins over "double-check"); None when there are none."""
    words = sorted({cue.strip().lower() for cue in cues if cue.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in words)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def find_cues(text: str, pattern: re.Pattern[str] | None, start: int = 0) -> list[Cue]:
    """Every cue in ``text`` that begins at or after ``start``, in order.

    A cue at the very end of the text counts (the text so far "ends on" it), so a streaming
    caller sees it as soon as it is written.
    """
    if pattern is None:
        return []
    window = max(0, start - 1)  # the lookbehind needs the character before ``start``
    return [
        Cue(cue=match.group(0).lower(), start=match.start(), end=match.end())
        for match in pattern.finditer(text, window)
        if match.start() >= start
    ]


# --- detection ---------------------------------------------------------------------------------


class Detection(Parsed):
    """The detector's answer: is the solution so far complete?"""

    complete: bool = False
    p_yes: float | None = Field(
        None, description="P(Yes) over {Yes, No} from the first token's log-probabilities"
    )
    logprob_yes: float | None = None
    logprob_no: float | None = None
    answer: str = Field("", description="the word the detector wrote")
    source: Literal["logprobs", "text"] = "text"


def _first_word(text: str) -> str:
    match = re.search(r"[A-Za-z]+", text)
    return match.group(0).lower() if match else ""


def parse_detection(
    text: str, top: dict[str, float] | None = None, threshold: float = 0.5
) -> Detection:
    """Yes/No from the first token's top log-probabilities ``top`` when they name either
    (variants such as " yes" count; the best of each side is taken), else from the reply's
    first word. Complete when P(Yes) over {Yes, No} exceeds ``threshold``."""
    answer = _first_word(text)
    sides: dict[str, float] = {}
    for token, logprob in (top or {}).items():
        word = token.strip().lower()
        if word in ("yes", "no"):
            sides[word] = max(logprob, sides.get(word, -math.inf))
    if sides:
        yes, no = sides.get("yes", -math.inf), sides.get("no", -math.inf)
        p_yes = 1.0 / (1.0 + math.exp(no - yes)) if yes > -math.inf else 0.0
        return Detection(
            complete=p_yes > threshold,
            p_yes=p_yes,
            logprob_yes=yes if yes > -math.inf else None,
            logprob_no=no if no > -math.inf else None,
            answer=answer,
            source="logprobs",
        )
    if answer in ("yes", "no"):
        return Detection(complete=answer == "yes", answer=answer)
    return Detection(
        complete=False,
        answer=answer,
        parse_ok=False,
        parse_error=f"the detector answered neither Yes nor No: {text[:80]!r}",
    )


# --- paragraphs --------------------------------------------------------------------------------


def split_paragraphs(text: str, cues: Sequence[str] = DEFAULT_CUES) -> list[str]:
    """The solution's paragraphs: blocks between blank lines (single lines when there are no
    blank lines), then cut again where a hesitation cue opens a sentence, the cue starting the
    new paragraph (FlexiVe's split). A last paragraph that is a bare cue is dropped."""
    blocks = [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
    if len(blocks) == 1 and "\n" in blocks[0]:
        blocks = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    pattern = cue_pattern(cues)
    paragraphs: list[str] = []
    for block in blocks:
        cuts = [0]
        for cue in find_cues(block, pattern):
            before = block[: cue.start].rstrip()
            if cue.start > 0 and (not before or before[-1] in ".!?:\n"):
                cuts.append(cue.start)
        cuts.append(len(block))
        paragraphs += [block[a:b].strip() for a, b in itertools.pairwise(cuts)]
    paragraphs = [p for p in paragraphs if p]
    if paragraphs and pattern is not None and pattern.fullmatch(paragraphs[-1].rstrip(".,:;!?")):
        paragraphs.pop()
    return paragraphs


# --- verification ------------------------------------------------------------------------------


class Check(Parsed):
    """One verification: the index of the earliest wrong paragraph, -1 when none is."""

    first_wrong: int | None = Field(None, description="None: no usable index")


def parse_check(text: str, paragraphs: int) -> Check:
    """The last ``\\boxed{}`` as an integer (ProcessBench), or a reply that is only an integer
    (small models drop the box in fast mode). Out of range counts as no answer."""
    boxed = last_boxed(text)
    raw = boxed if boxed is not None else text.strip()
    match = re.fullmatch(r"(?:paragraph[_\s]*)?(-?\d+)\.?", raw.strip(), re.IGNORECASE)
    if match is None:
        where = "in \\boxed{}" if boxed is not None else "(no \\boxed{})"
        return Check(parse_ok=False, parse_error=f"no paragraph index {where}: {raw[:60]!r}")
    index = int(match.group(1))
    if not -1 <= index < paragraphs:
        return Check(
            parse_ok=False,
            parse_error=f"index {index} is not -1 or a paragraph (0..{paragraphs - 1})",
        )
    return Check(first_wrong=index)


class Agreement(BaseModel):
    """How far checks agree: the most common index and its share of the usable checks."""

    first_wrong: int | None = None
    votes: int = 0
    usable: int = 0
    ratio: float = 0.0


def agreement(indices: Sequence[int | None]) -> Agreement:
    """FlexiVe's agreement: count of the most common index over the checks that gave one
    (ties: the first seen); unusable checks are left out, none usable is agreement 0."""
    usable = [index for index in indices if index is not None]
    if not usable:
        return Agreement()
    index, votes = Counter(usable).most_common(1)[0]
    return Agreement(first_wrong=index, votes=votes, usable=len(usable), ratio=votes / len(usable))


def slow_check_count(fast_checks: int) -> int:
    """FlexiVe escalates to ceil(k/4) slow checks."""
    return math.ceil(fast_checks / 4)
