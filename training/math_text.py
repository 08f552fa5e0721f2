"""How generated problems write their mathematics: operator precedence and linear expressions."""

from __future__ import annotations

PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def linear_side(coefficient: int, constant: int, var: str = "x") -> str:
    """``ax + b`` as a person writes it: ``x``, ``-x``, ``3x - 4``, a bare constant."""
    if coefficient == 0:
        return str(constant)
    term = {1: var, -1: f"-{var}"}.get(coefficient, f"{coefficient}{var}")
    if constant == 0:
        return term
    return f"{term} {'+' if constant > 0 else '-'} {abs(constant)}"
