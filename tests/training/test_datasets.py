"""The JSONL records the trainers read: round trips, and bad lines named by line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roles.messages import ChatMessage
from training.datasets import (
    DatasetError,
    RLExample,
    SFTExample,
    dataset_hash,
    read_jsonl,
    write_jsonl,
)


def test_records_round_trip_and_the_hash_follows_the_contents(tmp_path: Path) -> None:
    examples = [
        SFTExample(
            messages=[
                ChatMessage(role="user", content="2+2?"),
                ChatMessage(role="assistant", content="4"),
            ],
            id="a",
        ),
        SFTExample(messages=[ChatMessage(role="assistant", content="hello")]),
    ]
    path = tmp_path / "sft.jsonl"
    assert write_jsonl(path, examples) == 2
    assert read_jsonl(path, SFTExample) == examples
    first = dataset_hash(path)
    assert first == dataset_hash(path) and len(first) == 64

    write_jsonl(path, examples[:1])
    assert dataset_hash(path) != first


def test_a_bad_line_is_named_with_its_field(tmp_path: Path) -> None:
    path = tmp_path / "rl.jsonl"
    good = {"prompt": [{"role": "user", "content": "q"}], "completion": "a", "reward": 1,
            "group_id": "g"}  # fmt: skip
    bad = {**good, "reward": "lots"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DatasetError, match=r"rl.jsonl:3: not a RLExample \(reward:"):
        read_jsonl(path, RLExample)


def test_sft_examples_need_an_assistant_message(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DatasetError, match="at least one assistant message"):
        read_jsonl(path, SFTExample)


def test_old_logprobs_must_line_up_with_the_tokens() -> None:
    with pytest.raises(ValueError, match="2 values for 3 completion tokens"):
        RLExample(
            prompt=[ChatMessage(role="user", content="q")],
            completion="abc",
            reward=1.0,
            group_id="g",
            completion_token_ids=[1, 2, 3],
            old_logprobs=[-0.1, -0.2],
        )


def test_missing_and_empty_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset file"):
        read_jsonl(tmp_path / "absent.jsonl", SFTExample)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="holds no records"):
        read_jsonl(empty, SFTExample)
