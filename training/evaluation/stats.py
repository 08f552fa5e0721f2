"""Accuracy with its Wilson score interval, per pattern."""

from __future__ import annotations

import math
from statistics import NormalDist

from training.evaluation.records import ItemResult, PatternSummary


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
