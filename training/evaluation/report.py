"""An evaluation as people read it: a table, a results file, the accuracy-vs-tokens plot."""

from __future__ import annotations

import json
from pathlib import Path

from training.evaluation.records import EvalSummary, ItemResult


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows as aligned lines: the first column to the left, numbers to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def render_table(summary: EvalSummary) -> str:
    """The comparison as plain text: one row per pattern."""
    level = f"{100 * summary.confidence:g}% CI"
    header = [
        "pattern",
        "n",
        "accuracy",
        level,
        "tokens/problem",
        "wall s/problem",
        "acc/1k tokens",
        "failed",
    ]
    rows = [header]
    for p in summary.patterns:
        interval = "-" if p.ci_low is None else f"{_percent(p.ci_low)}-{_percent(p.ci_high)}"
        n = str(p.problems) if not p.pending else f"{p.problems} (+{p.pending} pending)"
        rows.append(
            [
                p.pattern,
                n,
                _percent(p.accuracy),
                interval,
                _number(p.mean_tokens),
                _number(p.mean_wall_s, 2),
                _number(p.accuracy_per_1k_tokens, 3),
                str(p.failed),
            ]
        )
    lines = _columns(rows)
    budget = ""
    if summary.budget_tokens is not None:
        budget = (
            f"; equal budget: {summary.budget_tokens} generated tokens per pattern "
            f"({summary.run_token_budget} per problem)"
        )
    title = f"{summary.name}: {summary.problems} problems from {summary.source}{budget}"
    return "\n".join([title, *lines])


def render_paired(summary: EvalSummary) -> str:
    """Each pattern against the first on the same problems, as plain text; empty with one
    pattern. The paired interval is the one to read for "does it beat the baseline": two
    accuracies' separate intervals overlap long after the paired difference is clear."""
    if not summary.paired:
        return ""
    level = f"{100 * summary.confidence:g}% CI"
    baseline = summary.paired[0].baseline
    header = [
        "pattern",
        "n",
        f"right where {baseline} was wrong",
        f"wrong where {baseline} was right",
        "difference",
        level,
        "McNemar p",
    ]
    rows = [header]
    for c in summary.paired:
        signed = "-" if c.difference is None else f"{100 * c.difference:+.1f} pts"
        interval = (
            "-"
            if c.ci_low is None or c.ci_high is None
            else f"{100 * c.ci_low:+.1f} to {100 * c.ci_high:+.1f}"
        )
        p_value = "-" if c.p_value is None else f"{c.p_value:.3f}"
        rows.append(
            [
                c.pattern,
                str(c.problems),
                str(c.only_pattern),
                str(c.only_baseline),
                signed,
                interval,
                p_value,
            ]
        )
    lines = _columns(rows)
    return "\n".join([f"against {baseline}, on the problems both finished:", *lines])


def write_results(
    summary: EvalSummary, items: list[ItemResult], out_dir: Path
) -> tuple[Path, Path]:
    """``results.json`` (summary and every item with its run id) and the accuracy-vs-tokens
    plot ``accuracy_vs_tokens.png``, in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.json"
    payload = {
        "summary": summary.model_dump(mode="json"),
        "items": [item.model_dump(mode="json") for item in items],
    }
    results.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    plot = out_dir / "accuracy_vs_tokens.png"
    plot_accuracy_vs_tokens(summary, plot)
    return results, plot


def plot_accuracy_vs_tokens(summary: EvalSummary, path: Path) -> None:
    """One point per pattern: mean generated tokens per problem against accuracy, with the
    accuracy's interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for p in summary.patterns:
        if p.accuracy is None or p.mean_tokens is None:
            continue
        # clamped: an interval's end can sit a rounding error inside 0% or 100%
        below = max(0.0, 100 * (p.accuracy - (p.ci_low or 0.0)))
        above = max(0.0, 100 * ((p.ci_high or 0.0) - p.accuracy))
        axes.errorbar(
            [p.mean_tokens],
            [100 * p.accuracy],
            yerr=[[below], [above]],
            fmt="o",
            capsize=4,
        )
        axes.annotate(
            p.pattern,
            (p.mean_tokens, 100 * p.accuracy),
            textcoords="offset points",
            xytext=(6, 6),
        )
    plotted = [p.mean_tokens for p in summary.patterns if p.mean_tokens is not None]
    # from zero, and room on the right for the last point's label
    axes.set_xlim(0, 1.3 * max(plotted, default=0) or 1)
    axes.set_xlabel("generated tokens per problem (mean)")
    axes.set_ylabel(f"accuracy, % ({100 * summary.confidence:g}% interval)")
    axes.set_ylim(-5, 105)
    axes.set_title(f"{summary.name}: {summary.problems} problems", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
