"""Patterns compared on the same problems: accuracy, tokens and time, at equal cost if asked.

An evaluation runs every (problem, pattern) pair as a normal stored run, submitted and executed
by the services ``thinktank solve`` uses, at most ``concurrency`` at once, and keeps one item
per pair that names its run. So:

- every number traces back to transcripts (``thinktank runs show RUN_ID``);
- an evaluation is resumable: it is found again by its name (by default a hash of its
  settings, so rerunning the same command finds it), items whose run succeeded are skipped,
  and a run that was interrupted resumes from its checkpoint (its idempotency key is the pair);
- the reference answer is never given to a pattern: it is only used to score the run's answer,
  with :func:`roles.checking.answers_match`.

Accuracy comes with a Wilson score interval; tokens are generated (completion) tokens, what a
pattern's ``token_budget`` limits. ``budget_tokens`` compares patterns at equal total cost:
every pattern may generate at most that many tokens over the whole problem set, enforced as an
equal share per problem (each run's ``token_budget``). Every pattern after the first is also
compared with the first on the same problems: how often each was right where the other was
wrong, the paired difference in accuracy with Newcombe's interval, and the exact McNemar test.

The parts: ``records`` (settings, jobs, items, summaries), ``runner`` (the resumable job
runner ``critic_eval`` uses too), ``stats`` (intervals, and every pattern against the first
listed on the same problems), ``patterns`` (comparing patterns) and ``report`` (tables,
results file, plot). The names callers use are handed on here.
"""

from training.evaluation.patterns import (
    answerable_problems,
    check_unique_ids,
    evaluate_patterns,
    pattern_options,
    resolve_source,
    score_answer,
    solve_jobs,
    stored_summary,
    validate_pattern_config,
)
from training.evaluation.records import (
    MAX_PROBLEM_ID,
    MIN_RUN_BUDGET,
    EvalConfig,
    EvalSummary,
    EvaluationError,
    ItemResult,
    Job,
    PairedComparison,
    PatternSummary,
    Progress,
    ProgressCallback,
    Scorer,
    default_name,
)
from training.evaluation.report import (
    plot_accuracy_vs_tokens,
    render_paired,
    render_table,
    write_results,
)
from training.evaluation.runner import evaluate_jobs, open_evaluation, run_jobs
from training.evaluation.stats import (
    compare_paired,
    mcnemar_exact_p,
    paired_difference_interval,
    summarize_pattern,
    wilson_interval,
)

__all__ = [
    "MAX_PROBLEM_ID",
    "MIN_RUN_BUDGET",
    "EvalConfig",
    "EvalSummary",
    "EvaluationError",
    "ItemResult",
    "Job",
    "PairedComparison",
    "PatternSummary",
    "Progress",
    "ProgressCallback",
    "Scorer",
    "answerable_problems",
    "check_unique_ids",
    "compare_paired",
    "default_name",
    "evaluate_jobs",
    "evaluate_patterns",
    "mcnemar_exact_p",
    "open_evaluation",
    "paired_difference_interval",
    "pattern_options",
    "plot_accuracy_vs_tokens",
    "render_paired",
    "render_table",
    "resolve_source",
    "run_jobs",
    "score_answer",
    "solve_jobs",
    "stored_summary",
    "summarize_pattern",
    "validate_pattern_config",
    "wilson_interval",
    "write_results",
]
