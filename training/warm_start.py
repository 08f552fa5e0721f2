"""Round-0 data: SFT sets that teach each self-play role its format before its first game.

SPC's RL starts from a round-0 SFT checkpoint of both players and mixes that SFT set into
every RL step (0.15 x NLL); RLAD warm-starts its abstraction player by SFT. Both papers write
that data with a stronger model (SPC: GPT-4 rewrites PRM800K step pairs, R1-Distill-7B
critiques condensed by GPT-4o; RLAD: o4-mini summarizes solution traces). This module builds it
from what thinktank itself can produce, as ``thinktank train sft`` reads it (``SFTExample``):

SPC, from the step-labelled solutions of ``gen:step-errors`` (``training/step_errors.py``).
Problem i is generated twice, with every step right and with one slipped step (the generator
draws the problem apart from the slip, so both are the same problem), so each slip is known:
which step, the computation in it, the result it states and the one it should state.

- ``critic.jsonl``: single-step probes in the critic's own prompt (``roles.spc.critic_messages``:
  the problem, the steps before one step, and that step), two per problem: the slipped step,
  labelled ``Incorrect``, and the untouched step at its place after the same prefix, labelled
  ``Correct`` (SPC's "paired samples"), so verdicts are balanced. The reply is the critic's
  three parts (a summary of the partial solution, a critique of the last step, the verdict
  in ``<Answer>...</Answer>``). ``template`` targets are written from the known computation: the
  summary lists the prefix's computations, the critique redoes the step's and compares it with
  what the step states. ``teacher`` targets are a local model's own critiques in that prompt,
  rejection-sampled: a probe keeps the first of its samples whose verdict
  (``parse_critic_verdict``) equals the label and whose critique names the step's right result
  (a right verdict reached by wrong arithmetic is not kept), and a probe none of whose samples
  passes is left out (counted in the manifest by the reason).
- ``sneaky.jsonl``: the sneaky generator's prompt (``roles.spc.sneaky_messages``: problem,
  prefix, correct step) and a reply in ``parse_sneaky_rewrite``'s format: the error type (every
  slip the generator makes is an arithmetic one, type 2, "Calculation error"), a plan naming
  the change (the result stated instead of the right one), and the slipped step, which the
  later steps would then use. Always template: the mutation is known exactly.

RLAD, from problems with reference answers (by default ``gen:mixed``, the campaign's):

- ``abstraction.jsonl``: the abstraction player's prompt (``roles.rlad.abstraction_messages``)
  and one ``<abstraction>`` reply. ``template`` abstractions state the procedure for the
  generator family and form a problem came from (inclusion-exclusion for "divisible by a or
  b", repeated squaring for a power modulo m, ...): knowledge, never the problem's numbers.
  ``teacher`` abstractions are a local model's replies to that prompt, read by
  ``parse_abstraction``. Either kind is kept only when the leak filter (``check_leak``) passes
  it: it must not contain the reference answer nor state a final answer.

Departures, and why: the papers' warm-start writers are much stronger models than anything
that runs here, and the data they start from (PRM800K's human step labels, solution traces of
hard problems) is not in the package; the generator's known slips are exact labels at no cost.
Template targets teach the format and the verdict, not the breadth of a strong model's
critiques; a teacher's critiques are only as good as the teacher, which is why they are
filtered by the label. RLAD's warm start also keeps an abstraction only when it raises the
solver's accuracy over no abstraction; that filter needs solver roll-outs per abstraction and
is not done here (the campaign's games measure it from round 1 on); the leak filter is.

Problems whose text is in ``exclude`` (by default the campaigns' held-out evaluation sets) are
left out, so round-0 data never contains a problem a campaign evaluates on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.model import ModelRequest, SamplingParams
from agents.model_map import ModelRouter
from execution.batches import bounded
from roles import rlad as rlad_roles
from roles import spc as spc_roles
from roles.messages import ChatMessage
from training.datasets import SFTExample, dataset_hash, read_jsonl, write_jsonl
from training.generators import MAX_COUNT, MAX_DIFFICULTY
from training.problem import Problem, ProblemSourceError
from training.problems import load_problems
from training.step_errors import STEP_ERRORS, step_errors

Recipe = Literal["spc", "rlad"]
Method = Literal["template", "teacher"]

DEFAULT_EXCLUDE: dict[str, str] = {
    "spc": f"gen:{STEP_ERRORS}?n=200&seed=1000",
    "rlad": "gen:mixed?difficulty=1&n=200&seed=1000",
}
"""Problems left out by default: the first 200 of the sets campaigns evaluate on (seed 1000)."""

CALCULATION_ERROR = 2
"""The sneaky generator's error type of every slip ``gen:step-errors`` makes (1-based)."""


class WarmStartError(ValueError):
    """Round-0 data that cannot be built as asked, with a reason a user can act on."""


class WarmStartConfig(BaseModel):
    """What round-0 data to build; every field is a flag of ``thinktank data warm-start``."""

    model_config = ConfigDict(extra="forbid")

    recipe: Recipe = Field(description="spc (critic and sneaky generator) or rlad (abstractions)")
    n: int = Field(200, ge=1, le=MAX_COUNT, description="problems to build from")
    seed: int = Field(7, description="the generator's seed (keep it apart from evaluations')")
    difficulty: int = Field(
        2, ge=1, le=MAX_DIFFICULTY, description="spc: gen:step-errors difficulty"
    )
    problems: str = Field(
        "gen:mixed?difficulty=1",
        description="rlad: problems with reference answers (a file, or a gen: spec)",
    )
    teacher: str | None = Field(
        None,
        description="logical model that writes the critic's (spc) or the abstractions' (rlad) "
        "targets, filtered; none: deterministic templates",
    )
    samples: int = Field(4, ge=1, le=64, description="teacher: samples per item")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="teacher: sampling temperature")
    max_tokens: int = Field(512, ge=16, le=8192, description="teacher: tokens per sample")
    concurrency: int = Field(4, ge=1, le=256, description="teacher: calls at once")
    exclude: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="problem sources whose problems are left out (default: the campaigns' "
        "held-out evaluation set of the recipe)",
    )

    @property
    def method(self) -> Method:
        return "template" if self.teacher is None else "teacher"

    def excluded_sources(self) -> list[str]:
        return self.exclude or [DEFAULT_EXCLUDE[self.recipe]]


class WarmStartFile(BaseModel):
    role: str = Field(description="the logical model the file trains (critic, sneaky, ...)")
    file: str
    records: int
    data_sha256: str
    prompt: str = Field(description="the role's prompt the records use")
    target: str = Field(description="what the assistant message is")


class WarmStartManifest(BaseModel):
    recipe: Recipe
    method: Method
    teacher: str | None
    created_at: datetime
    source: str = Field(description="where the problems came from")
    seed: int
    problems: int = Field(description="problems read (before exclusions and skips)")
    excluded: list[str]
    datasets: list[WarmStartFile]
    skipped: dict[str, int] = Field(default_factory=dict, description="why items were left out")
    notes: list[str] = Field(default_factory=list)

    def dataset(self, role: str) -> WarmStartFile:
        return next(d for d in self.datasets if d.role == role)


Progress = Callable[[int, int], None]


def _skip(skipped: dict[str, int], reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def _excluded_texts(sources: Sequence[str]) -> set[str]:
    texts: set[str] = set()
    for source in sources:
        try:
            problems = load_problems(source)
        except ProblemSourceError as exc:
            raise WarmStartError(f"--exclude {source!r}: {exc}") from None
        texts.update(_normalized(p.problem) for p in problems)
    return texts


# --- SPC ---------------------------------------------------------------------------------

_FACT = re.compile(r"(\(-\d+\)|\d+) ([-+*/]) (\(-\d+\)|\d+) = (-?\d+)")
"""One computation as ``gen:step-errors`` writes it: ``12 - (-3) = 15`` (a negative operand in
brackets)."""


@dataclass(frozen=True)
class Fact:
    """The computation a step states: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int

    @property
    def expression(self) -> str:
        return f"{_operand(self.left)} {self.op} {_operand(self.right)}"

    def value(self) -> int | None:
        """What the computation really gives (None for an uneven division)."""
        a, b = self.left, self.right
        if self.op == "/":
            return a // b if b != 0 and a % b == 0 else None
        return {"+": a + b, "-": a - b, "*": a * b}[self.op]


def _operand(n: int) -> str:
    return f"({n})" if n < 0 else str(n)


def step_fact(step: str) -> Fact | None:
    """The computation in a ``gen:step-errors`` step (its first ``a op b = r``), if any."""
    match = _FACT.search(step)
    if match is None:
        return None
    left, op, right, result = match.groups()
    return Fact(int(left.strip("()")), op, int(right.strip("()")), int(result))


@dataclass(frozen=True)
class SlippedStep:
    """One problem's known slip: the shared prefix, the right step and the slipped one."""

    problem: Problem
    index: int
    prefix: list[str]
    right_step: str
    wrong_step: str
    fact: Fact
    """the right step's computation; the slipped step states ``stated`` for it instead"""
    stated: int


def slipped_steps(
    config: WarmStartConfig, skipped: dict[str, int]
) -> tuple[list[SlippedStep], int]:
    """Every usable slip of the config's ``gen:step-errors`` problems, and how many were read.

    A problem is left out (and counted) when it is in an excluded set, or when its slip cannot
    be read back from the text exactly as the generator's record says it (never guessed)."""
    excluded = _excluded_texts(config.excluded_sources())
    items: list[SlippedStep] = []
    for index in range(config.n):
        right = step_errors(index, config.difficulty, config.seed, 0.0)
        wrong = step_errors(index, config.difficulty, config.seed, 1.0)
        if _normalized(right.problem) in excluded:
            _skip(skipped, "excluded")
            continue
        slip = wrong.meta.get("slip") or {}
        k = slip.get("step")
        if (
            wrong.problem != right.problem
            or not isinstance(k, int)
            or not 0 <= k < len(right.solution_steps)
            or wrong.solution_steps[:k] != right.solution_steps[:k]
        ):
            _skip(skipped, "slip_unreadable")
            continue
        fact, slipped = step_fact(right.solution_steps[k]), step_fact(wrong.solution_steps[k])
        if (
            fact is None
            or slipped is None
            or fact.value() != fact.result
            or fact.result != slip.get("right")
            or slipped.result != slip.get("stated")
            or (slipped.left, slipped.op, slipped.right) != (fact.left, fact.op, fact.right)
        ):
            _skip(skipped, "slip_unreadable")
            continue
        items.append(
            SlippedStep(
                problem=right,
                index=k,
                prefix=list(right.solution_steps[:k]),
                right_step=right.solution_steps[k],
                wrong_step=wrong.solution_steps[k],
                fact=fact,
                stated=slipped.result,
            )
        )
    return items, config.n


def _summary(prefix: Sequence[str]) -> str:
    facts = [step_fact(step) for step in prefix]
    if not prefix:
        return "No steps have been taken yet: the last step is the solution's first computation."
    done = [f"{f.expression} = {f.result}" for f in facts if f is not None]
    steps = "one step" if len(prefix) == 1 else f"{len(prefix)} steps"
    if not done:
        return f"The partial solution has taken {steps} towards the answer."
    return (
        f"The partial solution works towards the answer one computation per step; in {steps} "
        f"it has found {', then '.join(done)}."
    )


def critic_template(item: SlippedStep, expected: spc_roles.Verdict) -> str:
    """The critic's reply to a probe, written from the known computation."""
    fact = item.fact
    if expected == "correct":
        critique = (
            f"The last step computes {fact.expression} and states {fact.result}. Checking it: "
            f"{fact.expression} = {fact.result}, so the result is right, and what the step "
            "concludes from it follows."
        )
        verdict = "<Answer>Correct</Answer>"
    else:
        off = abs(item.stated - fact.result)
        critique = (
            f"The last step computes {fact.expression} and states {item.stated}. Checking it: "
            f"{fact.expression} = {fact.result}, not {item.stated}, so the step's result is off "
            f"by {off}, and every later step that uses it inherits the error."
        )
        verdict = "<Answer>Incorrect</Answer>"
    return f"Summary: {_summary(item.prefix)}\n\nCritique: {critique}\n\n{verdict}"


def sneaky_template(item: SlippedStep) -> str:
    """The sneaky generator's reply: the known slip, in ``parse_sneaky_rewrite``'s format."""
    name = spc_roles.ERROR_TYPES[CALCULATION_ERROR - 1].split(":")[0]
    fact = item.fact
    off = abs(item.stated - fact.result)
    plan = (
        f"State {item.stated} instead of {fact.result} as the result of {fact.expression} "
        f"(off by {off}), keeping the step's wording, so that every later step builds on the "
        "slip and the final answer comes out wrong."
    )
    return (
        f"### Error Type: {CALCULATION_ERROR}. {name}\n"
        f"### Plan: {plan}\n"
        f"### Incorrect Step: {item.wrong_step}"
    )


def _chat(prompt: list[ChatMessage], reply: str) -> list[ChatMessage]:
    return [*prompt, ChatMessage(role="assistant", content=reply)]


@dataclass(frozen=True)
class CriticProbe:
    item: SlippedStep
    expected: spc_roles.Verdict

    @property
    def step(self) -> str:
        return self.item.right_step if self.expected == "correct" else self.item.wrong_step

    def messages(self) -> list[ChatMessage]:
        return spc_roles.critic_messages(self.item.problem.problem, self.item.prefix, self.step)

    def record(self, reply: str, method: Method) -> SFTExample:
        item = self.item
        return SFTExample(
            id=f"{item.problem.id}/critic/{self.expected}",
            messages=_chat(self.messages(), reply),
            meta={
                "role": "critic",
                "problem_id": item.problem.id,
                "step_index": item.index,
                "expected": self.expected,
                "method": method,
            },
        )


def sneaky_record(item: SlippedStep) -> SFTExample:
    prompt = spc_roles.sneaky_messages(item.problem.problem, item.prefix, item.right_step)
    return SFTExample(
        id=f"{item.problem.id}/sneaky",
        messages=_chat(prompt, sneaky_template(item)),
        meta={
            "role": "sneaky",
            "problem_id": item.problem.id,
            "step_index": item.index,
            "error_type_id": CALCULATION_ERROR,
            "original_step": item.right_step,
            "right": item.fact.result,
            "stated": item.stated,
            "method": "template",
        },
    )


async def _sample(
    models: ModelRouter,
    config: WarmStartConfig,
    messages: list[ChatMessage],
    role: str,
    seed: int,
) -> list[str]:
    assert config.teacher is not None
    params = SamplingParams(
        n=config.samples,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        seed=seed,
    )
    response = await models.get(config.teacher).generate(
        ModelRequest(messages=messages, params=params, tags={"agent": "warm-start", "role": role})
    )
    return [completion.text for completion in response.completions]


def names_number(text: str, number: int) -> bool:
    """Whether ``text`` states ``number`` as a number of its own (``50`` not in ``150``)."""
    return re.search(rf"(?<![\d.]){re.escape(str(number))}(?![\d]|\.\d)", text) is not None


async def _teacher_critiques(
    models: ModelRouter,
    config: WarmStartConfig,
    probes: Sequence[CriticProbe],
    skipped: dict[str, int],
    on_progress: Progress | None,
) -> list[SFTExample]:
    """Rejection sampling: each probe keeps its first sample whose verdict is the label and
    whose critique names the step's right result (a right verdict reached by wrong arithmetic
    would teach that arithmetic)."""
    done = 0

    async def one(position: int) -> SFTExample | None:
        nonlocal done
        probe = probes[position]
        replies = await _sample(
            models, config, probe.messages(), "critic", config.seed * 100_003 + position
        )
        done += 1
        if on_progress is not None:
            on_progress(done, len(probes))
        faults: set[str] = set()
        for reply in replies:
            verdict = spc_roles.parse_critic_verdict(reply).verdict
            if verdict is None:
                faults.add("unparsed")
            elif verdict != probe.expected:
                faults.add("wrong_verdict")
            elif not names_number(reply, probe.item.fact.result):
                faults.add("misses_result")
            else:
                return probe.record(reply.strip(), "teacher")
        # the fault nearest to a keepable critique names the probe's
        fault = next(f for f in ("misses_result", "wrong_verdict", "unparsed") if f in faults)
        _skip(skipped, f"teacher_{fault}_{probe.expected}")
        return None

    kept = await bounded(range(len(probes)), one, concurrency=config.concurrency)
    return [record for record in kept if record is not None]


async def _build_spc(
    config: WarmStartConfig,
    out_dir: Path,
    models: ModelRouter | None,
    skipped: dict[str, int],
    on_progress: Progress | None,
) -> tuple[list[WarmStartFile], int, str]:
    items, read = slipped_steps(config, skipped)
    if not items:
        raise WarmStartError(
            f"none of the {read} problems is usable ({_reasons(skipped)}): raise --n or change "
            "--seed"
        )
    verdicts: tuple[spc_roles.Verdict, ...] = ("incorrect", "correct")
    probes = [CriticProbe(item, expected) for item in items for expected in verdicts]
    if config.teacher is None:
        critic = [
            probe.record(critic_template(probe.item, probe.expected), "template")
            for probe in probes
        ]
    else:
        assert models is not None
        critic = await _teacher_critiques(models, config, probes, skipped, on_progress)
        if not critic:
            raise WarmStartError(
                f"the teacher {config.teacher!r} got none of the {len(probes)} probes right "
                f"({_reasons(skipped)}): try more --samples, a larger --max-tokens, or another "
                "teacher"
            )
    sneaky = [sneaky_record(item) for item in items]
    critic_target = (
        "template: summary, critique redoing the step's computation, <Answer> verdict"
        if config.teacher is None
        else f"{config.teacher}'s critique, kept when its <Answer> verdict equals the label "
        "and it names the step's right result"
    )
    files = [
        _write(out_dir, "critic", critic, "roles.spc.critic_messages", critic_target),
        _write(
            out_dir,
            "sneaky",
            sneaky,
            "roles.spc.sneaky_messages",
            "template: ### Error Type (2. Calculation error), ### Plan, ### Incorrect Step",
        ),
    ]
    source = f"gen:{STEP_ERRORS}?difficulty={config.difficulty}&n={config.n}&seed={config.seed}"
    return files, read, source


# --- RLAD --------------------------------------------------------------------------------


def _linear_abstraction(meta: dict[str, Any]) -> str:
    equations = meta.get("equations") or []
    if len(equations) > 1:
        return (
            "Eliminate one unknown: scale the two equations so that one variable has the same "
            "coefficient in both, subtract them, solve the single equation that remains, then "
            "substitute back to find the other variable."
        )
    bracket = (
        "Expand any bracket first, multiplying every term inside it. "
        if any("(" in e for e in equations)
        else ""
    )
    return (
        f"{bracket}Collect the terms with the unknown on one side and the constants on the "
        "other, changing the sign of every term you move, then divide both sides by the "
        "unknown's coefficient; a root that is not an integer stays an exact reduced fraction."
    )


# Templates hold no digit: the leak filter drops an abstraction holding a number equal to the
# answer, and a template's "1" would leak every problem whose answer is 1.
_MODULAR = {
    "remainder": (
        "The remainder of n on division by m is n minus the largest multiple of m that does not "
        "exceed n; it is never negative and always less than m."
    ),
    "product_sum": (
        "Reduce each number modulo m before combining: (ab + c) mod m equals "
        "((a mod m)(b mod m) + (c mod m)) mod m, which keeps every product small."
    ),
    "power": (
        "Compute a power modulo m by repeated squaring, reducing after every multiplication; "
        "when m is prime and does not divide a, Fermat's little theorem lets you first reduce "
        "the exponent modulo m minus one."
    ),
    "congruence": (
        "To solve ax = b (mod p) for a prime p, multiply both sides by the inverse of a modulo "
        "p (from the extended Euclidean algorithm, or by Fermat's little theorem), and reduce "
        "the result to the least non-negative residue."
    ),
}
_COUNTING = {
    "choose": (
        "When the order of the chosen items does not matter, count n! / (k! (n - k)!); cancel "
        "the factorials before multiplying to keep the numbers small."
    ),
    "arrange": (
        "When order matters, fill the positions one at a time: n choices for the first, one "
        "fewer for the next, and so on for k positions, and multiply."
    ),
    "divisible_any": (
        "Use inclusion-exclusion: up to N there are floor(N/a) multiples of a and floor(N/b) of "
        "b, and the multiples of lcm(a, b) are counted twice, so subtract them once."
    ),
    "word_arrangements": (
        "Count the arrangements of all the letters as if they were distinct, (number of "
        "letters)!, then divide by k! for every letter that appears k times."
    ),
    "divisible_none": (
        "Count the complement with inclusion-exclusion: from N subtract the multiples of each "
        "divisor, add back the multiples of the lcm of each pair, subtract those of the lcm of "
        "all three."
    ),
}


def template_abstraction(problem: Problem) -> str | None:
    """The procedure for the generator family (and form) a problem came from; None for a
    problem no generator made."""
    meta = problem.meta
    kind = meta.get("kind")
    if kind == "arithmetic":
        fractions = (
            " Keep divisions exact as fractions; never round."
            if "/" in str(meta.get("expression", ""))
            else ""
        )
        return (
            "Evaluate the innermost brackets first, then multiplication and division from left "
            "to right, then addition and subtraction from left to right, writing each "
            "intermediate result down; a minus sign before a bracket flips every sign inside."
            + fractions
        )
    if kind == "linear":
        return _linear_abstraction(meta)
    if kind == "modular":
        return _MODULAR.get(str(meta.get("form")))
    if kind == "counting":
        return _COUNTING.get(str(meta.get("form")))
    if kind == "logic":
        return (
            "Try each person as a knight or a knave: a knight's statement must be true and a "
            "knave's false. Follow one assumption through every statement, discard it at the "
            "first contradiction, and answer with the assignment that survives."
        )
    return None


def abstraction_record(problem: Problem, abstraction: str, method: Method) -> SFTExample:
    reply = f"<abstraction>{abstraction}</abstraction>"
    return SFTExample(
        id=f"{problem.id}/abstraction",
        messages=_chat(rlad_roles.abstraction_messages(problem.problem), reply),
        meta={
            "role": "abstraction",
            "problem_id": problem.id,
            "kind": problem.meta.get("kind"),
            "method": method,
        },
    )


def abstraction_fault(problem: Problem, text: str | None) -> str | None:
    """Why an abstraction cannot be kept (none read, or it leaks the answer), or None."""
    if not text:
        return "no_abstraction"
    if rlad_roles.check_leak(text, problem.answer).leaked:
        return "leaks_answer"
    return None


async def _teacher_abstractions(
    models: ModelRouter,
    config: WarmStartConfig,
    problems: Sequence[Problem],
    skipped: dict[str, int],
    on_progress: Progress | None,
) -> list[SFTExample]:
    """Each problem keeps its teacher's first sample that parses and does not leak."""
    done = 0

    async def one(position: int) -> SFTExample | None:
        nonlocal done
        problem = problems[position]
        replies = await _sample(
            models,
            config,
            rlad_roles.abstraction_messages(problem.problem),
            "abstraction_player",
            config.seed * 100_003 + position,
        )
        done += 1
        if on_progress is not None:
            on_progress(done, len(problems))
        faults: set[str] = set()
        for reply in replies:
            text = rlad_roles.parse_abstraction(reply).abstraction
            fault = abstraction_fault(problem, text)
            if fault is None:
                assert text is not None
                return abstraction_record(problem, text, "teacher")
            faults.add(fault)
        # counted as leaking when any sample leaked (the rest read as no abstraction)
        fault = "leaks_answer" if "leaks_answer" in faults else "no_abstraction"
        _skip(skipped, f"teacher_{fault}")
        return None

    kept = await bounded(range(len(problems)), one, concurrency=config.concurrency)
    return [record for record in kept if record is not None]


async def _build_rlad(
    config: WarmStartConfig,
    out_dir: Path,
    models: ModelRouter | None,
    skipped: dict[str, int],
    on_progress: Progress | None,
) -> tuple[list[WarmStartFile], int, str]:
    try:
        problems = load_problems(config.problems, limit=config.n, seed=config.seed)
    except ProblemSourceError as exc:
        raise WarmStartError(f"--problems {config.problems!r}: {exc}") from None
    excluded = _excluded_texts(config.excluded_sources())
    usable: list[Problem] = []
    for problem in problems:
        if _normalized(problem.problem) in excluded:
            _skip(skipped, "excluded")
        elif problem.answer is None:
            _skip(skipped, "no_reference")  # the leak filter needs the answer
        else:
            usable.append(problem)
    if config.teacher is None:
        records = []
        for problem in usable:
            text = template_abstraction(problem)
            if text is None:
                _skip(skipped, "no_template")
                continue
            fault = abstraction_fault(problem, text)
            if fault is not None:
                _skip(skipped, fault)
                continue
            records.append(abstraction_record(problem, text, "template"))
        if usable and not records and skipped.get("no_template") == len(usable):
            raise WarmStartError(
                f"template abstractions exist for generated problems (gen:mixed and its kinds) "
                f"only; {config.problems!r} has none: name a --teacher"
            )
        target = "template: the procedure of the problem's generator family, leak-filtered"
    else:
        assert models is not None
        records = await _teacher_abstractions(models, config, usable, skipped, on_progress)
        target = f"{config.teacher}'s abstraction (parse_abstraction), leak-filtered"
    if not records:
        raise WarmStartError(
            f"no abstraction kept from {len(problems)} problems ({_reasons(skipped)})"
        )
    files = [_write(out_dir, "abstraction", records, "roles.rlad.abstraction_messages", target)]
    return files, len(problems), config.problems


# --- the whole build ---------------------------------------------------------------------


def _reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "nothing skipped"


def _write(
    out_dir: Path, role: str, records: list[SFTExample], prompt: str, target: str
) -> WarmStartFile:
    path = out_dir / f"{role}.jsonl"
    count = write_jsonl(path, records)
    read_jsonl(path, SFTExample)  # what `thinktank train sft` will read, read back now
    return WarmStartFile(
        role=role,
        file=path.name,
        records=count,
        data_sha256=dataset_hash(path),
        prompt=prompt,
        target=target,
    )


def _writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise WarmStartError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None


async def build_warm_start(
    config: WarmStartConfig,
    out_dir: Path,
    *,
    models: ModelRouter | None = None,
    on_progress: Progress | None = None,
) -> WarmStartManifest:
    """Write the recipe's round-0 SFT files and ``manifest.json`` into ``out_dir``.

    ``models`` answers the teacher (needed when ``config.teacher`` is set);
    ``on_progress(done, total)`` hears of each teacher call.
    """
    if config.teacher is not None and models is None:
        raise WarmStartError("a teacher needs models to answer it")
    _writable(out_dir)
    skipped: dict[str, int] = {}
    build = _build_spc if config.recipe == "spc" else _build_rlad
    files, read, source = await build(config, out_dir, models, skipped, on_progress)
    notes = []
    if config.recipe == "rlad":
        notes.append(
            "abstractions are leak-filtered only; RLAD also keeps an abstraction only when it "
            "raises the solver's accuracy, which is not measured here"
        )
    manifest = WarmStartManifest(
        recipe=config.recipe,
        method=config.method,
        teacher=config.teacher,
        created_at=datetime.now(UTC),
        source=source,
        seed=config.seed,
        problems=read,
        excluded=config.excluded_sources(),
        datasets=files,
        skipped=skipped,
        notes=notes,
    )
    (out_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest
