"""The RL trainer's math on tiny tensors with values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training.config import RLConfig
from training.rl import expected_group_reward, group_advantages, kl_k3, policy_loss

SQRT_HALF = math.sqrt(0.5)


def test_advantages_are_relative_to_the_group() -> None:
    rewards = [1.0, 0.0, 1.0, 1.0, 0.0, 5.0]
    groups = ["a", "a", "b", "b", "c", "d"]

    normalized = group_advantages(rewards, groups, "group_normalized")
    # group a: mean 0.5, sample std sqrt(0.5) -> +-0.5 / sqrt(0.5)
    assert normalized[0] == pytest.approx(0.5 / SQRT_HALF)
    assert normalized[1] == pytest.approx(-0.5 / SQRT_HALF)
    # group b: equal rewards, std 0: nothing to prefer, not a division by zero
    assert normalized[2:4] == [0.0, 0.0]
    # groups of one have nothing to compare with
    assert normalized[4:] == [0.0, 0.0]

    assert group_advantages(rewards, groups, "group_centered")[:2] == [0.5, -0.5]
    assert group_advantages(rewards, groups, "raw") == rewards


def test_an_explicit_advantage_wins_over_the_group() -> None:
    advantages = group_advantages(
        [1.0, 0.0, 0.0], ["g", "g", "g"], "group_normalized", [None, None, 0.0]
    )
    assert advantages[2] == 0.0
    assert advantages[0] > 0 > advantages[1]


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere() -> None:
    logp = torch.tensor([0.0, math.log(0.5)])
    assert kl_k3(logp, logp).tolist() == [0.0, 0.0]
    # ref = log 0.5, policy = log 1: exp(-ln 2) + ln 2 - 1
    value = kl_k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)]))
    assert float(value) == pytest.approx(0.5 + math.log(2) - 1)


def _same(value: float, shape: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    return torch.full(shape, value)


def test_on_policy_the_loss_is_minus_the_mean_advantage() -> None:
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = policy_loss(
        logp, logp.detach(), logp.detach(), torch.tensor([1.0, -0.5]), mask, kl_coef=0.1
    )
    assert loss.item() == pytest.approx(-(1.0 - 0.5) / 2)
    assert stats["ratio"] == pytest.approx(1.0)
    assert stats["kl"] == 0.0
    assert stats["clip_frac"] == 0.0
    loss.backward()
    assert logp.grad is not None
    # descending the loss raises the log-probs of the positive-advantage completion, lowers
    # the negative one's, and leaves the masked-out token alone
    assert (logp.grad[0] < 0).all()
    assert logp.grad[1, 0] > 0
    assert logp.grad[1, 1] == 0


def test_ratios_beyond_the_clip_stop_pushing() -> None:
    old = _same(math.log(0.4))
    mask = torch.ones(1, 2)
    # positive advantage, ratio 1.5 > 1.2: the surrogate is capped at 1.2 and has no gradient
    logp = _same(math.log(0.6)).requires_grad_()
    loss, stats = policy_loss(logp, old, logp.detach(), torch.tensor([1.0]), mask)
    assert loss.item() == pytest.approx(-1.2)
    assert stats["clip_frac"] == 1.0
    loss.backward()
    assert logp.grad is not None and (logp.grad == 0).all()

    # negative advantage, ratio 0.5 < 0.8: capped at 0.8, no gradient
    logp = _same(math.log(0.2)).requires_grad_()
    loss, _ = policy_loss(logp, old, logp.detach(), torch.tensor([-1.0]), mask)
    assert loss.item() == pytest.approx(0.8)
    loss.backward()
    assert logp.grad is not None and (logp.grad == 0).all()

    # negative advantage, ratio 1.5: the pessimistic (unclipped) term keeps its gradient
    logp = _same(math.log(0.6)).requires_grad_()
    loss, stats = policy_loss(logp, old, logp.detach(), torch.tensor([-1.0]), mask)
    assert loss.item() == pytest.approx(1.5)
    assert stats["clip_frac"] == 0.0
    loss.backward()
    assert logp.grad is not None and (logp.grad > 0).all()


def test_asymmetric_clip_raises_only_the_upper_bound() -> None:
    old = _same(math.log(0.4))
    logp = _same(math.log(0.6))
    loss, _ = policy_loss(logp, old, logp, torch.tensor([1.0]), torch.ones(1, 2), clip_high=0.28)
    assert loss.item() == pytest.approx(-1.28)


def test_token_and_sequence_averages_weigh_lengths_differently() -> None:
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    advantages = torch.tensor([1.0, -1.0])
    by_token, _ = policy_loss(logp, logp, logp, advantages, mask, aggregation="token")
    by_sequence, _ = policy_loss(logp, logp, logp, advantages, mask, aggregation="sequence")
    assert by_token.item() == pytest.approx((-3 + 1) / 4)  # four tokens, three of them +1
    assert by_sequence.item() == pytest.approx((-1 + 1) / 2)


def test_sequence_level_ratio_uses_the_mean_token_logprob() -> None:
    # mean logp -0.5 vs old mean -1.0: ratio e^0.5 = 1.65, clipped to 1.2 for A = +1
    logp = torch.tensor([[0.0, -1.0]])
    old = torch.tensor([[-1.0, -1.0]])
    loss, stats = policy_loss(
        logp, old, old, torch.tensor([1.0]), torch.ones(1, 2), ratio_level="sequence"
    )
    assert stats["ratio"] == pytest.approx(math.exp(0.5))
    assert loss.item() == pytest.approx(-1.2)


def test_kl_and_entropy_terms_add_to_the_loss() -> None:
    logp = torch.zeros(1, 1)
    ref = torch.full((1, 1), math.log(0.5))
    entropy = torch.full((1, 1), 2.0)
    loss, stats = policy_loss(
        logp, logp, ref, torch.tensor([0.0]), torch.ones(1, 1), kl_coef=0.5, entropy=entropy,
        entropy_coef=0.1,
    )  # fmt: skip
    kl = 0.5 + math.log(2) - 1
    assert stats["kl"] == pytest.approx(kl)
    assert loss.item() == pytest.approx(0.5 * kl - 0.1 * 2.0)


def test_expected_reward_follows_the_model_s_preference_within_groups() -> None:
    # group g: the model gives the rewarded completion e^2 times the probability
    value = expected_group_reward([0.0, -2.0, -1.0], [1.0, 0.0, 1.0], ["g", "g", "solo"])
    assert value == pytest.approx(1 / (1 + math.exp(-2)))
    assert expected_group_reward([0.0], [1.0], ["solo"]) is None


def test_recipes_fill_settings_that_flags_do_not_give(tmp_path) -> None:
    data = tmp_path / "rl.jsonl"
    spc = RLConfig(data=data, recipe="spc")
    assert (spc.advantage, spc.ratio_level, spc.sft_coef, spc.old_logprobs) == (
        "raw",
        "sequence",
        0.15,
        "reference",
    )
    # the recipe's SFT term needs SFT data: without it, the config says that it is off
    note = spc.missing_sft_data()
    assert note is not None and "0.15 x NLL term on SFT data is off" in note
    assert "--sft-data" in note and "--sft-coef 0" in note
    assert RLConfig(data=data, recipe="spc", sft_data=data).missing_sft_data() is None
    assert RLConfig(data=data, recipe="spc", sft_coef=0).missing_sft_data() is None
    rlad = RLConfig(data=data, recipe="rlad", clip_high=0.28)
    assert (rlad.aggregation, rlad.kl_coef, rlad.clip_high) == ("token", 0.001, 0.28)
    assert RLConfig.model_validate(spc.model_dump()) == spc  # a stored config reloads as is
    with pytest.raises(ValueError, match="sft_coef needs sft_data"):
        RLConfig(data=data, sft_coef=0.1)
