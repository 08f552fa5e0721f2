"""The baselines' single role: one solver writing one chain of thought."""

from __future__ import annotations

from string import Template

from roles.messages import ChatMessage, system_user

SOLVER_SYSTEM = "You are a careful problem solver."

SOLVER_INSTRUCTION = Template(
    """Solve the following problem step by step, then give the final answer as \\boxed{answer}.

Problem: ${problem}"""
)


def solver_messages(problem: str) -> list[ChatMessage]:
    return system_user(SOLVER_SYSTEM, SOLVER_INSTRUCTION.substitute(problem=problem))
