"""Readers for the benchmark files users bring, told apart by their fields.

- ProcessBench: ``steps`` (a list) and ``label`` (an int). No reference answer
  (``final_answer_correct`` is kept in meta); the label is the earliest wrong step or -1.
- PRM800K: ``question`` and ``label`` objects. Answer ``question.ground_truth_answer``; the
  steps are each step's chosen completion, up to the first one rated -1.
- GSM8K: ``question`` and an ``answer`` containing ``####``. The answer is what follows
  ``####``; the steps are the rationale's lines without the ``<<...>>`` calculator notes.
- MATH / MATH-500: ``problem`` and ``solution``. The answer is ``answer`` when present (MATH-500),
  else the last ``\\boxed{}`` of the solution (the original MATH release).
- AIME and generic problem/answer records: a problem (``problem``, ``Problem``, ``question``)
  and an answer (``answer``, ``Answer``, ``final_answer``, ``expected_answer``); the source is
  ``aime`` when the id, url or source field says so, else ``generic``. These are checked before
  MATH, since AIME files often carry a ``solution`` too.

A ``.jsonl`` file holds one record per line; a ``.json`` file holds a list of records, one
record, or an object whose ``data``/``problems``/``examples`` key holds the list; a folder is
read file by file in name order (the original MATH release is a folder of one-record files).

Text a run could not store is refused where it is read, naming the file and line (the record's
index in a ``.json`` list, for a NUL written as ``\\u0000``): bytes that are not UTF-8, and NUL
characters, raw or escaped, which PostgreSQL cannot hold in text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from roles.answers import last_boxed
from training.problem import Problem, ProblemSourceError

_PROBLEM_KEYS = ("problem", "Problem", "question", "Question")
_ANSWER_KEYS = ("answer", "Answer", "final_answer", "expected_answer")
_ID_KEYS = ("id", "ID", "unique_id", "uid", "idx")
_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")
_SUFFIXES = (".jsonl", ".json")


def read_problem_files(path: Path, *, limit: int | None = None) -> list[Problem]:
    """Problems from one file, or from every ``.json``/``.jsonl`` file in a folder tree."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise ProblemSourceError(f"{path}: folder holds no .json or .jsonl file")
    else:
        files = [path]
    problems: list[Problem] = []
    for file in files:
        for index, record in _records(file):
            if limit is not None and len(problems) >= limit:
                return problems
            name = file.stem if len(files) == 1 else str(file.relative_to(path).with_suffix(""))
            problems.append(parse_record(record, default_id=f"{name}-{index}", where=file))
    return problems


def _records(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _read_text(file)
    if file.suffix != ".json":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemSourceError(f"{file}:{line_no}: not JSON ({exc.msg})") from None
            _refuse_nul(record, f"{file}:{line_no}")
            yield line_no - 1, _as_object(record, f"{file}:{line_no}")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemSourceError(f"{file}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict):
        for key in ("data", "problems", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [data]
    if not isinstance(data, list):
        raise ProblemSourceError(f"{file}: expected a list of records")
    for index, record in enumerate(data):
        _refuse_nul(record, f"{file}[{index}]")
        yield index, _as_object(record, f"{file}[{index}]")


def _read_text(file: Path) -> str:
    """The file as text; bytes that are not UTF-8, or a raw NUL, fail with their line."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ProblemSourceError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ProblemSourceError(
            f"{file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise ProblemSourceError(f"{file}:{line}: {_NUL}")
    return text


_NUL = "contains a NUL character, which a problem cannot hold"


def _refuse_nul(value: Any, where: str) -> None:
    """Fail on a NUL written as a JSON escape (``\\u0000``) anywhere in a record."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ProblemSourceError(f"{where}: {_NUL}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, where)
            _refuse_nul(item, where)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul(item, where)


def _as_object(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ProblemSourceError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record is in, by its fields, or None if it is none of them."""
    if isinstance(record.get("steps"), list) and isinstance(record.get("label"), int):
        return "processbench"
    if isinstance(record.get("question"), dict) and isinstance(record.get("label"), dict):
        return "prm800k"
    if isinstance(record.get("question"), str) and "####" in str(record.get("answer", "")):
        return "gsm8k"
    has_problem_and_answer = (
        _first(record, _PROBLEM_KEYS) is not None and _first(record, _ANSWER_KEYS) is not None
    )
    if has_problem_and_answer and _looks_like_aime(record):
        return "aime"
    if isinstance(record.get("problem"), str) and isinstance(record.get("solution"), str):
        return "math"
    if has_problem_and_answer:
        return "generic"
    return None


def parse_record(record: dict[str, Any], *, default_id: str, where: Path | str) -> Problem:
    """One record as a Problem; ``default_id`` is used when the record carries no id."""
    kind = detect_format(record)
    if kind is None:
        raise ProblemSourceError(
            f"{where}: record {default_id} is in no known format (fields: "
            f"{', '.join(sorted(record)) or 'none'}); expected GSM8K (question, answer with "
            "####), MATH (problem, solution), problem/answer (AIME), ProcessBench (problem, "
            "steps, label) or PRM800K (question, label)"
        )
    record_id = _first(record, _ID_KEYS)
    problem_id = str(record_id) if record_id is not None else default_id
    return _PARSERS[kind](record, problem_id)


def _first(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None and not isinstance(value, dict | list):
            return value
    return None


def _looks_like_aime(record: dict[str, Any]) -> bool:
    blob = " ".join(str(record.get(k, "")) for k in (*_ID_KEYS, "url", "source"))
    return "aime" in blob.lower()


def _gsm8k(record: dict[str, Any], problem_id: str) -> Problem:
    rationale, answer = str(record["answer"]).rsplit("####", 1)
    steps = [
        _CALCULATOR_NOTE.sub("", line).strip()
        for line in rationale.strip().splitlines()
        if line.strip()
    ]
    return Problem(
        id=problem_id,
        problem=str(record["question"]).strip(),
        answer=answer.strip().replace(",", ""),
        source="gsm8k",
        solution_steps=steps,
    )


def _math(record: dict[str, Any], problem_id: str) -> Problem:
    answer = _first(record, _ANSWER_KEYS)
    if answer is None:
        answer = last_boxed(record["solution"])
    meta = {k: record[k] for k in ("level", "type", "subject") if k in record}
    return Problem(
        id=problem_id,
        problem=record["problem"].strip(),
        answer=None if answer is None else str(answer).strip(),
        source="math",
        meta={**meta, "solution": record["solution"]},
    )


def _problem_answer(source: str):
    def parse(record: dict[str, Any], problem_id: str) -> Problem:
        answer = str(_first(record, _ANSWER_KEYS)).strip()
        meta = {
            k: v
            for k, v in record.items()
            if k not in (*_PROBLEM_KEYS, *_ANSWER_KEYS, *_ID_KEYS) and not isinstance(v, dict)
        }
        return Problem(
            id=problem_id,
            problem=str(_first(record, _PROBLEM_KEYS)).strip(),
            answer=answer,
            source=source,
            meta=meta,
        )

    return parse


def _processbench(record: dict[str, Any], problem_id: str) -> Problem:
    steps = [str(step) for step in record["steps"]]
    label = record["label"]
    if label < -1 or label >= len(steps):
        raise ProblemSourceError(
            f"ProcessBench record {problem_id}: label {label} is outside -1..{len(steps) - 1}"
        )
    return Problem(
        id=problem_id,
        problem=str(_first(record, _PROBLEM_KEYS)),
        answer=None,
        source="processbench",
        solution_steps=steps,
        first_error_step=label,
        meta={k: record[k] for k in ("generator", "final_answer_correct", "subset") if k in record},
    )


def _prm800k(record: dict[str, Any], problem_id: str) -> Problem:
    question = record["question"]
    steps: list[str] = []
    first_error = -1
    for index, step in enumerate(record["label"].get("steps") or []):
        completion = _chosen_completion(step)
        if completion is None:
            break
        steps.append(str(completion.get("text", "")).strip())
        if completion.get("rating") == -1:
            first_error = index
            break
    answer = question.get("ground_truth_answer")
    return Problem(
        id=problem_id,
        problem=str(question.get("problem", "")).strip(),
        answer=None if answer is None else str(answer),
        source="prm800k",
        solution_steps=steps,
        first_error_step=first_error,
        meta={
            "finish_reason": record["label"].get("finish_reason"),
            "generation": record.get("generation"),
        },
    )


def _chosen_completion(step: dict[str, Any]) -> dict[str, Any] | None:
    # A labeller either picked one of the model's completions or wrote their own; the rated
    # step that continues the solution is that one, and a step with neither ends the labelling.
    completions = step.get("completions") or []
    chosen = step.get("chosen_completion")
    if isinstance(chosen, int) and 0 <= chosen < len(completions):
        return completions[chosen]
    if step.get("human_completion"):
        return step["human_completion"]
    # The step where a labeller found an error and stopped chooses nothing: the completion
    # they rated -1 is the wrong step.
    rated_wrong = [c for c in completions if c.get("rating") == -1]
    if rated_wrong:
        return rated_wrong[0]
    return completions[0] if completions else None


_PARSERS = {
    "processbench": _processbench,
    "prm800k": _prm800k,
    "gsm8k": _gsm8k,
    "math": _math,
    "aime": _problem_answer("aime"),
    "generic": _problem_answer("generic"),
}
