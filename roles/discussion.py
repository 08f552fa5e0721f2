"""The CEO-managed discussion (M1 / MAS-TTS): prompts, output schemas and parsers.

Roles follow the released protocol: a CEO allocates the round (continue or stop, team size,
direction, token budget), an expert recruiter writes role descriptions, a solver writes a
solution, critics review it and end with ``[Agree]`` or ``[Disagree]``, and an evaluator scores
it and advises. Every parser survives malformed output: what cannot be read becomes a safe
default with ``parse_ok=False`` and the reason, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from string import Template
from typing import Literal

from pydantic import Field

from roles.answers import last_boxed
from roles.messages import ChatMessage, system_user
from roles.parsing import Parsed

NO_SOLUTION = "No solution yet."
NO_ADVICE = "No advice yet."
NO_RESOURCES = "No resources yet."
DEFAULT_ROLE = "Scientist."

# --- prompts -----------------------------------------------------------------------------

CEO_SYSTEM = Template(
    """You are the CEO of a team of experts solving a problem. Your duties:
1. Monitor the team's progress and the resources it spends.
2. Decide whether the discussion continues or stops.
3. Decide how many experts to recruit or retain for the next round.
4. Direct the discussion towards the weakest part of the latest solution.
5. Set how deeply the experts think by choosing their token budget.

Task: ${problem}
Latest solution: ${solution}
Evaluation feedback: ${advice}
Current resources: ${resources}"""
)

CEO_INSTRUCTION = Template(
    """Choose Stop only if the latest solution is correct. Recruit between 2 and ${max_experts}
experts (2 or 3 is typical, more for complex problems). Choose the maximum tokens from
${token_menu}: the smallest for simple problems, the largest for complex ones.
Answer exactly in this format:
### Decision: <Continue or Stop>
### Recruit Number: <a number>
### Direction: <one sentence: the quantity, step or idea of the problem to get right>
### Maximum Tokens: <a number from the list>"""
)

RECRUITER_SYSTEM = Template(
    """You lead a group of mathematicians facing this problem: ${problem}
Your only job is to recruit ${count} mathematicians with different skills to solve it. Do not
solve it. Suggestions from the last evaluation: ${advice}"""
)

RECRUITER_INSTRUCTION = Template(
    """Answer with a numbered list of ${count} mathematicians and nothing else, one line each,
in this form:
1. A mathematician specialized in arithmetic, with expertise in multi-step word problems.
Give each one the field and expertise this problem needs."""
)

SOLVER_SYSTEM = Template("Solve the following problem accurately: ${problem}")

SOLVER_INSTRUCTION = Template(
    """You are ${role}. Using the chat history, solve the problem step by step, briefly.
Direction from the CEO: ${direction}
If critics disagreed with the last solution, check their answers and fix what is wrong.
Put the final answer in \\boxed{answer}."""
)

CONCLUDE_INSTRUCTION = """You have reached your length limit. Write only your final answer now, \
as \\boxed{answer}."""

# The critics of a round run in parallel on one engine: everything they share (the problem,
# the history) comes first and each one's role last, so the engine's prefix cache serves the
# shared part once for all of them.
CRITIC_SYSTEM = Template("""You are in a discussion group solving this problem: ${problem}""")

CRITIC_INSTRUCTION = Template(
    """You are ${role}. Solve the problem yourself in a few short steps and give your own final
answer in \\boxed{answer}. Then compare it with the final answer of the last solution in the
chat history. End with [Agree] if the two final answers are the same, or [Disagree] if not."""
)

# An independent critic sees the problem and nothing of the discussion: it solves the problem on
# its own and the graph compares its boxed answer with the solution's. The paper's critic is
# asked to compare "your own solution" with the last one without writing it out; shown the
# history, the 0.5B model writes no solution of its own (it boxed an answer in 22 of 173
# critiques) and echoes the solver, so its verdict is no check at all.
# No code: the coder model, asked for a solution, writes Python now and then and follows it
# with an ```output block of its own invention, whose number it then boxes (8 of 53 critiques
# without this line; with it, 55 of 217 still do).
INDEPENDENT_CRITIC_INSTRUCTION = Template(
    """You are ${role}. Solve the problem yourself, step by step, briefly, without writing code.
Put your final answer in \\boxed{answer}."""
)

EVALUATOR_SYSTEM = Template(
    """Experts: ${experts}
Problem: ${problem}
Solution: ${solution}"""
)

EVALUATOR_INSTRUCTION = Template(
    """You are an experienced teacher. Check the solution's steps and its final answer, give
brief advice on how to improve it, and say which experts to recruit next. Answer exactly in
this format:
### Correctness: <1 if the final answer is correct, 0 if not>
### Advice: <one or two sentences>
### Recruiting Suggestion: <the experts to recruit next>"""
)


def render_history(history: Sequence[str], last: int) -> str:
    """The shared chat history a member sees: its ``last`` entries, oldest first."""
    shown = list(history)[-last:] if last > 0 else []
    body = "\n".join(shown) if shown else "(empty)"
    return f"Here is the chat history: <history>\n{body}\n</history>\n"


def ceo_messages(
    problem: str,
    solution: str,
    advice: str,
    resources: str,
    *,
    max_experts: int,
    token_menu: Sequence[int],
) -> list[ChatMessage]:
    menu = "[" + ", ".join(str(t) for t in token_menu) + "]"
    return system_user(
        CEO_SYSTEM.substitute(
            problem=problem, solution=solution, advice=advice, resources=resources
        ),
        CEO_INSTRUCTION.substitute(max_experts=max_experts, token_menu=menu),
    )


def recruiter_messages(problem: str, advice: str, count: int) -> list[ChatMessage]:
    return system_user(
        RECRUITER_SYSTEM.substitute(problem=problem, count=count, advice=advice),
        RECRUITER_INSTRUCTION.substitute(count=count),
    )


def solver_messages(
    problem: str, role: str, direction: str, history: Sequence[str], *, last: int = 5
) -> list[ChatMessage]:
    return system_user(
        SOLVER_SYSTEM.substitute(problem=problem),
        render_history(history, last)
        + SOLVER_INSTRUCTION.substitute(role=role, direction=direction),
    )


def conclude_messages(solver: list[ChatMessage], partial: str) -> list[ChatMessage]:
    """A solver cut off at its token limit is asked for its final answer (M1's budget
    forcing: the released code appends ``</think>`` and lets the model answer)."""
    return [
        *solver,
        ChatMessage(role="assistant", content=partial),
        ChatMessage(role="user", content=CONCLUDE_INSTRUCTION),
    ]


def critic_messages(
    problem: str, role: str, history: Sequence[str], *, last: int = 3
) -> list[ChatMessage]:
    return system_user(
        CRITIC_SYSTEM.substitute(problem=problem),
        render_history(history, last) + CRITIC_INSTRUCTION.substitute(role=role),
    )


def independent_critic_messages(problem: str, role: str) -> list[ChatMessage]:
    """An independent critic's prompt: the problem and its role, none of the history."""
    return system_user(
        CRITIC_SYSTEM.substitute(problem=problem),
        INDEPENDENT_CRITIC_INSTRUCTION.substitute(role=role),
    )


def evaluator_messages(problem: str, solution: str, experts: Sequence[str]) -> list[ChatMessage]:
    return system_user(
        EVALUATOR_SYSTEM.substitute(
            experts="; ".join(experts) or DEFAULT_ROLE, problem=problem, solution=solution
        ),
        EVALUATOR_INSTRUCTION.template,
    )


def history_entry(sender: str, text: str) -> str:
    return f"[{sender}]: {text}"


def critique_entry(critic: str, text: str) -> str:
    """A disagreeing critic's entry in the history the solver revises from. Departure from the
    paper, which broadcasts the critique with its marker removed: the 0.5B model's critique is
    often the bare ``[Disagree]``, which left the solver an empty entry and no sign that anyone
    disagreed, so a critique without words keeps its marker."""
    return history_entry(critic, text or "[Disagree]")


def own_solution_entry(critic: str, text: str, answer: str, *, agree: bool) -> str:
    """An independent critic's entry: a dissenting critic's whole solution, an agreeing one's
    answer alone. Departure from the paper, which shows the solver only the dissent: the 0.5B
    solver given one dissenting solution adopted its answer even where the other critic had
    reached the solver's own (right) answer, so the solver is told the count both ways."""
    if agree:
        return history_entry(
            critic, f"I solved it on my own and also got \\boxed{{{answer}}}. [Agree]"
        )
    return history_entry(critic, f"{text}\n[Disagree]")


# --- schemas -----------------------------------------------------------------------------


class CeoDecision(Parsed):
    decision: Literal["continue", "stop"] = "continue"
    recruit_number: int = Field(2, ge=1)
    direction: str = NO_ADVICE
    max_tokens: int = Field(ge=1)


class RoleAssignment(Parsed):
    roles: list[str]


class Critique(Parsed):
    agree: bool
    text: str
    answer: str | None = None


class Evaluation(Parsed):
    correct: bool = False
    advice: str = NO_ADVICE


# --- parsers -----------------------------------------------------------------------------


def _section(text: str, header: str, following: Sequence[str]) -> str | None:
    """The text after ``### header:`` up to the next known header (or the end)."""
    stop = "|".join(re.escape(h) for h in following)
    pattern = rf"#*\s*{re.escape(header)}\s*:?\s*(.*?)(?=\n\s*#*\s*(?:{stop})\s*:|\Z)"
    match = re.search(pattern, text, flags=re.IGNORECASE | re.DOTALL)
    return match.group(1).strip() if match else None


def snap_to_menu(value: int, menu: Sequence[int]) -> int:
    """The menu entry closest to ``value`` (ties go to the smaller budget)."""
    return min(sorted(menu), key=lambda m: abs(m - value))


CEO_HEADERS = ("Decision", "Recruit Number", "Direction", "Maximum Tokens")


def parse_ceo_decision(text: str, *, max_experts: int, token_menu: Sequence[int]) -> CeoDecision:
    """Read the CEO's four headers; clamp the team to [2, max_experts] and snap the budget.

    A reply without a readable decision gets the released code's fallback (continue, 2
    experts, no direction, the largest budget) and is marked as a parse failure.
    """
    errors: list[str] = []
    decision_text = _section(text, "Decision", CEO_HEADERS)
    if decision_text is None or not re.search(r"continue|stop", decision_text, re.IGNORECASE):
        errors.append("no Continue/Stop decision")
        decision: Literal["continue", "stop"] = "continue"
    else:
        decision = "continue" if re.search(r"continue", decision_text, re.IGNORECASE) else "stop"

    recruit = 2
    recruit_text = _section(text, "Recruit Number", CEO_HEADERS)
    number = re.search(r"\d+", recruit_text or "")
    if number:
        recruit = int(number.group())
    else:
        errors.append("no recruit number")
    recruit = max(2, min(max_experts, recruit))

    direction = _section(text, "Direction", CEO_HEADERS) or ""
    if not direction:
        errors.append("no direction")
        direction = NO_ADVICE

    max_tokens = max(token_menu)
    tokens_text = _section(text, "Maximum Tokens", CEO_HEADERS)
    number = re.search(r"\d+", (tokens_text or "").replace(",", ""))
    if number:
        max_tokens = snap_to_menu(int(number.group()), token_menu)
    else:
        errors.append("no maximum tokens")

    if "no Continue/Stop decision" in errors:
        # Without a decision the rest is not trusted either: the released fallback.
        return CeoDecision(
            decision="continue",
            recruit_number=2,
            direction=NO_ADVICE,
            max_tokens=max(token_menu),
            parse_ok=False,
            parse_error="; ".join(errors),
        )
    return CeoDecision(
        decision=decision,
        recruit_number=recruit,
        direction=direction,
        max_tokens=max_tokens,
        parse_ok=not errors,
        parse_error="; ".join(errors) or None,
    )


_PLACEHOLDER = re.compile(r"\[[^\]]*\]|<[^>]*>")


def parse_roles(text: str, count: int) -> RoleAssignment:
    """One role description per numbered line; missing ones become ``Scientist.``.

    A line that still holds a template placeholder (``[field]``, ``<discipline>``) echoes the
    instruction rather than naming an expert, so it counts as missing."""
    found = [m.strip() for m in re.findall(r"^\s*\d+[.)]\s*(.+)$", text, flags=re.M)]
    found = [r for r in found if r and not _PLACEHOLDER.search(r)][:count]
    missing = count - len(found)
    roles = found + [DEFAULT_ROLE] * missing
    return RoleAssignment(
        roles=roles,
        parse_ok=missing == 0,
        parse_error=f"{missing} of {count} roles missing" if missing else None,
    )


def parse_critique(text: str) -> Critique:
    """``[Agree]`` or ``[Disagree]``; the later marker wins. No marker reads as disagreement.
    The critic's own final answer (its last ``\\boxed{}``) is kept beside the verdict."""
    markers = re.findall(r"\[(agree|disagree)\]", text, flags=re.IGNORECASE)
    critique = re.sub(r"\[(agree|disagree)\]", "", text, flags=re.IGNORECASE).strip()
    answer = last_boxed(critique) or None
    if not markers:
        return Critique(
            agree=False,
            text=critique,
            answer=answer,
            parse_ok=False,
            parse_error="no [Agree]/[Disagree]",
        )
    return Critique(agree=markers[-1].lower() == "agree", text=critique, answer=answer)


def parse_own_solution(text: str) -> Critique:
    """An independent critic's reply: its own solution, whose last ``\\boxed{}`` is the answer
    the graph compares. ``agree`` stays False here: only the graph, which holds the solution's
    answer, can say whether the two agree. A reply without a boxed answer has no verdict."""
    answer = last_boxed(text) or None
    return Critique(
        agree=False,
        text=text.strip(),
        answer=answer,
        parse_ok=answer is not None,
        parse_error=None if answer is not None else "no \\boxed{} answer",
    )


EVALUATOR_HEADERS = ("Correctness", "Advice", "Recruiting Suggestion")


def parse_evaluation(text: str) -> Evaluation:
    """Correctness is the 0 or 1 after ``Correctness``; unreadable or both means 0.

    Small models often copy the instruction ("1 if correct, 0 otherwise"); a section naming
    both digits says nothing, so it reads as a parse failure rather than as "correct".
    """
    correctness = _section(text, "Correctness", EVALUATOR_HEADERS)
    digits = set(re.findall(r"(?<![\d.])[01](?![\d.])", correctness or ""))
    digit = re.search(r"[01]", correctness or "") if len(digits) == 1 else None
    advice_start = re.search(r"Advice\s*:", text, flags=re.IGNORECASE)
    # The released parser keeps everything after "Advice:", recruiting suggestion included.
    advice = text[advice_start.end() :].strip() if advice_start else ""
    if digit is None:
        return Evaluation(
            correct=False,
            advice=advice or NO_ADVICE,
            parse_ok=False,
            parse_error="no correctness score",
        )
    return Evaluation(correct=digit.group() == "1", advice=advice or NO_ADVICE)
