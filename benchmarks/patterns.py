"""Do several agents get right what one gets wrong? Every pattern on the same generated
problems, on the embedded default model, at an equal cap of generated tokens per problem.

The problems mix four generated kinds at the difficulty where one greedy call of the default
model (Qwen2.5-Coder-0.5B) is right about 30-70% of the time (measured: arithmetic at
difficulty 2 and 3, remainders and counting at difficulty 1). Each pattern's runs may spend
at most ``--cap`` generated tokens (its ``token_budget``; a run that reaches it ends with
what it has). Patterns run ``--concurrency`` at a time on one llama.cpp engine, so their
calls share its decoding steps.

Prints the accuracy of each pattern with its Wilson interval, the tokens and wall time it
spent per problem, then every pattern against the first (``single`` by default) problem by
problem: how often each was right where the other was wrong, the paired difference with its
interval and the exact McNemar p. It writes the accuracy-vs-tokens plot and every item (each
names its run: ``thinktank runs show RUN_ID`` shows the transcript). The store is a SQLite
file in ``--out``; running the same command again resumes what did not finish, and the same
command with ``--report`` prints what is stored so far without running anything.

Run:  python benchmarks/patterns.py            # 100 problems, every pattern (3-4 hours on 2 cores)
      python benchmarks/patterns.py --quick    # 16 problems (about half an hour)
      python benchmarks/patterns.py --per-kind 12 --patterns single,self_consistency,discussion
      python benchmarks/patterns.py --patterns single,discussion -o discussion.temperature=0 \\
          --out benchmarks/results/patterns-greedy   # a pattern greedy, as single is
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from agents.model_map import ModelRouter
from services.cli.eval_progress import ProgressBar
from store.db import create_engine, migrate
from store.runs import Store
from training.evaluation import (
    EvalConfig,
    EvaluationError,
    evaluate_patterns,
    render_paired,
    render_table,
    stored_summary,
    write_results,
)
from training.evaluation import pattern_options as eval_options
from training.problems import load_problems

KINDS = (
    "gen:arithmetic?difficulty=2",
    "gen:arithmetic?difficulty=3",
    "gen:modular?difficulty=1",
    "gen:counting?difficulty=1",
)


def pattern_options(cap: int) -> dict[str, dict[str, object]]:
    """Each pattern at its defaults but for the shared cap; single is greedy (the strongest
    one-call baseline), every other pattern samples at its default temperature."""
    every = {"token_budget": cap}
    return {
        "single": {**every, "max_tokens": 512, "temperature": 0.0},
        "self_consistency": {**every, "samples": 4, "max_tokens": 512},
        "self_consistency_8": {**every, "samples": 8, "max_tokens": 512},
        "discussion": {**every},
        "sdv": {**every},
        "rlad": {**every, "abstractions": 2, "solutions_per_abstraction": 2},
        "spc_search": {**every, "trajectories": 2, "max_steps": 6, "critic_max_tokens": 128},
    }


def write_problems(path: Path, per_kind: int, seed: int) -> int:
    """The mixed set as a problem/answer JSONL file (ids say kind and index)."""
    records = []
    for kind in KINDS:
        for problem in load_problems(f"{kind}&n={per_kind}", seed=seed):
            records.append({"id": problem.id, "problem": problem.problem, "answer": problem.answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return len(records)


def evaluations(
    selected: list[str], cap: int, overrides: list[str] | None = None
) -> list[tuple[str, dict[str, dict[str, object]]]]:
    """The evaluations to run: every selected pattern in one, and self-consistency with n=8 in
    a second (one pattern can appear only once in an evaluation). The first selected pattern
    is the baseline every other one of the first evaluation is compared with, problem by
    problem. ``overrides`` (``-o``, as ``thinktank eval`` reads them) change the first one's
    options."""
    options = pattern_options(cap)
    unknown = sorted(set(selected) - set(options))
    if unknown:
        raise SystemExit(
            f"unknown pattern(s): {', '.join(unknown)}; choose from {', '.join(options)}"
        )
    first = {p: options[p] for p in selected if p != "self_consistency_8"}
    try:
        changed = eval_options(list(first), overrides or [])
    except EvaluationError as exc:
        raise SystemExit(str(exc)) from None
    first = {p: {**o, **changed.get(p, {})} for p, o in first.items()}
    plan = [("main", first)] if first else []
    if "self_consistency_8" in selected:
        plan.append(("sc8", {"self_consistency": options["self_consistency_8"]}))
    return plan


def plot(rows: list[tuple[str, float, float, float, float]], path: Path, title: str) -> None:
    """Every pattern of both evaluations on one accuracy-vs-tokens plot, one colour each."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 5))
    for label, tokens, accuracy, low, high in sorted(rows, key=lambda r: r[1]):
        errors = [[100 * (accuracy - low)], [100 * (high - accuracy)]]
        axes.errorbar([tokens], [100 * accuracy], yerr=errors, fmt="o", capsize=4, label=label)
    axes.legend(fontsize=9, loc="upper right")
    axes.set_xlabel("generated tokens per problem (mean)")
    axes.set_ylabel("accuracy, % (95% Wilson interval)")
    axes.set_ylim(-5, 105)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


async def evaluate(
    args: argparse.Namespace,
    plan: list[tuple[str, dict[str, dict[str, object]]]],
    problems: Path,
    out: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{out / 'patterns.db'}")
    await migrate(engine)
    store = Store(engine)
    models = ModelRouter()
    rows: list[tuple[str, float, float, float, float]] = []
    try:
        for name, options in plan:
            config = EvalConfig(
                patterns=list(options),
                source=str(problems),
                options=options,
                name=f"{out.name}-{name}-cap{args.cap}",
                concurrency=args.concurrency,
            )
            started = time.perf_counter()
            if args.report:
                try:
                    summary, items = await stored_summary(store, config)
                except EvaluationError as exc:
                    print(f"[{name}: {exc}]")
                    continue
            else:
                bar = ProgressBar()  # on stderr: a long evaluation shows that it moves
                try:
                    summary, items = await evaluate_patterns(
                        store, models, str(engine.url), config, on_progress=bar
                    )
                finally:
                    bar.close()
            wall = time.perf_counter() - started
            table = render_table(summary)
            if name == "sc8":
                table = table.replace("self_consistency", "self_consistency n=8")
            print(table)
            if summary.paired:
                print(render_paired(summary))
            spent = "read from the store" if args.report else f"{wall:.0f} s wall"
            print(f"[{name}: {spent}, load average {os.getloadavg()[0]:.2f}]", flush=True)
            write_results(summary, items, out / name)
            for row in summary.patterns:
                label = "self_consistency n=8" if name == "sc8" else row.pattern
                if row.pattern == "self_consistency" and name == "main":
                    label = "self_consistency n=4"
                if row.accuracy is not None and row.mean_tokens is not None:
                    interval = (row.ci_low or 0.0, row.ci_high or 0.0)
                    rows.append((label, row.mean_tokens, row.accuracy, *interval))
        plot(rows, out / "accuracy_vs_tokens.png", f"{len(rows)} patterns, cap {args.cap}")
        print(f"plot: {out / 'accuracy_vs_tokens.png'}")
    finally:
        await models.close()
        await store.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 problems of each kind, not 25")
    parser.add_argument(
        "--per-kind", type=int, default=None, help="problems of each kind (overrides --quick)"
    )
    parser.add_argument("--cap", type=int, default=2048, help="generated tokens per problem")
    parser.add_argument("--concurrency", type=int, default=8, help="runs executed at once")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated problems")
    parser.add_argument(
        "--patterns",
        default="single,self_consistency,self_consistency_8,discussion,sdv,rlad,spc_search",
        help="comma-separated subset to evaluate; the first is the baseline of the paired table",
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        help="PATTERN.FIELD=VALUE or FIELD=VALUE over the defaults, as thinktank eval's -o "
        "(e.g. -o discussion.temperature=0); not applied to n=8 self-consistency",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print what the same command has stored so far and run nothing",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()
    plan = evaluations(args.patterns.split(","), args.cap, args.option)  # bad names stop here
    per_kind = args.per_kind if args.per_kind is not None else (4 if args.quick else 25)
    if per_kind < 1:
        parser.error("--per-kind must be at least 1")
    size = {4: "quick", 25: "full"}.get(per_kind, f"{per_kind}-per-kind")
    out = (args.out or Path("benchmarks/results") / f"patterns-{size}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    problems = out / "problems.jsonl"
    count = write_problems(problems, per_kind, args.seed)
    print(f"{count} problems ({', '.join(KINDS)}), cap {args.cap} tokens, -> {out}")
    asyncio.run(evaluate(args, plan, problems, out))


if __name__ == "__main__":
    main()
