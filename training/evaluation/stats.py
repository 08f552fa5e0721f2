"""Accuracy with its Wilson score interval, per pattern, and each pattern against a baseline on
the same problems: the paired difference with Newcombe's interval and the exact McNemar test."""

from __future__ import annotations

import math
from statistics import NormalDist

from training.evaluation.records import ItemResult, PairedComparison, PatternSummary


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sensible at 0/n and n/n, unlike p ± z·se."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == n else min(1.0, center + half)
    return low, high


def summarize_pattern(pattern: str, items: list[ItemResult], confidence: float) -> PatternSummary:
    ended = [item for item in items if item.ended]
    n = len(ended)
    correct = sum(bool(item.correct) for item in ended)
    tokens = sum(item.completion_tokens for item in ended)
    walls = [item.wall_s for item in ended if item.wall_s is not None]
    low, high = wilson_interval(correct, n, confidence) if n else (None, None)
    return PatternSummary(
        pattern=pattern,
        problems=n,
        pending=len(items) - n,
        correct=correct,
        failed=sum(item.status == "failed" for item in ended),
        accuracy=correct / n if n else None,
        ci_low=low,
        ci_high=high,
        mean_tokens=tokens / n if n else None,
        mean_prompt_tokens=sum(item.prompt_tokens for item in ended) / n if n else None,
        mean_wall_s=sum(walls) / len(walls) if walls else None,
        accuracy_per_1k_tokens=1000 * correct / tokens if tokens else None,
        total_tokens=tokens,
    )


def paired_difference_interval(
    both: int, only_first: int, only_second: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """The interval of (first's accuracy - second's) when both were scored on the same items:
    Newcombe's method 10 (Stat. Med. 17:2635, 1998). Each accuracy's Wilson interval, combined
    through the correlation of the two (with his continuity correction of the phi coefficient),
    so a pair of patterns that agree on most items gets a narrower interval than two
    independent samples would."""
    n = both + only_first + only_second + neither
    if n == 0:
        return -1.0, 1.0
    first, second = (both + only_first) / n, (both + only_second) / n
    low1, high1 = wilson_interval(both + only_first, n, confidence)
    low2, high2 = wilson_interval(both + only_second, n, confidence)
    margins = (
        (both + only_first)
        * (only_second + neither)
        * (both + only_second)
        * (only_first + neither)
    )
    cross = both * neither - only_first * only_second
    # the continuity-corrected numerator: a small positive association counts as none
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(
        max(
            0.0,
            (first - low1) ** 2
            - 2 * phi * (first - low1) * (high2 - second)
            + (high2 - second) ** 2,
        )
    )
    above = math.sqrt(
        max(
            0.0,
            (second - low2) ** 2
            - 2 * phi * (second - low2) * (high1 - first)
            + (high1 - first) ** 2,
        )
    )
    difference = first - second
    return max(-1.0, difference - below), min(1.0, difference + above)


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar test: under "neither is better" each disagreement goes either way
    with probability 1/2, so the smaller count is a binomial tail."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def compare_paired(
    pattern: str,
    baseline: str,
    items: list[ItemResult],
    baseline_items: list[ItemResult],
    confidence: float,
) -> PairedComparison:
    """``pattern`` against ``baseline`` on the problems both runs ended on (a pending or
    missing item on either side leaves that problem out of the pair)."""
    theirs = {item.problem_id: bool(item.correct) for item in baseline_items if item.ended}
    pairs = [
        (bool(item.correct), theirs[item.problem_id])
        for item in items
        if item.ended and item.problem_id in theirs
    ]
    both = sum(mine and other for mine, other in pairs)
    only_pattern = sum(mine and not other for mine, other in pairs)
    only_baseline = sum(other and not mine for mine, other in pairs)
    neither = len(pairs) - both - only_pattern - only_baseline
    low, high = (
        paired_difference_interval(both, only_pattern, only_baseline, neither, confidence)
        if pairs
        else (None, None)
    )
    return PairedComparison(
        pattern=pattern,
        baseline=baseline,
        problems=len(pairs),
        both_correct=both,
        only_pattern=only_pattern,
        only_baseline=only_baseline,
        neither=neither,
        difference=(only_pattern - only_baseline) / len(pairs) if pairs else None,
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact_p(only_pattern, only_baseline) if pairs else None,
    )
