"""RLAD: an abstraction player proposes hints, a solution player solves with each one.

An *abstraction* is a short piece of knowledge that helps solve a problem without solving it:
a procedure, a fact that applies, or a caution about a common mistake. The abstraction player
is sampled K times, independently, on one single-abstraction prompt (as the paper samples
z ~ pi_abs(z|x)), so each abstraction is exactly what one sampled reply says
(:func:`parse_abstraction`) and can be trained on that reply; a leak filter
(:func:`check_leak`) drops any that give the answer away; the solution player then solves M
times with each surviving abstraction (and, as the baseline, M times with none).

Rewards follow the paper (RLAD, arXiv 2510.02263, Eq. 2): a solution's reward is 1 when its
final answer is correct, an abstraction's reward is the mean reward of its solutions. The
improvement over the no-abstraction baseline is kept beside it, because the warm-start filter
and the reviewers' variant of the reward both need it. Pure functions and data: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from string import Template
from typing import ClassVar

from pydantic import BaseModel, Field

from roles.answers import last_boxed, normalize_answer, shared_text
from roles.checking import answers_match
from roles.messages import ChatMessage, system_user
from roles.outcomes import Outcome
from roles.parsing import Parsed

# --- prompts -----------------------------------------------------------------------------

ABSTRACTION_SYSTEM = """You write abstractions for reasoning problems. An abstraction is a short \
piece of knowledge that helps someone solve a problem without solving it for them: a procedure \
to follow, a fact or theorem that applies, or a caution about a common mistake. An abstraction \
never states the final answer."""

ABSTRACTION_INSTRUCTION = Template(
    """Problem: ${problem}

Write one abstraction for this problem, one to three sentences. Do not solve the problem and
do not give its answer. Write the abstraction inside these tags and write nothing else:
<abstraction>...</abstraction>"""
)

SOLUTION_SYSTEM = "You are a careful problem solver."

SOLUTION_WITH_ABSTRACTION = Template(
    """Problem: ${problem}

Here is an abstraction, knowledge that may help you solve the problem:
<abstraction>${abstraction}</abstraction>

Use it where it helps. Solve the problem step by step, then give the final answer as
\\boxed{answer}."""
)

SOLUTION_WITHOUT_ABSTRACTION = Template(
    """Problem: ${problem}

Solve the problem step by step, then give the final answer as \\boxed{answer}."""
)

VERIFIER_SYSTEM = Template("You are a careful verifier of solutions to this problem: ${problem}")

VERIFIER_INSTRUCTION = Template(
    """Solvers reached different final answers. Each candidate below is one answer, with one
solution that reached it and how many of the ${total} solutions agree with it.

${candidates}

Check the candidates' reasoning and pick the candidate whose answer is correct. Answer exactly
in this format:
### Reasoning: <a few sentences>
### Choice: <the number of the correct candidate>"""
)

VERIFIER_CANDIDATE = Template(
    """### Candidate ${number}: \\boxed{${answer}} (${votes} of ${total} solutions)
${solution}"""
)


def abstraction_messages(problem: str) -> list[ChatMessage]:
    """The abstraction player's prompt, the same for each of its K samples."""
    return system_user(ABSTRACTION_SYSTEM, ABSTRACTION_INSTRUCTION.substitute(problem=problem))


def solution_messages(problem: str, abstraction: str | None) -> list[ChatMessage]:
    """The solution player's prompt; ``None`` is the baseline's bare problem."""
    if abstraction is None:
        user = SOLUTION_WITHOUT_ABSTRACTION.substitute(problem=problem)
    else:
        user = SOLUTION_WITH_ABSTRACTION.substitute(problem=problem, abstraction=abstraction)
    return system_user(SOLUTION_SYSTEM, user)


class Candidate(BaseModel):
    """One distinct final answer put before the verifier."""

    answer: str
    votes: int
    solution: str


def verifier_messages(
    problem: str, candidates: Sequence[Candidate], total: int
) -> list[ChatMessage]:
    rendered = "\n\n".join(
        VERIFIER_CANDIDATE.substitute(
            number=number, answer=c.answer, votes=c.votes, total=total, solution=c.solution
        )
        for number, c in enumerate(candidates, start=1)
    )
    return system_user(
        VERIFIER_SYSTEM.substitute(problem=problem),
        VERIFIER_INSTRUCTION.substitute(total=total, candidates=rendered),
    )


# --- parsers -----------------------------------------------------------------------------


class ParsedAbstraction(Parsed):
    abstraction: str | None = Field(None, description="null when the reply holds none")


_TAGGED = re.compile(
    r"<abstraction>(.*?)(?:</abstraction>|(?=<abstraction>)|\Z)", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"</?abstraction>", re.IGNORECASE)


def parse_abstraction(text: str) -> ParsedAbstraction:
    """The one abstraction of a sampled reply.

    Reads the first non-empty ``<abstraction>`` block; with no tags (small models rarely keep
    a format) the whole visible reply is the abstraction. Extra blocks, no tags, or nothing at
    all are parse failures with the reason, never an exception; the abstraction is null only
    when the reply says nothing.
    """
    visible = shared_text(text)
    blocks = [b for b in (_TAG.sub("", item).strip() for item in _TAGGED.findall(visible)) if b]
    if blocks:
        extra = len(blocks) - 1
        return ParsedAbstraction(
            abstraction=blocks[0],
            parse_ok=not extra,
            parse_error=f"{extra + 1} abstractions in one reply; kept the first" if extra else None,
        )
    whole = _TAG.sub("", visible).strip()
    if not whole:
        return ParsedAbstraction(parse_ok=False, parse_error="no abstraction in the reply")
    return ParsedAbstraction(
        abstraction=whole, parse_ok=False, parse_error="no <abstraction> tags; read the whole reply"
    )


class VerifierChoice(Parsed):
    choice: int | None = Field(None, description="1-based number of the chosen candidate")


def parse_verifier_choice(text: str, count: int) -> VerifierChoice:
    """The candidate number after ``Choice``; anything else is a parse failure (no choice)."""
    match = re.search(r"choice\s*:?\s*\**\s*(?:candidate\s*)?#?(\d+)", text, re.IGNORECASE)
    if match is None:
        return VerifierChoice(parse_ok=False, parse_error="no choice")
    choice = int(match.group(1))
    if not 1 <= choice <= count:
        return VerifierChoice(
            parse_ok=False, parse_error=f"choice {choice} is not a candidate (1 to {count})"
        )
    return VerifierChoice(choice=choice)


# --- the leak filter ---------------------------------------------------------------------


class LeakCheck(BaseModel):
    leaked: bool
    reason: str | None = None


# Only what reads as an answer counts ("the answer is 42", "answer: x = 3"), not prose about
# answers ("the answer is unique", "check your answer: it must be positive").
_STATED_ANSWER = re.compile(
    r"(?i:\b(?:final answer|the answer|answer)\s*(?:is|=|:))\s*\$?\s*"
    r"(?P<value>-?\d[^\n]*|\\[^\n]+|\([^\n]*|[A-E]\b[^\n]*|[a-zA-Z]\s*=\s*[^\n]+)"
)
_NUMBER = re.compile(
    r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?!\w)|\\d?frac\{[^{}]+\}\{[^{}]+\}|\d+/\d+"
)
_NUMERIC_REFERENCE = re.compile(r"-?\d+(?:\.\d+)?|-?\d+/\d+|-?\\frac\{-?\d+\}\{\d+\}")


def stated_answer(text: str) -> str | None:
    """The final answer an abstraction states outright, if it does (``\\boxed{}`` included)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return f"\\boxed{{{boxed}}}"
    match = _STATED_ANSWER.search(text)
    return match.group(0).strip() if match else None


def contains_reference(text: str, reference: str) -> bool:
    """Whether ``text`` states ``reference`` somewhere.

    A numeric reference must appear as a number of its own and equal value (``42`` is in
    "gives 42." and "42.0", not in "420"), judged by the same check as solutions. Other
    references are looked for in the normalized text; a one-character one (a choice "B") only
    as a standalone token, since as a letter it is in almost every sentence.
    """
    wanted = normalize_answer(reference)
    if not wanted:
        return False
    if _NUMERIC_REFERENCE.fullmatch(wanted):
        return any(answers_match(number, reference).correct for number in _NUMBER.findall(text))
    if len(wanted) == 1:
        token = re.escape(reference.strip().strip("$").strip())
        return re.search(rf"(?<![A-Za-z0-9]){token}(?![A-Za-z0-9])", text) is not None
    return wanted in normalize_answer(text)


def check_leak(abstraction: str, reference_answer: str | None) -> LeakCheck:
    """Drop an abstraction that gives the answer away, saying why.

    It leaks when it contains the reference answer (when known) or when it states a final
    answer at all: an abstraction is never the answer, and one that states a wrong one would
    steer every solution that reads it.
    """
    if reference_answer is not None and contains_reference(abstraction, reference_answer):
        return LeakCheck(leaked=True, reason=f"contains the reference answer {reference_answer!r}")
    stated = stated_answer(abstraction)
    if stated is not None:
        return LeakCheck(leaked=True, reason=f"states a final answer: {stated[:80]!r}")
    return LeakCheck(leaked=False)


# --- rewards -----------------------------------------------------------------------------


def solution_reward(answer: str | None, reference: str) -> tuple[float, str]:
    """The paper's solution reward, 1.0 for a correct final answer else 0.0, and why."""
    check = answers_match(answer, reference)
    return (1.0 if check.correct else 0.0), check.reason


def abstraction_reward(solution_rewards: Sequence[float]) -> float | None:
    """The paper's abstraction reward (Eq. 2): the mean reward of its solutions."""
    if not solution_rewards:
        return None
    return sum(solution_rewards) / len(solution_rewards)


def improvement(reward: float | None, baseline_reward: float | None) -> float | None:
    """How much an abstraction raised the solve rate over solving with none."""
    if reward is None or baseline_reward is None:
        return None
    return reward - baseline_reward


# --- the budget split --------------------------------------------------------------------

SOLUTIONS_PER_ABSTRACTION_TARGET = 4
"""Solutions each abstraction gets before the budget buys more abstractions. Below about four
an abstraction's reward is too coarse (0, 1/3, 2/3, 1) to tell abstractions apart and its
solutions too few to vote; past it, the paper finds new abstractions worth more than more
samples of the same one."""


class SolutionPlan(BaseModel):
    """How many abstractions and how many solutions each: given, or split from a total."""

    abstractions: int = Field(ge=1)
    solutions_per_abstraction: int = Field(ge=1)
    total_solutions: int | None = Field(None, description="the budget that was split, if any")
    unused: int = Field(0, ge=0, description="solutions of the budget the grid leaves out")
    rule: str


def split_budget(
    total: int,
    *,
    max_abstractions: int,
    per_abstraction: int = SOLUTIONS_PER_ABSTRACTION_TARGET,
) -> SolutionPlan:
    """Split ``total`` solutions into K abstractions x M solutions each (K * M <= total).

    Small budgets go to one abstraction; once each abstraction has ``per_abstraction``
    solutions, more budget buys more abstractions (RLAD's finding at large budgets), and only
    past ``max_abstractions`` does M grow again.
    """
    if total < 1:
        raise ValueError("total must be at least 1")
    k = min(max_abstractions, math.ceil(total / per_abstraction))
    m = total // k
    return SolutionPlan(
        abstractions=k,
        solutions_per_abstraction=m,
        total_solutions=total,
        unused=total - k * m,
        rule=f"at most {per_abstraction} solutions per abstraction until {max_abstractions} "
        "abstractions, then more solutions each",
    )


# --- the stored record -------------------------------------------------------------------


class RladSolution(BaseModel):
    """One solution of a branch; its text is the run's turn with the same key."""

    key: str = Field(description="the turn's key, e.g. solve/2/0 or baseline/1")
    sample: int
    answer: str | None
    correct: bool | None = Field(None, description="null when the reference is unknown")
    reward: float | None = Field(None, description="1.0 or 0.0; null without a reference")
    check: str | None = Field(None, description="why the answer was judged so")
    completion_tokens: int = 0
    finish_reason: str | None = None
    model: str
    adapter: str | None = None


class RladAbstraction(Outcome):
    """One abstraction of a run with its solutions and rewards: data for both players.

    An abstraction's key, ``abstraction/<index>``, is also the key of the abstraction
    player's turn that sampled it, so the export trains on exactly that turn's prompt and
    tokens. The no-abstraction baseline branch is a record too (key ``baseline``,
    ``abstraction`` null), so the solution player's bare prompts and the base success rate are
    in the same table.
    """

    kind: ClassVar[str] = "rlad_abstraction"

    key: str = Field(
        description="abstraction/<index>, the key of the turn that sampled it; or baseline"
    )
    problem: str
    abstraction_index: int | None = Field(
        description="which of the abstraction player's K samples wrote it"
    )
    abstraction: str | None = Field(description="null for the no-abstraction baseline")
    generator_model: str | None = Field(None, description="model that wrote the abstraction")
    generator_adapter: str | None = None
    leaked: bool = False
    leak_reason: str | None = None
    solutions: list[RladSolution] = Field(default_factory=list)
    reference_answer: str | None = None
    reward: float | None = Field(None, description="mean reward of the solutions (paper Eq. 2)")
    baseline_reward: float | None = Field(None, description="mean reward without abstraction")
    improvement: float | None = Field(None, description="reward - baseline_reward")
