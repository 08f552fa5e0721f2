"""SPC (Self-Play Critic): a sneaky generator, a step critic, and the game between them.

The critic judges one step given the problem and the steps before it, and ends with
``<Answer>Correct</Answer>`` or ``<Answer>Incorrect</Answer>`` (the released evaluation's
format). The sneaky generator turns a correct step into a subtly wrong one and names the kind
of error it planted. A solver writes solutions step by step (for the game, and one step at a
time for the critic-guided search) and completes partial solutions (the game's validity
roll-outs).

Everything here is pure: prompts are templates, parsers never raise, and the game's rules
(is a rewrite a real error, who wins, what each side earns) are functions of their inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from string import Template
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from roles.answers import extract_answer, shared_text
from roles.checking import answers_match
from roles.messages import ChatMessage, system_user
from roles.outcomes import Outcome
from roles.parsing import Parsed

EMPTY_PREFIX = "Let's solve this problem."
"""What the critic and the sneaky generator see as the partial solution before step 1."""

NO_STEPS = "(no steps yet)"
STEP_SEPARATOR = "\n\n"
"""Steps are paragraphs: the search's solver stops at a blank line."""

ERROR_TYPES: tuple[str, ...] = (
    "Misreading the problem: using a wrong number, condition or goal from the problem",
    "Calculation error: an arithmetic or algebraic slip",
    "Logical error: a conclusion that does not follow from the steps before it",
    "Wrong formula or fact: misusing a theorem, formula or definition",
    "Missing case or condition: ignoring a constraint, a case or a domain restriction",
)
"""The sneaky generator's five predefined error types. The paper names five but the list is in
no source we could read; its figure shows "Error Type 2: calculation error", so that one is 2."""

Verdict = Literal["correct", "incorrect"]
JudgedAs = Literal["correct", "incorrect", "unparsed"]
"""A critic's verdict as recorded: an unreadable one is its own outcome, never a guess."""

GameResult = Literal["critic_detected", "critic_fooled", "critic_unparsed", "invalid_rewrite"]

# --- prompts -----------------------------------------------------------------------------

SOLVER_SYSTEM = "You are a careful problem solver."

SOLUTION_INSTRUCTION = Template(
    """Solve the following problem step by step. Write each step as one short paragraph, with a
blank line between steps, and end with the final answer as \\boxed{answer}.

Problem: ${problem}"""
)

NEXT_STEP_INSTRUCTION = Template(
    """Solve the following problem one step at a time.

Problem: ${problem}

Steps so far:
${steps}

Write only the next step, as one short paragraph that does one calculation or deduction (no
plan, no introduction). If it completes the solution, end it with the final answer as
\\boxed{answer}."""
)

CONTINUE_INSTRUCTION = Template(
    """Here is a problem and the beginning of a solution. Continue the solution from where it
stops, step by step, without repeating or changing the steps given, and end with the final
answer as \\boxed{answer}.

Problem: ${problem}

Beginning of the solution:
${steps}"""
)

CRITIC_SYSTEM = """You are a meticulous critic of step-by-step solutions. You are given a \
problem, a partial solution (the steps so far) and its last step. Do three things:
1. Summarize the general thought of the Partial Solution.
2. Critique the Last Step briefly, consistently with that summary: check its reasoning and \
every calculation in it.
3. End with your verdict on the Last Step: <Answer>Correct</Answer> if it is correct, or \
<Answer>Incorrect</Answer> if it contains an error."""

CRITIC_USER = Template(
    """# Problem
${problem}

# Partial Solution
${prefix}

# Last Step
${step}"""
)

CRITIC_REASK = (
    "Your reply did not end with a verdict that can be read. Answer with exactly one of "
    "<Answer>Correct</Answer> or <Answer>Incorrect</Answer>."
)

SNEAKY_SYSTEM = Template(
    """You test a critic by turning a correct step of a solution into a subtly wrong one.
Pick one of these error types:
${error_types}
The wrong step must look plausible, keep the style and length of the correct step, and change
its result so that the solution's final answer becomes wrong. Never say inside the step that it
is wrong."""
)

SNEAKY_USER = Template(
    """# Problem
${problem}

# Partial Solution
${prefix}

# Correct Step
${step}

Answer exactly in this format:
### Error Type: <number>. <name>
### Plan: <one or two sentences on the subtle change>
### Incorrect Step: <the rewritten step>"""
)


def join_steps(steps: Sequence[str]) -> str:
    return STEP_SEPARATOR.join(steps)


def solution_messages(problem: str) -> list[ChatMessage]:
    return system_user(SOLVER_SYSTEM, SOLUTION_INSTRUCTION.substitute(problem=problem))


def next_step_messages(problem: str, steps: Sequence[str]) -> list[ChatMessage]:
    return system_user(
        SOLVER_SYSTEM,
        NEXT_STEP_INSTRUCTION.substitute(problem=problem, steps=join_steps(steps) or NO_STEPS),
    )


def continue_messages(problem: str, steps: Sequence[str]) -> list[ChatMessage]:
    return system_user(
        SOLVER_SYSTEM, CONTINUE_INSTRUCTION.substitute(problem=problem, steps=join_steps(steps))
    )


def critic_messages(problem: str, prefix: Sequence[str], step: str) -> list[ChatMessage]:
    return system_user(
        CRITIC_SYSTEM,
        CRITIC_USER.substitute(
            problem=problem, prefix=join_steps(prefix) or EMPTY_PREFIX, step=step
        ),
    )


def critic_reask_messages(first: list[ChatMessage], reply: str) -> list[ChatMessage]:
    """The critic's own conversation, its unreadable reply, and a request for the verdict."""
    return [
        *first,
        ChatMessage(role="assistant", content=reply),
        ChatMessage(role="user", content=CRITIC_REASK),
    ]


def sneaky_messages(problem: str, prefix: Sequence[str], step: str) -> list[ChatMessage]:
    types = "\n".join(f"{number}. {name}" for number, name in enumerate(ERROR_TYPES, start=1))
    return system_user(
        SNEAKY_SYSTEM.substitute(error_types=types),
        SNEAKY_USER.substitute(
            problem=problem, prefix=join_steps(prefix) or EMPTY_PREFIX, step=step
        ),
    )


# --- steps -------------------------------------------------------------------------------


def split_steps(solution: str) -> list[str]:
    """A solution's steps: its paragraphs, or its lines when it is one paragraph.

    Only the visible text counts (what follows ``</think>``), as everywhere else.
    """
    text = shared_text(solution)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) == 1:
        lines = [line.strip() for line in paragraphs[0].splitlines() if line.strip()]
        if len(lines) > 1:
            return lines
    return paragraphs


_BOXED_ANSWER = re.compile(r"\\(?:boxed|fbox)\s*\{[^{}]*\}")
_ANSWER_LINE = re.compile(
    r"^[\s*#>_-]*(?:final\s+answer\b|the\s+answer\s+is\b|answer\s*[:*]).*$",
    flags=re.IGNORECASE | re.MULTILINE,
)
_COMPUTATION = re.compile(r"\d\s*(?:[-+*/×÷^]\s*\(?-?\d|=)|=\s*\(?-?\$?\d")
"""A number with an operator and a number after it, or an ``=`` beside a number."""


def computes(step: str) -> bool:
    """Whether a step states a computation, not counting the boxed answer it may end with.

    "So the total is 23 + 6 = 29." computes; "The answer is \\boxed{29}." and
    "Final answer: x = -1" only restate one, and "To solve 3x + 8 = 5, we will follow these
    steps:" announces the steps after it: it quotes the problem, the steps compute.
    """
    if step.rstrip().endswith(":"):
        return False
    stated = _ANSWER_LINE.sub("", _BOXED_ANSWER.sub("", step))
    return bool(_COMPUTATION.search(stated))


def rewritable_steps(steps: Sequence[str]) -> list[int]:
    """The steps a sneaky rewrite is played on: those that compute (every step when none do).

    Departure from the paper, which picks any step at random: the paper's solvers write
    PRM800K-style steps that each compute, while a small model's solution opens with a plan
    and ends with a line that restates the boxed answer. Rewriting such a line plants no error
    that later steps carry (a roll-out recomputes the answer and the game is invalid), so those
    lines are not offered to the sneaky generator.
    """
    found = [index for index, step in enumerate(steps) if computes(step)]
    return found or list(range(len(steps)))


def completed_answer(steps: Sequence[str], completion: str) -> str | None:
    """The final answer of ``steps`` continued by ``completion``: the last one stated."""
    return extract_answer(join_steps([*steps, shared_text(completion)]))


# --- schemas and parsers -----------------------------------------------------------------


class CriticVerdict(Parsed):
    verdict: Verdict | None = Field(description="None when no single verdict could be read")
    critique: str = ""

    @property
    def judged_as(self) -> JudgedAs:
        return self.verdict or "unparsed"


_ANSWER_TAG = re.compile(r"<answer>\s*(correct|incorrect)\s*</answer>", re.IGNORECASE)


def parse_critic_verdict(text: str) -> CriticVerdict:
    """The verdict in ``<Answer>Correct</Answer>`` / ``<Answer>Incorrect</Answer>``, strictly.

    No tag, or both verdicts (a model copying the instruction), reads as no verdict: the
    caller decides what that means, the parser never guesses.
    """
    visible = shared_text(text)
    found = {match.lower() for match in _ANSWER_TAG.findall(visible)}
    critique = _ANSWER_TAG.sub("", visible).strip()
    if len(found) == 1:
        verdict: Verdict = "correct" if found == {"correct"} else "incorrect"
        return CriticVerdict(verdict=verdict, critique=critique)
    reason = "both verdicts given" if found else "no <Answer>Correct|Incorrect</Answer>"
    return CriticVerdict(verdict=None, critique=critique, parse_ok=False, parse_error=reason)


class SneakyRewrite(Parsed):
    error_type_id: int | None = Field(None, description="1-based index into ERROR_TYPES")
    error_type: str | None = None
    plan: str = ""
    step: str | None = Field(None, description="the rewritten step; None when unusable")


SNEAKY_HEADERS = ("Error Type", "Plan", "Incorrect Step")


def _section(text: str, header: str) -> str | None:
    """The text after ``### header:`` up to the next known header (or the end)."""
    others = "|".join(re.escape(h) for h in SNEAKY_HEADERS)
    pattern = rf"#*\s*{re.escape(header)}\s*:\s*(.*?)(?=\n\s*#*\s*(?:{others})\s*:|\Z)"
    match = re.search(pattern, text, flags=re.IGNORECASE | re.DOTALL)
    return match.group(1).strip() if match else None


def _same_step(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _error_type(text: str | None) -> tuple[int | None, str | None]:
    if not text:
        return None, None
    number = re.match(r"\s*(?:type\s*)?(\d+)", text, flags=re.IGNORECASE)
    if number and 1 <= int(number.group(1)) <= len(ERROR_TYPES):
        index = int(number.group(1))
        return index, ERROR_TYPES[index - 1].split(":")[0]
    for index, name in enumerate(ERROR_TYPES, start=1):
        if name.split(":")[0].lower() in text.lower():
            return index, name.split(":")[0]
    return None, None


_PLACEHOLDER = re.compile(r"<[^<>\n]{1,60}>")
_DIGIT = re.compile(r"\d")


def _not_a_step(step: str, original_step: str) -> str | None:
    """Why a rewrite is not a step the game can test, or None when it is one."""
    if _same_step(step, original_step):
        return "the step is unchanged"
    if _PLACEHOLDER.fullmatch(step.strip()) or "rewritten step" in step.lower():
        # a small model copies the format line's placeholder instead of filling it
        return "the step is the format's placeholder"
    if _DIGIT.search(original_step) and not _DIGIT.search(step):
        # a plan or a comment in place of the step: a step that computed states a number
        return "the step states no number, the correct one does"
    return None


def parse_sneaky_rewrite(text: str, original_step: str) -> SneakyRewrite:
    """The error type, the plan and the rewritten step.

    The step is usable when present, different from the original and a step (not the
    format's placeholder, not a plan without the numbers the correct step states); a missing
    or unknown error type is a parse failure but leaves a usable step usable (the game can
    still test it). An unusable step is an invalid rewrite: the sneaky generator earns -1.
    """
    visible = shared_text(text)
    errors: list[str] = []
    type_id, type_name = _error_type(_section(visible, "Error Type"))
    if type_id is None:
        errors.append("no known error type")
    plan = _section(visible, "Plan") or ""
    step = _section(visible, "Incorrect Step")
    step = step or None
    if step is None:
        errors.append("no incorrect step")
    elif (fault := _not_a_step(step, original_step)) is not None:
        errors.append(fault)
        step = None
    return SneakyRewrite(
        error_type_id=type_id,
        error_type=type_name,
        plan=plan,
        step=step,
        parse_ok=not errors,
        parse_error="; ".join(errors) or None,
    )


# --- the game's rules --------------------------------------------------------------------


class Validity(BaseModel):
    """Whether a rewrite is a real error, from the roll-outs of both prefixes."""

    valid: bool
    reason: Literal["original_fails", "sneaky_succeeds"] | None = None
    original_success_rate: float
    sneaky_success_rate: float


def success_rate(answers: Sequence[str | None], reference: str) -> float:
    if not answers:
        return 0.0
    return sum(answers_match(a, reference).correct for a in answers) / len(answers)


def check_validity(
    original_answers: Sequence[str | None],
    sneaky_answers: Sequence[str | None],
    reference: str,
    *,
    min_original_success: float = 0.75,
    max_sneaky_success: float = 0.0,
) -> Validity:
    """Valid only when the original prefix succeeds often enough (paper: >= 75%) and the
    sneaky one almost never (paper: never). An unreliable original says the step's prefix
    cannot tell a planted error from the solver's own, so the rewrite is not credited."""
    original = success_rate(original_answers, reference)
    sneaky = success_rate(sneaky_answers, reference)
    reason: Literal["original_fails", "sneaky_succeeds"] | None = None
    if original < min_original_success:
        reason = "original_fails"
    elif sneaky > max_sneaky_success:
        reason = "sneaky_succeeds"
    return Validity(
        valid=reason is None,
        reason=reason,
        original_success_rate=original,
        sneaky_success_rate=sneaky,
    )


def game_result(valid: bool, sneaky_step_judged_as: JudgedAs | None) -> GameResult:
    if not valid:
        return "invalid_rewrite"
    if sneaky_step_judged_as == "incorrect":
        return "critic_detected"
    if sneaky_step_judged_as == "correct":
        return "critic_fooled"
    return "critic_unparsed"


GAME_REWARDS: dict[GameResult, tuple[int, int]] = {
    "critic_detected": (1, -1),
    "critic_fooled": (-1, 1),
    "invalid_rewrite": (0, -1),
    # Design choice: a critic that gives no readable verdict loses its game (the format is
    # part of the task, as the paper's "invalid" outputs are), and the sneaky generator wins
    # nothing it did not earn by fooling a verdict.
    "critic_unparsed": (-1, 0),
}
"""(critic, sneaky) reward per result: zero-sum +-1 when the critic judged a valid error."""


def game_rewards(result: GameResult) -> tuple[int, int]:
    """The (critic, sneaky) rewards of a game."""
    return GAME_REWARDS[result]


def paired_reward(original_step_judged_as: JudgedAs | None) -> int | None:
    """The critic's reward on the untouched original step (the paired sample): +1 for
    ``Correct``, -1 for ``Incorrect`` or no verdict; None when it was not judged."""
    if original_step_judged_as is None:
        return None
    return 1 if original_step_judged_as == "correct" else -1


class SpcGame(Outcome):
    """One game, as training reads it: who played, what was rewritten, how it was checked,
    what the critic said, and what each side earned."""

    kind: ClassVar[str] = "spc_game"

    round: int = Field(description="the campaign round the game belongs to")
    problem: str
    reference_answer: str
    solution_source: Literal["given", "generated"]
    solver_model: str = Field(description="the model that wrote the solution, or 'given'")
    step_index: int = Field(description="0-based index of the rewritten step")
    steps_total: int
    prefix: list[str] = Field(description="the steps before the rewritten one")
    original_step: str
    sneaky_model: str
    sneaky_adapter: str | None = None
    sneaky_turn: str = Field(description="key of the sneaky generator's turn")
    error_type: str | None = None
    sneaky_plan: str = ""
    sneaky_step: str | None = Field(None, description="None when the rewrite was unusable")
    rollouts: int = Field(description="completions per prefix (N)")
    original_answers: list[str | None] = Field(default_factory=list)
    sneaky_answers: list[str | None] = Field(default_factory=list)
    original_success_rate: float | None = None
    sneaky_success_rate: float | None = None
    min_original_success: float
    max_sneaky_success: float
    valid: bool
    invalid_reason: str | None = Field(
        None, description="unusable_rewrite, original_fails or sneaky_succeeds"
    )
    critic_model: str | None = None
    critic_adapter: str | None = None
    critic_turn: str | None = Field(None, description="key of the turn whose verdict counted")
    critic_verdict: JudgedAs | None = Field(None, description="on the sneaky step")
    critic_original_turn: str | None = None
    critic_original_verdict: JudgedAs | None = Field(None, description="on the original step")
    result: GameResult
    critic_reward: int
    sneaky_reward: int
    paired_reward: int | None = Field(None, description="the critic's, on the original step")


class GameSummary(BaseModel):
    games: int = 0
    valid: int = 0
    critic_wins: int = 0
    sneaky_wins: int = 0
    invalid: int = 0
    unparsed: int = 0
    critic_reward: int = 0
    sneaky_reward: int = 0
    paired_reward: int = 0


def summarize_games(games: Iterable[SpcGame]) -> GameSummary:
    summary = GameSummary()
    for game in games:
        summary.games += 1
        summary.valid += game.valid
        summary.critic_wins += game.result == "critic_detected"
        summary.sneaky_wins += game.result == "critic_fooled"
        summary.invalid += game.result == "invalid_rewrite"
        summary.unparsed += game.result == "critic_unparsed"
        summary.critic_reward += game.critic_reward
        summary.sneaky_reward += game.sneaky_reward
        summary.paired_reward += game.paired_reward or 0
    return summary
