"""``thinktank data export``: training records (:mod:`training.datasets`) from stored runs.

Each kind reads one table of outcomes (or the turns of discussion runs) and turns every row into
the records a trainer reads. The row-to-record functions are pure; :func:`export_dataset` reads
the store, writes ``data.jsonl`` (and ``data.parquet`` when pyarrow is installed) and a
``manifest.json`` that says where every record came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from roles import rlad as rlad_roles
from roles import spc as spc_roles
from roles.checking import answers_match
from roles.messages import ChatMessage
from services.store.models import Run, Turn
from services.store.repository import Store
from training.datasets import RLExample, SFTExample, dataset_hash, write_jsonl

ExportKind = Literal["spc-critic", "spc-sneaky", "rlad-abstraction", "rlad-solution", "m1-sft"]
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)

DEFAULT_PATTERN: dict[str, str | None] = {"m1-sft": "discussion"}
"""Outcome kinds come from whichever pattern stored them; M1 data only from discussions."""


class ExportError(ValueError):
    """An export that cannot be made (bad kind, unwritable directory)."""


class ExportFilters(BaseModel):
    pattern: str | None = None
    since: datetime | None = Field(None, description="runs created at or after this time")
    only_correct: bool = False
    limit: int | None = Field(None, ge=1, description="most source runs, newest first")


class Manifest(BaseModel):
    kind: ExportKind
    created_at: datetime
    filters: ExportFilters
    source_runs: list[str]
    records: int
    skipped: dict[str, int] = Field(default_factory=dict)
    data_sha256: str
    files: list[str]


Record = RLExample | SFTExample


def _turns_by_key(turns: Sequence[Turn]) -> dict[str, Turn]:
    return {turn.key: turn for turn in turns}


def _messages(turn: Turn) -> list[ChatMessage]:
    return [ChatMessage.model_validate(m) for m in turn.messages]


def _prompt(turn: Turn, rebuilt: list[ChatMessage]) -> list[ChatMessage]:
    """The rebuilt prompt, unless the stored turn saw another one (a re-ask): training must see
    what the model saw."""
    stored = _messages(turn)
    return rebuilt if stored == rebuilt else stored


def _rl(
    prompt: list[ChatMessage], turn: Turn, reward: float, group: str, **extra: Any
) -> RLExample:
    return RLExample(
        prompt=prompt,
        completion=turn.completion,
        reward=reward,
        group_id=group,
        truncated=turn.finish_reason == "length",
        id=f"{turn.run_id}/{turn.key}",
        meta={"run_id": turn.run_id, "turn": turn.key, "model": turn.model, **extra},
    )


def spc_critic_records(
    run_id: str, games: Sequence[spc_roles.SpcGame], turns: Sequence[Turn], skipped: dict[str, int]
) -> list[RLExample]:
    """Per valid game, the critic's verdict on the sneaky step and, as the paper's paired
    sample, on the untouched original step. The released SPC code trains on the raw +-1 game
    reward, so it is the advantage (a pair often earns +1 twice: group-relative would be 0)."""
    by_key = _turns_by_key(turns)
    records: list[RLExample] = []
    for game in games:
        if not game.valid or game.sneaky_step is None:
            skipped["invalid_game"] = skipped.get("invalid_game", 0) + 1
            continue
        group = f"{run_id}/{game.key}"
        judged = [
            ("sneaky", game.sneaky_step, game.critic_turn, game.critic_reward),
            ("original", game.original_step, game.critic_original_turn, game.paired_reward),
        ]
        for target, step, key, reward in judged:
            turn = by_key.get(key) if key else None
            if turn is None or reward is None:
                skipped["critic_turn_missing"] = skipped.get("critic_turn_missing", 0) + 1
                continue
            rebuilt = spc_roles.critic_messages(game.problem, game.prefix, step)
            example = _rl(_prompt(turn, rebuilt), turn, reward, group, target=target)
            example.advantage = float(reward)
            records.append(example)
    return records


def spc_sneaky_records(
    run_id: str, games: Sequence[spc_roles.SpcGame], turns: Sequence[Turn], skipped: dict[str, int]
) -> list[RLExample]:
    """Every game's rewrite with the sneaky generator's reward (-1 for an invalid rewrite),
    the raw reward as the advantage as in the released SPC code."""
    by_key = _turns_by_key(turns)
    records: list[RLExample] = []
    for game in games:
        turn = by_key.get(game.sneaky_turn)
        if turn is None:
            skipped["sneaky_turn_missing"] = skipped.get("sneaky_turn_missing", 0) + 1
            continue
        rebuilt = spc_roles.sneaky_messages(game.problem, game.prefix, game.original_step)
        example = _rl(
            _prompt(turn, rebuilt),
            turn,
            game.sneaky_reward,
            f"{run_id}/{game.key}",
            result=game.result,
        )
        example.advantage = float(game.sneaky_reward)
        records.append(example)
    return records


def rlad_abstraction_records(
    run_id: str, rows: Sequence[rlad_roles.RladAbstraction], skipped: dict[str, int]
) -> list[RLExample]:
    """One example per abstraction, prompted for a single abstraction (the paper samples K
    abstractions per problem and normalizes over them: the group is the run). The player wrote
    all K in one reply, so the completion is the abstraction's text, not a sampled turn."""
    records: list[RLExample] = []
    for row in rows:
        if row.abstraction is None:
            continue  # the no-abstraction baseline: data for the solution player only
        if row.reward is None:
            skipped["no_reward"] = skipped.get("no_reward", 0) + 1
            continue
        records.append(
            RLExample(
                prompt=rlad_roles.abstraction_messages(row.problem, 1),
                completion=row.abstraction,
                reward=row.reward,
                group_id=run_id,
                id=f"{run_id}/{row.key}",
                meta={
                    "run_id": run_id,
                    "abstraction": row.key,
                    "model": row.generator_model,
                    "leaked": row.leaked,
                    "improvement": row.improvement,
                },
            )
        )
    return records


def rlad_solution_records(
    run_id: str,
    rows: Sequence[rlad_roles.RladAbstraction],
    turns: Sequence[Turn],
    skipped: dict[str, int],
) -> list[RLExample]:
    """Every rewarded solution, grouped by its abstraction. Bare (baseline) prompts get
    advantage 0 so only the KL term trains on them, as RLAD's reward design does."""
    by_key = _turns_by_key(turns)
    records: list[RLExample] = []
    for row in rows:
        group = f"{run_id}/{row.key}"
        for solution in row.solutions:
            turn = by_key.get(solution.key)
            if solution.reward is None:
                skipped["no_reward"] = skipped.get("no_reward", 0) + 1
                continue
            if turn is None:
                skipped["solution_turn_missing"] = skipped.get("solution_turn_missing", 0) + 1
                continue
            example = _rl(_messages(turn), turn, solution.reward, group, abstraction=row.key)
            if row.abstraction is None:
                example.advantage = 0.0
            records.append(example)
    return records


def m1_sft_records(run: Run, turns: Sequence[Turn], skipped: dict[str, int]) -> list[SFTExample]:
    """Every answered turn of a discussion as a ShareGPT chat (M500's ``messages`` per role
    call): what the agent saw, then what it said."""
    records: list[SFTExample] = []
    for turn in turns:
        if turn.error or not turn.completion.strip():
            skipped["empty_turn"] = skipped.get("empty_turn", 0) + 1
            continue
        records.append(
            SFTExample(
                messages=[*_messages(turn), ChatMessage(role="assistant", content=turn.completion)],
                id=f"{run.id}/{turn.key}",
                meta={"run_id": run.id, "turn": turn.key, "role": turn.role, "model": turn.model},
            )
        )
    return records


def _is_correct(run: Run) -> bool:
    reference = (run.config or {}).get("reference_answer")
    return reference is not None and answers_match(run.answer, str(reference)).correct


async def _source_runs(store: Store, kind: str, filters: ExportFilters) -> list[Run]:
    pattern = filters.pattern or DEFAULT_PATTERN.get(kind)
    runs = await store.list_runs(
        limit=filters.limit or 1_000_000,
        pattern=pattern,
        status="succeeded",
        created_after=filters.since,
    )
    return sorted(runs, key=lambda run: (run.created_at, run.id))


async def build_records(
    store: Store, kind: str, filters: ExportFilters, skipped: dict[str, int]
) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    sources: list[str] = []
    for run in await _source_runs(store, kind, filters):
        if kind == "m1-sft":
            if filters.only_correct and not _is_correct(run):
                skipped["not_correct"] = skipped.get("not_correct", 0) + 1
                continue
            made: list[Any] = m1_sft_records(run, await store.turns(run.id), skipped)
        elif kind in ("spc-critic", "spc-sneaky"):
            games = await store.outcomes(run.id, spc_roles.SpcGame)
            if not games:
                continue
            turns = await store.turns(run.id)
            build = spc_critic_records if kind == "spc-critic" else spc_sneaky_records
            made = build(run.id, games, turns, skipped)
        else:
            rows = await store.outcomes(run.id, rlad_roles.RladAbstraction)
            if not rows:
                continue
            if kind == "rlad-abstraction":
                made = rlad_abstraction_records(run.id, rows, skipped)
            else:
                made = rlad_solution_records(run.id, rows, await store.turns(run.id), skipped)
        if made:
            sources.append(run.id)
            records.extend(made)
    return records, sources


def _write_parquet(path: Path, records: Sequence[Record]) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    rows = [r.model_dump(mode="json", exclude_none=True) for r in records]
    for row in rows:
        row["meta"] = json.dumps(row.get("meta", {}), sort_keys=True)  # free-form: one column
    pq.write_table(pa.Table.from_pylist(rows), path)
    return True


async def export_dataset(
    store: Store, kind: str, filters: ExportFilters, out_dir: Path
) -> Manifest:
    if kind not in EXPORT_KINDS:
        raise ExportError(f"unknown kind {kind!r}; choose one of: {', '.join(EXPORT_KINDS)}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ExportError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    skipped: dict[str, int] = {}
    records, sources = await build_records(store, kind, filters, skipped)
    data = out_dir / "data.jsonl"
    write_jsonl(data, records)
    files = [data.name]
    if records and _write_parquet(out_dir / "data.parquet", records):
        files.append("data.parquet")
    manifest = Manifest(
        kind=kind,  # type: ignore[arg-type]
        created_at=datetime.now(UTC),
        filters=filters,
        source_runs=sources,
        records=len(records),
        skipped=skipped,
        data_sha256=dataset_hash(data),
        files=files,
    )
    (out_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest
