"""``thinktank data export``: training records (:mod:`training.datasets`) from stored runs.

Each kind reads one table of outcomes (or the turns of discussion runs) and turns every row into
the records a trainer reads. The row-to-record functions are pure; :func:`export_dataset` reads
the store, writes ``data.jsonl`` (and ``data.parquet`` when pyarrow is installed) and a
``manifest.json`` that says where every record came from.

``verifier`` records are the judgments of ``process_judge`` runs that a critic evaluation
(``thinktank eval-critic``) made, so each has its solution's ProcessBench label. FlexiVe trains
the fast mode only, so slow-mode judgments are skipped (``slow_mode``); a run's judgments are
one group, which has something to compare only when they were sampled (``eval-critic
--training-groups``). SDV's verifier decisions are not exported: they judge the solver's own
steps, which nobody labelled (a right final answer does not make every step right), so their
reward would be a guess.

For every RL kind the manifest counts the groups and those without signal: a group whose
rewards are all equal (a group of one included) and that carries no fixed nonzero advantage
gets advantage 0 from a group-relative trainer, so it trains nothing but the KL term. Its
records are still written, as RLAD's bare prompts are (their advantage is 0 on purpose); the
count says how much of the data teaches nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from roles import rlad as rlad_roles
from roles import sdv as sdv_roles
from roles import spc as spc_roles
from roles.answers import last_boxed
from roles.checking import answers_match
from roles.messages import ChatMessage
from store import evaluations
from store.runs import Store
from store.tables.runs import Run, Turn
from training.datasets import RLExample, SFTExample, dataset_hash, write_jsonl

ExportKind = Literal[
    "spc-critic", "spc-sneaky", "rlad-abstraction", "rlad-solution", "m1-sft", "verifier"
]
EXPORT_KINDS: tuple[str, ...] = get_args(ExportKind)

DEFAULT_PATTERN: dict[str, str | None] = {"m1-sft": "discussion", "verifier": "process_judge"}
"""Outcome kinds come from whichever pattern stored them; M1 data only from discussions,
verifier data from process judges."""

CRITIC_EVALUATION = "critic"
"""The kind :mod:`training.critic_eval` stores its evaluations under; items hold the labels."""


class ExportError(ValueError):
    """An export that cannot be made (bad kind, unwritable directory)."""


M500_ROLES: tuple[str, ...] = ("recruiter", "solver", "critic", "evaluator")
"""The roles whose messages M500 keeps (``expert_recruiter_messages``, ``problem_solver_messages``,
``critic_messages``, ``evaluator_messages``); the CEO is not among them."""


class ExportFilters(BaseModel):
    pattern: str | None = None
    since: datetime | None = Field(None, description="runs created at or after this time")
    # M500 kept a trace only if the discussion reached consensus, its format was right and its
    # answer correct; all three are defaults, each with its opt-out.
    only_correct: bool = Field(
        True,
        description="m1-sft: only runs whose answer matches their reference answer (a run "
        "without one is skipped)",
    )
    limit: int | None = Field(None, ge=1, description="most source runs, newest first")
    run_ids: list[str] | None = Field(
        None, description="only these runs (a campaign round's games)"
    )
    require_consensus: bool = Field(
        True, description="m1-sft: only discussions whose critics all agreed with the last solution"
    )
    require_format: bool = Field(
        True,
        description="m1-sft: only turns in their role's format (parsed; a solver's answer in "
        "\\boxed{})",
    )
    include_ceo: bool = Field(
        False,
        description="m1-sft: also the CEO's turns (M500 has the recruiter's, solver's, critics' "
        "and evaluator's only)",
    )


class Manifest(BaseModel):
    kind: ExportKind
    created_at: datetime
    filters: ExportFilters
    source_runs: list[str]
    records: int
    skipped: dict[str, int] = Field(default_factory=dict)
    groups: int | None = Field(None, description="RL kinds: the records' distinct group ids")
    no_signal_groups: int | None = Field(
        None,
        description="RL kinds: groups whose rewards are all equal (one record included) and "
        "that carry no fixed nonzero advantage: a group-relative advantage is 0 for each of "
        "their records",
    )
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


def _sampled_tokens(turn: Turn) -> tuple[list[int] | None, list[float] | None]:
    """The turn's generated token ids and their log-probs as the backend returned them (the
    trainer then trains on exactly those tokens and, with every record carrying log-probs,
    compares with the sampler's own); log-probs only together with ids they line up with."""
    ids, logprobs = turn.completion_token_ids, turn.completion_logprobs
    if not ids:
        return None, None
    if logprobs is None or len(logprobs) != len(ids):
        return list(ids), None
    return list(ids), list(logprobs)


def _rl(
    prompt: list[ChatMessage], turn: Turn, reward: float, group: str, **extra: Any
) -> RLExample:
    token_ids, logprobs = _sampled_tokens(turn)
    return RLExample(
        prompt=prompt,
        completion=turn.completion,
        reward=reward,
        group_id=group,
        completion_token_ids=token_ids,
        old_logprobs=logprobs,
        # the model ended its turn itself only on "stop"; a halted or cut-off reply has no
        # end-of-turn token to train on
        truncated=turn.finish_reason != "stop",
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
    run_id: str,
    rows: Sequence[rlad_roles.RladAbstraction],
    turns: Sequence[Turn],
    skipped: dict[str, int],
) -> list[RLExample]:
    """One example per abstraction: the prompt and the sampled tokens of the abstraction
    player's own turn (the record's key is that turn's), so the player is trained on what it
    was sampled from. The paper samples K abstractions per problem and normalizes over them:
    the group is the run.

    Runs recorded before the player was sampled once per abstraction wrote all K in one reply
    (one turn, ``abstractions``): no turn sampled any single abstraction of theirs, so their
    rows are skipped (``k_abstractions_in_one_reply``) rather than trained off-policy."""
    by_key = _turns_by_key(turns)
    records: list[RLExample] = []
    for row in rows:
        if row.abstraction is None:
            continue  # the no-abstraction baseline: data for the solution player only
        if row.reward is None:
            skipped["no_reward"] = skipped.get("no_reward", 0) + 1
            continue
        turn = by_key.get(row.key)
        if turn is None:
            reason = (
                "k_abstractions_in_one_reply"
                if "abstractions" in by_key
                else "abstraction_turn_missing"
            )
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        records.append(
            _rl(
                _messages(turn),
                turn,
                row.reward,
                run_id,
                abstraction=row.key,
                leaked=row.leaked,
                improvement=row.improvement,
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


def follows_format(turn: Turn) -> bool:
    """M500's format check for one turn: its role's parser could read it, and a solver's
    solution gives its final answer in ``\\boxed{}``. (M500 also wants ``<think>`` tags, which
    only reasoning models write.)"""
    if not turn.parse_ok:
        return False
    return turn.role != "solver" or last_boxed(turn.completion) is not None


def reached_consensus(turns: Sequence[Turn], critics_checks: Sequence[dict[str, Any]]) -> bool:
    """M1's consensus: the critics' check of the discussion's last solution (the ``critics``
    decisions the discussion records) found nobody disagreeing. Every solution written must
    have had its check; one cut short by the token budget was never agreed on."""
    solutions = sum(turn.node == "solve" for turn in turns)
    checked = {(check.get("round"), check.get("inner_turn")) for check in critics_checks}
    if not solutions or len(checked) < solutions:
        return False
    last = critics_checks[-1]
    return last.get("disagree") == 0 and last.get("agree", 0) > 0


def m1_sft_records(
    run: Run,
    turns: Sequence[Turn],
    skipped: dict[str, int],
    *,
    require_format: bool = False,
    roles: Sequence[str] = M500_ROLES,
) -> list[SFTExample]:
    """Every answered turn of a discussion by one of ``roles`` (M500's by default) as a
    ShareGPT chat (M500's ``messages`` per role call): what the agent saw, then what it said;
    with ``require_format``, only the turns that follow their role's format."""
    records: list[SFTExample] = []
    for turn in turns:
        if turn.role not in roles:
            skipped["not_an_m500_role"] = skipped.get("not_an_m500_role", 0) + 1
            continue
        if turn.error or not turn.completion.strip():
            skipped["empty_turn"] = skipped.get("empty_turn", 0) + 1
            continue
        if require_format and not follows_format(turn):
            skipped["malformed_turn"] = skipped.get("malformed_turn", 0) + 1
            continue
        records.append(
            SFTExample(
                messages=[*_messages(turn), ChatMessage(role="assistant", content=turn.completion)],
                id=f"{run.id}/{turn.key}",
                meta={"run_id": run.id, "turn": turn.key, "role": turn.role, "model": turn.model},
            )
        )
    return records


@dataclass(frozen=True)
class StepLabel:
    """The ProcessBench label of the solution a judge run judged, and where it came from."""

    evaluation: str
    problem_id: str
    first_error_step: int


def verifier_accuracy(predicted: int | None, label: int) -> float:
    """FlexiVe's accuracy reward for a verifier trained on first-error labels: 1 for the
    labelled step (-1 for a correct solution), 0.5 for the right verdict (an error, or none)
    at the wrong step, 0 for the wrong verdict or no readable index."""
    if predicted is None:
        return 0.0
    if predicted == label:
        return 1.0
    return 0.5 if (predicted == -1) == (label == -1) else 0.0


def verifier_length_penalty(tokens: int, label: int) -> float:
    """FlexiVe's length shaping (<= 0) of a judgment of ``tokens`` generated tokens: on a
    correct solution (label -1) min(1, (L - 50) / 100) beyond 50 tokens; on an erroneous one
    min(1, (50 - L) / 50) below 50 tokens and min(1, (L - 512) / 512) beyond 512. A short
    "looks correct", a localized error explained at medium length.

    Here the fast prompt asks for the bare index (:data:`roles.sdv.VERIFY_MODE_INSTRUCTION`),
    so nearly every fast judgment of an erroneous solution is under 50 tokens and pays up to
    0.9; within a group that favours the longer, explained localizations, as FlexiVe's
    shaping does."""
    if label == -1:
        return -min(1.0, (tokens - 50) / 100) if tokens > 50 else 0.0
    if tokens < 50:
        return -min(1.0, (50 - tokens) / 50)
    if tokens > 512:
        return -min(1.0, (tokens - 512) / 512)
    return 0.0


def verifier_reward(predicted: int | None, label: int, completion_tokens: int) -> float:
    """FlexiVe's GRPO reward: :func:`verifier_accuracy` plus :func:`verifier_length_penalty`
    of the judgment's generated tokens."""
    return verifier_accuracy(predicted, label) + verifier_length_penalty(completion_tokens, label)


def verifier_records(
    run: Run, label: StepLabel, turns: Sequence[Turn], skipped: dict[str, int]
) -> list[RLExample]:
    """Every fast-mode judgment of a labelled ``process_judge`` run, rewarded against the
    label. The group is the run: the judgments one model sampled from one prompt (the problem
    and its steps as the judge saw them), as FlexiVe's GRPO samples one prompt; judgments of
    the same solution by other runs (another round's adapter) are another policy's. A slow-mode
    run is skipped (``slow_mode``, one per judgment): FlexiVe trains the fast mode only."""
    steps = list(run.config.get("steps") or [])
    mode = run.config.get("mode", "slow")
    judgments = [turn for turn in turns if turn.role == "verifier"]
    if mode != "fast":
        skipped["slow_mode"] = skipped.get("slow_mode", 0) + len(judgments)
        return []
    rebuilt = sdv_roles.verifier_messages(run.problem, steps, mode)
    group = f"{label.problem_id}/{run.id}"
    records: list[RLExample] = []
    for turn in judgments:
        if turn.error or not turn.completion.strip():
            skipped["empty_turn"] = skipped.get("empty_turn", 0) + 1
            continue
        predicted = sdv_roles.parse_check(turn.completion, len(steps)).first_wrong
        accuracy = verifier_accuracy(predicted, label.first_error_step)
        penalty = verifier_length_penalty(turn.completion_tokens, label.first_error_step)
        records.append(
            _rl(
                _prompt(turn, rebuilt),
                turn,
                accuracy + penalty,
                group,
                evaluation=label.evaluation,
                problem_id=label.problem_id,
                label=label.first_error_step,
                predicted=predicted,
                mode=mode,
                completion_tokens=turn.completion_tokens,
                accuracy=accuracy,
                length_penalty=penalty,
            )
        )
    return records


def group_signal(records: Sequence[RLExample]) -> tuple[int, int]:
    """(groups, groups without signal) of RL records. A group has signal when one of its
    records carries a fixed nonzero advantage, or one carries none (the trainer computes it
    from the group) and the group's rewards differ."""
    groups: dict[str, list[RLExample]] = {}
    for record in records:
        groups.setdefault(record.group_id, []).append(record)

    def has_signal(members: list[RLExample]) -> bool:
        if any(r.advantage for r in members):
            return True
        computed = any(r.advantage is None for r in members)
        return computed and len({r.reward for r in members}) > 1

    return len(groups), sum(not has_signal(members) for members in groups.values())


async def step_labels(store: Store) -> dict[str, StepLabel]:
    """Run id -> label, for every judge run a critic evaluation made (its items hold the
    earliest wrong step, or -1, as their reference)."""
    labels: dict[str, StepLabel] = {}
    for evaluation in await evaluations.list_evaluations(store, limit=1_000_000):
        if evaluation.kind != CRITIC_EVALUATION:
            continue
        for item in await evaluations.evaluation_items(store, evaluation.id):
            try:
                first_error = int(item.reference or "")
            except ValueError:
                continue
            if item.run_id is not None:
                labels[item.run_id] = StepLabel(evaluation.name, item.problem_id, first_error)
    return labels


async def _critics_checks(store: Store, run_id: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    after = 0
    while True:
        events = await store.events_after(run_id, after)
        if not events:
            return checks
        checks += [
            e.payload for e in events if e.type == "decision" and e.payload.get("by") == "critics"
        ]
        after = events[-1].id


def _reference(run: Run) -> str | None:
    reference = (run.config or {}).get("reference_answer")
    return None if reference is None else str(reference)


def _is_correct(run: Run) -> bool:
    reference = _reference(run)
    return reference is not None and answers_match(run.answer, reference).correct


async def _source_runs(store: Store, kind: str, filters: ExportFilters) -> list[Run]:
    pattern = filters.pattern or DEFAULT_PATTERN.get(kind)
    runs = await store.list_runs(
        limit=filters.limit or 1_000_000,
        pattern=pattern,
        status="succeeded",
        created_after=filters.since,
    )
    if filters.run_ids is not None:
        wanted = set(filters.run_ids)
        runs = [run for run in runs if run.id in wanted]
    return sorted(runs, key=lambda run: (run.created_at, run.id))


async def build_records(
    store: Store, kind: str, filters: ExportFilters, skipped: dict[str, int]
) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    sources: list[str] = []
    labels = await step_labels(store) if kind == "verifier" else {}
    for run in await _source_runs(store, kind, filters):
        if kind == "m1-sft":
            if filters.only_correct and not _is_correct(run):
                reason = "no_reference" if _reference(run) is None else "not_correct"
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            turns = await store.turns(run.id)
            if filters.require_consensus and not reached_consensus(
                turns, await _critics_checks(store, run.id)
            ):
                skipped["no_consensus"] = skipped.get("no_consensus", 0) + 1
                continue
            made: list[Any] = m1_sft_records(
                run,
                turns,
                skipped,
                require_format=filters.require_format,
                roles=(*M500_ROLES, "ceo") if filters.include_ceo else M500_ROLES,
            )
        elif kind == "verifier":
            label = labels.get(run.id)
            if label is None:
                skipped["no_label"] = skipped.get("no_label", 0) + 1
                continue
            made = verifier_records(run, label, await store.turns(run.id), skipped)
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
                made = rlad_abstraction_records(run.id, rows, await store.turns(run.id), skipped)
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
    # pyarrow takes the columns from the first row: a field only later records carry (token
    # ids, an advantage) would be dropped, so every row names every column.
    columns = list(dict.fromkeys(name for row in rows for name in row))
    rows = [{name: row.get(name) for name in columns} for row in rows]
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
    groups: int | None = None
    silent: int | None = None
    if kind != "m1-sft":
        groups, silent = group_signal([r for r in records if isinstance(r, RLExample)])
    manifest = Manifest(
        kind=kind,  # type: ignore[arg-type]
        created_at=datetime.now(UTC),
        filters=filters,
        source_runs=sources,
        records=len(records),
        skipped=skipped,
        groups=groups,
        no_signal_groups=silent,
        data_sha256=dataset_hash(data),
        files=files,
    )
    (out_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest
