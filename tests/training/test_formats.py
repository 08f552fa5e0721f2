"""Benchmark files a user brings: each format is recognised by its fields and read right."""

from __future__ import annotations

import json
import re

import pytest

from training.problems import ProblemSourceError, load_problems

GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
    "many clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 1,072",
}
MATH = {
    "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
    "level": "Level 1",
    "type": "Prealgebra",
    "solution": "We have $\\frac12+\\frac14 = \\boxed{\\frac{3}{4}}$.",
}
MATH500 = {
    "problem": "Convert the point $(0,3)$ to polar coordinates.",
    "solution": "... so the answer is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
    "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
    "subject": "Precalculus",
    "level": 2,
    "unique_id": "test/precalculus/807.json",
}
AIME = {
    "id": 60,
    "problem": "Every morning Aya goes for a 9-kilometer-long walk ...",
    "solution": "...",
    "answer": "204",
    "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
}
PROCESSBENCH = {
    "id": "gsm8k-0",
    "generator": "Qwen2-7B-Instruct",
    "problem": "Sue lives in a fun neighborhood ...",
    "steps": ["To find out ...", "On Friday, 18 flamingos ...", "So the answer is 24."],
    "final_answer_correct": False,
    "label": 1,
}
PRM800K = {
    "labeler": "a",
    "generation": 3,
    "question": {
        "problem": "How many vertical asymptotes does $y=\\frac{2}{x^2+x-6}$ have?",
        "ground_truth_answer": "2",
    },
    "label": {
        "steps": [
            {
                "completions": [{"text": "Factor: (x+3)(x-2).", "rating": 1}],
                "human_completion": None,
                "chosen_completion": 0,
            },
            {
                "completions": [
                    {"text": "So there is one asymptote.", "rating": -1},
                    {"text": "Both roots give asymptotes.", "rating": 1},
                ],
                "human_completion": None,
                "chosen_completion": None,
            },
        ],
        "finish_reason": "found_error",
    },
}


def _jsonl(path, *records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


def test_gsm8k_answer_is_the_number_after_the_hashes(tmp_path):
    [p] = load_problems(_jsonl(tmp_path / "test.jsonl", GSM8K))
    assert (p.id, p.source, p.answer) == ("test-0", "gsm8k", "1072")
    assert p.problem.startswith("Natalia sold clips")
    assert p.solution_steps == [
        "Natalia sold 48/2 = 24 clips in May.",
        "Natalia sold 48+24 = 72 clips altogether in April and May.",
    ]


def test_math_answer_comes_from_the_last_box_or_the_answer_field(tmp_path):
    original, math500 = load_problems(_jsonl(tmp_path / "math.jsonl", MATH, MATH500))
    assert (original.source, original.answer) == ("math", "\\frac{3}{4}")
    assert original.meta["level"] == "Level 1"
    assert (math500.id, math500.answer) == (
        "test/precalculus/807.json",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
    )
    assert math500.meta["subject"] == "Precalculus"


def test_aime_records_keep_their_ids_and_integer_answers(tmp_path):
    [p] = load_problems(_jsonl(tmp_path / "aime24.jsonl", AIME))
    assert (p.id, p.source, p.answer) == ("60", "aime", "204")


def test_processbench_keeps_steps_and_the_earliest_wrong_one(tmp_path):
    [p] = load_problems(_jsonl(tmp_path / "gsm8k.jsonl", PROCESSBENCH))
    assert (p.id, p.source, p.answer, p.first_error_step) == ("gsm8k-0", "processbench", None, 1)
    assert len(p.solution_steps) == 3
    assert p.meta == {"generator": "Qwen2-7B-Instruct", "final_answer_correct": False}


def test_prm800k_steps_stop_at_the_first_step_rated_wrong(tmp_path):
    [p] = load_problems(_jsonl(tmp_path / "phase2.jsonl", PRM800K))
    assert (p.source, p.answer, p.first_error_step) == ("prm800k", "2", 1)
    assert p.solution_steps == ["Factor: (x+3)(x-2).", "So there is one asymptote."]


def test_a_json_list_a_wrapped_list_and_a_folder_are_read_too(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([GSM8K, AIME]))
    assert [p.source for p in load_problems(str(listed))] == ["gsm8k", "aime"]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [MATH, MATH]}))
    assert [p.id for p in load_problems(str(wrapped))] == ["wrapped-0", "wrapped-1"]
    folder = tmp_path / "MATH" / "test" / "algebra"
    folder.mkdir(parents=True)
    (folder / "1.json").write_text(json.dumps(MATH))
    (folder / "2.json").write_text(json.dumps(MATH))
    problems = load_problems(str(tmp_path / "MATH"), limit=1)
    assert [(p.id, p.answer) for p in problems] == [("test/algebra/1-0", "\\frac{3}{4}")]


def test_limit_takes_the_first_records_in_file_order(tmp_path):
    path = _jsonl(
        tmp_path / "many.jsonl",
        *[{"problem": f"{i}+{i}?", "answer": str(2 * i)} for i in range(10)],
    )
    problems = load_problems(path, limit=3)
    assert [(p.id, p.source, p.answer) for p in problems] == [
        ("many-0", "generic", "0"),
        ("many-1", "generic", "2"),
        ("many-2", "generic", "4"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "hello"}\n', "record many-0 is in no known format (fields: text)"),
        ('{"problem": "1+1", "answer": "2"}\n{oops\n', "many.jsonl:2: not JSON"),
        ("[1, 2]\n", "many.jsonl:1: expected a JSON object, got list"),
        (
            json.dumps({**PROCESSBENCH, "label": 7}) + "\n",
            "label 7 is outside -1..2",
        ),
    ],
)
def test_a_file_that_cannot_be_read_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "many.jsonl"
    path.write_text(content)
    with pytest.raises(ProblemSourceError, match=re.escape(message)):
        load_problems(str(path))


FIRST = b'[{"problem": "a", "answer": "5"},\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (FIRST + b' {"problem": "P\x00b", "answer": "5"}]', "many.json:2: contains a NUL"),
        (FIRST + b' {"problem": "P\\u0000b", "answer": "5"}]', "many.json[1]: contains a NUL"),
        (FIRST + b' {"problem": "caf\xe9", "answer": "5"}]', "many.json:2: not UTF-8 text"),
        (b'{"problem": "a", "answer": "5", "meta": {"k\\u0000": 1}}', "many.json[0]: contains"),
    ],
)
def test_text_a_run_could_not_store_is_refused_where_the_file_is_read(tmp_path, content, message):
    path = tmp_path / "many.json"
    path.write_bytes(content)
    with pytest.raises(ProblemSourceError, match=re.escape(message)):
        load_problems(str(path))
