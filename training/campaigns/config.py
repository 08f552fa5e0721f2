"""What a campaign is: its kinds, its settings, its steps' order, its errors and what a driver
works with."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.backends.local.catalog import DEFAULT_MODEL
from agents.model_map import ModelRouter
from agents.paths import data_dir
from graphs.options import explain
from graphs.patterns import get_pattern
from store import model_versions
from store.runs import Store
from store.tables.campaigns import Campaign
from training import jobs
from training.config import RLConfig, SFTConfig
from training.critic_eval import CriticEvalConfig
from training.games import FILLED_FROM_PROBLEM
from training.step_probe_eval import StepProbeConfig
from training.warm_start import WarmStartConfig

log = logging.getLogger(__name__)


CampaignKind = Literal["spc", "rlad"]
ROUND_STEPS = ("play", "export", "train", "serve", "evaluate")
BASELINE_STEPS = ("evaluate",)
HEARTBEAT_S = 10.0
TRAIN_ATTEMPTS = 2
"""A failed training is launched again once (it resumes from its checkpoint); then the
campaign fails with the trainer's reason."""


@dataclass(frozen=True)
class KindSpec:
    pattern: str
    recipe: str
    eval_default: str
    exports: dict[str, str]
    """export kind -> the game config field naming the logical model it trains (or a name)."""


KINDS: dict[str, KindSpec] = {
    "spc": KindSpec(
        pattern="spc_game",
        recipe="spc",
        eval_default="gen:step-errors?n=16&seed=1000",
        exports={"spc-critic": "critic_model", "spc-sneaky": "sneaky_model"},
    ),
    "rlad": KindSpec(
        pattern="rlad",
        recipe="rlad",
        eval_default="gen:mixed?difficulty=1&n=16&seed=1000",
        exports={"rlad-abstraction": "abstraction", "rlad-solution": "policy"},
    ),
}

WARM_START_EXPORTS: dict[str, dict[str, str]] = {
    "spc": {"critic": "spc-critic", "sneaky": "spc-sneaky"},
    "rlad": {"abstraction": "rlad-abstraction"},
}
"""warm-start file role -> the export kind whose model it trains first."""

TRAIN_FILLED = frozenset({"data", "base", "name", "role", "recipe", "base_adapter", "parent"})
EVAL_FILLED = frozenset(
    {"adapters", "source", "limit", "name", "concurrency", "options", "judge_model", "steps"}
    | set(FILLED_FROM_PROBLEM)
)
MAX_TRAIN_STEPS = 10_000
"""Most optimizer steps one training of a campaign takes (``train.max_steps``)."""
MAX_TRAIN_EPOCHS = 10.0
"""Most passes one training of a campaign makes over its round's data (``train.epochs``)."""
PROBE_OPTIONS = {
    "probe_max_tokens": "max_tokens",
    "probe_correct_per_problem": "correct_per_problem",
    "probe_reask": "reask",
}
"""SPC ``eval`` options of the step probes (:mod:`training.step_probe_eval`) -> its field."""
SPC_EVAL_SWITCHES = frozenset({"processbench", *PROBE_OPTIONS})
"""SPC ``eval`` options that are the campaign's, not the ProcessBench judge runs'."""


class CampaignError(ValueError):
    """A campaign that cannot be started as asked, or a step that cannot go on."""


class StepPending(Exception):
    """The step waits on something outside this process (a training job); ask again."""

    def __init__(self, reason: str, retry_in_s: float = 5.0) -> None:
        super().__init__(reason)
        self.retry_in_s = retry_in_s


class CampaignConfig(BaseModel):
    """What a campaign plays, trains and evaluates. Every field is a flag of
    ``thinktank campaign start`` and a field of ``POST /v1/campaigns``."""

    model_config = ConfigDict(extra="forbid")

    kind: CampaignKind = Field(description="spc (critic vs sneaky generator) or rlad")
    rounds: int = Field(2, ge=1, le=1000, description="play-train-evaluate rounds")
    games_per_round: int = Field(8, ge=1, le=100_000, description="games played each round")
    problems: str = Field(
        "gen:mixed?difficulty=1&n=1000",
        description="the games' problems: a file of problems with answers, or a gen: spec; "
        "each round takes the next games_per_round of them",
    )
    eval_problems: str | None = Field(
        None,
        description="held-out problems to evaluate on (default: step-labelled "
        "gen:step-errors for spc, gen:mixed for rlad, seeded apart from the games)",
    )
    eval_limit: int = Field(16, ge=1, le=100_000, description="evaluation problems per round")
    baseline: bool = Field(True, description="evaluate the starting models first (round 0)")
    concurrency: int = Field(4, ge=1, le=256, description="games and evaluation runs at once")
    base: str = Field(
        DEFAULT_MODEL,
        description="the base model of roles that have no version yet (default: the model the "
        "embedded default serves, so its engine serves the adapters; another base model of "
        "`thinktank models base` such as 'smollm2', a model "
        "directory, or a registered model version to start from)",
    )
    game: dict[str, Any] = Field(
        default_factory=dict, description="options of every game run (spc_game or rlad)"
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="RL trainer options for every training (max_steps, lora_r, batch_size...)",
    )
    train_roles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="trainer options of one trained model, over train's: logical model name "
        "(spc: critic, sneaky; rlad: abstraction, policy) -> options",
    )
    balance: bool = Field(
        True,
        description="spc: from round 2 on, the games' critic is one version behind the sneaky "
        "generator's (the paper's balancing game: Sneaky-k plays Critic-(k-1)); rlad: unused",
    )
    warm_start: dict[str, Any] | None = Field(
        None,
        description="round 0 first builds SFT data for each trained role (the options of "
        "`thinktank data warm-start`: n, seed, teacher...; {} for its defaults) and trains "
        "each role's first version on it, as SPC's round-0 SFT and RLAD's warm start do; spc "
        "rounds then mix that data into every RL step (sft_data). null: start from the base",
    )
    warm_start_train: dict[str, Any] = Field(
        default_factory=dict,
        description="SFT trainer options of the warm-start trainings (epochs, max_steps, "
        "lora_r, learning_rate...)",
    )
    eval: dict[str, Any] = Field(
        default_factory=dict,
        description="options of the evaluation runs (max_tokens, mode, samples for spc; "
        "rlad run options for rlad)",
    )
    launcher: jobs.LaunchOptions = Field(
        default_factory=jobs.LaunchOptions, description="where training jobs run"
    )
    seed: int = Field(0, description="seed of generated problem sources")

    @model_validator(mode="after")
    def _options_are_valid(self) -> CampaignConfig:
        spec = KINDS[self.kind]
        filled = sorted({*FILLED_FROM_PROBLEM, "adapters", "round"} & self.game.keys())
        if filled:
            raise ValueError(f"game options {filled} are filled in by the campaign")
        try:
            get_pattern(spec.pattern).config_model.model_validate(
                {**self.game, "reference_answer": "0"}
            )
        except ValidationError as exc:
            raise ValueError(f"game options: {explain(exc, flags=False)}") from None
        self._train_options_are_valid("train options", self.train)
        trained = sorted(set(self.trained_models().values()))
        for model, options in self.train_roles.items():
            if model not in trained:
                raise ValueError(
                    f"train_roles: {model!r} is not a model this campaign trains "
                    f"({', '.join(trained)})"
                )
            self._train_options_are_valid(f"train_roles.{model}", options)
            self._train_options_are_valid(f"train_roles.{model}", self.train_options(model))
        self._warm_start_options_are_valid()
        self._eval_options_are_valid()
        return self

    def _warm_start_options_are_valid(self) -> None:
        if self.warm_start is None:
            if self.warm_start_train:
                raise ValueError("warm_start_train: there is no warm start (warm_start is null)")
            return
        if "recipe" in self.warm_start:
            raise ValueError("warm_start options ['recipe'] are filled in by the campaign")
        try:
            self.warm_start_config()
        except ValidationError as exc:
            raise ValueError(f"warm_start: {explain(exc, flags=False)}") from None
        what = "warm_start_train"
        filled = sorted(TRAIN_FILLED & self.warm_start_train.keys())
        if filled:
            raise ValueError(f"{what} {filled} are filled in by the campaign")
        try:
            sft = SFTConfig.model_validate({**self.warm_start_train, "data": "data.jsonl"})
        except ValidationError as exc:
            raise ValueError(f"{what}: {explain(exc, flags=False)}") from None
        if sft.max_steps is not None and sft.max_steps > MAX_TRAIN_STEPS:
            raise ValueError(f"{what}: max_steps must be at most {MAX_TRAIN_STEPS} in a campaign")
        if sft.epochs > MAX_TRAIN_EPOCHS:
            raise ValueError(f"{what}: epochs must be at most {MAX_TRAIN_EPOCHS:g} in a campaign")

    def warm_start_config(self) -> WarmStartConfig:
        """What round 0's warm start builds: ``warm_start``'s options for this campaign's
        recipe, its held-out evaluation problems left out of the data."""
        options = dict(self.warm_start or {})
        options.setdefault("exclude", [self.eval_source()])
        return WarmStartConfig.model_validate({**options, "recipe": self.kind})

    def _train_options_are_valid(self, what: str, options: dict[str, Any]) -> None:
        filled = sorted(TRAIN_FILLED & options.keys())
        if filled:
            raise ValueError(f"{what} {filled} are filled in by the campaign")
        try:
            rl = RLConfig.model_validate(
                {**options, "data": "data.jsonl", "recipe": KINDS[self.kind].recipe}
            )
        except ValidationError as exc:
            raise ValueError(f"{what}: {explain(exc, flags=False)}") from None
        # every round trains: a campaign's trainings are bounded, whoever starts it
        if rl.max_steps is not None and rl.max_steps > MAX_TRAIN_STEPS:
            raise ValueError(f"{what}: max_steps must be at most {MAX_TRAIN_STEPS} in a campaign")
        if rl.epochs > MAX_TRAIN_EPOCHS:
            raise ValueError(f"{what}: epochs must be at most {MAX_TRAIN_EPOCHS:g} in a campaign")

    def train_options(self, model: str) -> dict[str, Any]:
        """The trainer options of ``model``'s trainings: ``train``, then its ``train_roles``."""
        return {**self.train, **self.train_roles.get(model, {})}

    def _eval_options_are_valid(self) -> None:
        filled = sorted(EVAL_FILLED & self.eval.keys())
        if filled:
            raise ValueError(f"eval options {filled} are filled in by the campaign")
        try:
            if self.kind == "spc":
                self.critic_eval_config(adapters={}).judge_config(["a step"])
                self._probe_options_are_valid()
            else:
                get_pattern("rlad").config_model.model_validate({**self.game, **self.eval})
        except ValidationError as exc:
            raise ValueError(f"eval options: {explain(exc, flags=False)}") from None
        except ValueError as exc:  # process_judge's own options, explained by the evaluation
            raise ValueError(f"eval options: {exc}") from None

    def _probe_options_are_valid(self) -> None:
        if not isinstance(self.eval.get("processbench", True), bool):
            raise ValueError("processbench: true or false")
        try:
            self.step_probe_config(adapter=None)
        except ValidationError as exc:
            # named as the campaign's option (probe_max_tokens), not the probe's field
            fields = {field: option for option, field in PROBE_OPTIONS.items()}
            reasons = [
                f"{fields.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            ]
            raise ValueError("; ".join(reasons)) from None

    def critic_eval_config(
        self, *, adapters: dict[str, str], name: str | None = None
    ) -> CriticEvalConfig:
        """How an SPC campaign's critic is evaluated: ``eval``'s settings of the evaluation
        itself, its other options the judge runs'."""
        fields = CriticEvalConfig.model_fields
        own = {k: v for k, v in self.eval.items() if k not in SPC_EVAL_SWITCHES}
        settings = {k: v for k, v in own.items() if k in fields}
        options = {k: v for k, v in own.items() if k not in fields}
        return CriticEvalConfig(
            **{"mode": "fast", "max_tokens": 256, **settings},
            source=self.eval_source(),
            limit=self.eval_limit,
            judge_model=self.trained_models()["spc-critic"],
            options={**options, "adapters": adapters},
            name=name,
            concurrency=self.concurrency,
        )

    def processbench(self) -> bool:
        """Whether an SPC round's evaluation runs ProcessBench beside the step probes."""
        return bool(self.eval.get("processbench", True))

    def step_probe_config(self, *, adapter: str | None) -> StepProbeConfig:
        """How an SPC campaign's critic is probed step by step, in its own format; its budget
        is the game's critic budget unless ``eval.probe_max_tokens`` says otherwise."""
        game = get_pattern("spc_game").config_model.model_validate(
            {**self.game, "reference_answer": "0"}
        )
        options = {PROBE_OPTIONS[k]: v for k, v in self.eval.items() if k in PROBE_OPTIONS}
        return StepProbeConfig(
            **{"max_tokens": game.critic_max_tokens, **options},
            source=self.eval_source(),
            limit=self.eval_limit,
            critic_model=game.critic_model,
            adapter=adapter,
            concurrency=self.concurrency,
        )

    def eval_source(self) -> str:
        return self.eval_problems or KINDS[self.kind].eval_default

    def trained_models(self) -> dict[str, str]:
        """export kind -> the logical model its records train."""
        spec = KINDS[self.kind]
        game = get_pattern(spec.pattern).config_model.model_validate(
            {**self.game, "reference_answer": "0"}
        )
        return {
            export: getattr(game, field) if hasattr(game, field) else field
            for export, field in spec.exports.items()
        }


def steps_of(config: CampaignConfig, round_: int) -> tuple[str, ...]:
    if round_ > 0:
        return ROUND_STEPS
    warm = ("warm_start",) if config.warm_start is not None else ()
    return warm + (BASELINE_STEPS if config.baseline else ())


def first_position(config: CampaignConfig) -> tuple[int, str]:
    round0 = steps_of(config, 0)
    return (0, round0[0]) if round0 else (1, "play")


def next_position(config: CampaignConfig, round_: int, step: str) -> tuple[int, str] | None:
    """Where the campaign goes after ``step`` of ``round_``; None when it is done."""
    steps = steps_of(config, round_)
    index = steps.index(step)
    if index + 1 < len(steps):
        return round_, steps[index + 1]
    if round_ >= config.rounds:
        return None
    return round_ + 1, ROUND_STEPS[0]


def campaign_dir(campaign_id: str) -> Path:
    return data_dir() / "campaigns" / campaign_id


def version_name(campaign: Campaign, model: str, round_: int) -> str:
    """Versions are named after their campaign, role and round: never reused, and a
    retried training finds the name it reserved."""
    return model_versions.check_model_name(f"{campaign.name}-{model}-r{round_}")


@dataclass
class CampaignEnv:
    """What steps need from the process that drives them."""

    store: Store
    models: ModelRouter
    database_url: str
    on_progress: Callable[[str], None] | None = None
    poll_s: float = 2.0
    heartbeat_s: float = HEARTBEAT_S
    tied_trainings: list[tuple[subprocess.Popen[bytes], str]] | None = None
    """Set by a driver that lives in a server (the embedded API): the trainings it launches
    are tied to that process, so none runs on unwatched once the server has gone, and are
    listed here with their training run ids for the server to stop at its close. Unset (the
    CLI, Celery workers), a training outlives its driver, which finds it by its stored run."""

    def say(self, message: str) -> None:
        log.info(message)
        if self.on_progress is not None:
            self.on_progress(message)
