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
equal share per problem (each run's ``token_budget``).

The parts: ``records`` (settings, jobs, items, summaries), ``runner`` (the resumable job
runner ``critic_eval`` uses too), ``stats``, ``patterns`` (comparing patterns) and ``report``
(table, results file, plot). The names callers use are handed on here.
"""

from training.evaluation.patterns import (
    answerable_problems,
    check_unique_ids,
    evaluate_patterns,
    pattern_options,
    resolve_source,
    score_answer,
    solve_jobs,
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
    PatternSummary,
    Progress,
    ProgressCallback,
    Scorer,
    default_name,
)
from training.evaluation.report import plot_accuracy_vs_tokens, render_table, write_results
from training.evaluation.runner import evaluate_jobs, open_evaluation, run_jobs
from training.evaluation.stats import summarize_pattern, wilson_interval

__all__ = [
    "MAX_PROBLEM_ID",
    "MIN_RUN_BUDGET",
    "EvalConfig",
    "EvalSummary",
    "EvaluationError",
    "ItemResult",
    "Job",
    "PatternSummary",
    "Progress",
    "ProgressCallback",
    "Scorer",
    "answerable_problems",
    "check_unique_ids",
    "default_name",
    "evaluate_jobs",
    "evaluate_patterns",
    "open_evaluation",
    "pattern_options",
    "plot_accuracy_vs_tokens",
    "render_table",
    "resolve_source",
    "run_jobs",
    "score_answer",
    "solve_jobs",
    "summarize_pattern",
    "validate_pattern_config",
    "wilson_interval",
    "write_results",
]
