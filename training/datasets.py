"""The dataset formats the trainers read: one JSON record per line.

Two kinds of record, each a pydantic model so a bad line fails with its line number and the
field at fault, never deep inside a training step:

- :class:`SFTExample` for ``thinktank train sft``: a chat ``{"messages": [...]}`` (the
  ShareGPT/M500 shape). The loss covers every assistant message and nothing else.
- :class:`RLExample` for ``thinktank train rl``: a prompt (chat messages), one completion the
  policy produced for it, the completion's reward, and the group it was sampled in (the same
  prompt sampled several times, or one game's players). Advantages are computed within a group.
  Token ids and log-probs of the completion, when the backend returned them, are carried so
  training sees exactly the tokens that were sampled (no re-tokenization drift).

``thinktank data export`` writes these records from stored runs; anyone can also write them by
hand. A dataset's identity is the SHA-256 of its file, stored with every model version trained
on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from roles.messages import ChatMessage

Record = TypeVar("Record", bound=BaseModel)


class DatasetError(ValueError):
    """A dataset that cannot be read or does not hold the records a trainer needs."""


class SFTExample(BaseModel):
    """One chat to imitate; the loss is on the assistant messages."""

    messages: list[ChatMessage] = Field(min_length=1)
    id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_an_assistant_message(self) -> SFTExample:
        if not any(message.role == "assistant" for message in self.messages):
            raise ValueError("an SFT example needs at least one assistant message to learn from")
        return self


class RLExample(BaseModel):
    """One sampled completion with its reward, in a group of completions compared together."""

    prompt: list[ChatMessage] = Field(min_length=1, description="the messages the model saw")
    completion: str = Field(description="the text the model produced")
    reward: float
    group_id: str = Field(
        min_length=1, description="completions compared for advantages (same prompt or game)"
    )
    completion_token_ids: list[int] | None = Field(
        None,
        description="the completion's tokens as sampled, end-of-turn token included when the "
        "model stopped by itself; absent, the text is tokenized",
    )
    old_logprobs: list[float] | None = Field(
        None,
        description="the sampler's log-probability of each completion token (needs "
        "completion_token_ids, or the text's tokens must line up one to one)",
    )
    truncated: bool = Field(
        False,
        description="the completion did not end by itself (token limit, halted): no "
        "end-of-turn token is appended",
    )
    advantage: float | None = Field(
        None,
        description="used as is instead of the group-relative advantage (RLAD gives bare "
        "prompts 0, so only the KL term trains on them)",
    )
    id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _logprobs_line_up(self) -> RLExample:
        if (
            self.old_logprobs is not None
            and self.completion_token_ids is not None
            and len(self.old_logprobs) != len(self.completion_token_ids)
        ):
            raise ValueError(
                f"old_logprobs has {len(self.old_logprobs)} values for "
                f"{len(self.completion_token_ids)} completion tokens"
            )
        return self


def read_jsonl(path: Path, record: type[Record]) -> list[Record]:
    """Every record of a JSONL file (blank lines skipped); the first bad line is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    records: list[Record] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(record.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise DatasetError(
                f"{path}:{line_no}: not a {record.__name__} ({where}: {first['msg']})"
            ) from None
    if not records:
        raise DatasetError(f"{path}: the dataset holds no records")
    return records


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> int:
    """Write records one per line (written aside, then renamed: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    count = 0
    with partial.open("w", encoding="utf-8") as out:
        for item in records:
            out.write(json.dumps(item.model_dump(mode="json", exclude_none=True)) + "\n")
            count += 1
    partial.replace(path)
    return count


def dataset_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: the dataset's identity in model versions and idempotency."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    return digest.hexdigest()
