"""Problems to solve or judge, from a local file or a seeded generator, behind one loader.

A source is a string, so the CLI, campaigns and evaluations name problems the same way:

- a path to a local file (``.jsonl``, ``.json``) or a folder of them, in one of the formats that
  ``training.formats`` recognises by their fields: GSM8K, MATH / MATH-500, AIME-style
  problem/answer records, ProcessBench, PRM800K;
- ``gen:KIND`` with optional ``?key=value&...``: procedurally generated problems with exact
  answers (``training.generators``). Kinds: ``arithmetic``, ``linear``, ``modular``,
  ``counting``, ``logic``, and ``mixed`` (all kinds in turn). Keys: ``difficulty`` (1-5,
  default 2), ``n`` (how many, default 100, at most 10000), ``seed`` (overrides the
  ``seed`` argument). Example: ``gen:linear?difficulty=3&n=50``. ``step-errors`` gives
  step-labelled solutions (``solution_steps``, ``first_error_step``) for critics, one step
  wrong with probability ``error_rate`` (another key, default 0.5).

The same source, limit and seed always give the same problems with the same ids, which is what
lets an evaluation resume.
"""

from __future__ import annotations

from pathlib import Path

from training.formats import read_problem_files
from training.generators import generate_from_spec
from training.problem import GENERATOR_PREFIX, Problem, ProblemSourceError

__all__ = ["GENERATOR_PREFIX", "Problem", "ProblemSourceError", "load_problems"]


def load_problems(source: str, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
    """The problems of ``source`` (a local file or folder, or a ``gen:`` spec), at most ``limit``.

    Files keep their order and ``limit`` takes the first ones; generators are reproducible by
    ``seed``. Raises ``ProblemSourceError`` with a reason for anything it cannot read.
    """
    if limit is not None and limit < 0:
        raise ProblemSourceError(f"limit must be >= 0, got {limit}")
    source = source.strip()
    if not source:
        raise ProblemSourceError("empty problem source")
    if source.startswith(GENERATOR_PREFIX):
        return generate_from_spec(source[len(GENERATOR_PREFIX) :], limit=limit, seed=seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise ProblemSourceError(
            f"no such file or folder: {source!r} (a generated source starts with "
            f"{GENERATOR_PREFIX!r}, e.g. gen:arithmetic?difficulty=2)"
        )
    return read_problem_files(path, limit=limit)
