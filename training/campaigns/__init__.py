"""Self-play campaigns: play games, turn them into datasets, train, serve, evaluate, again.

A campaign of R rounds starts with round 0, which only evaluates the starting models (the
baseline, unless switched off); then each round 1..R takes five steps:

``play``
    G games (``spc_game`` or ``rlad`` runs) on the round's problems, every logical model
    answering with the campaign's current model version (a run's ``adapters``); an SPC game's
    critic is one version behind its sneaky generator (the balancing game, ``balance``).
``export``
    the round's games become one dataset per trained role (:mod:`training.export`).
``train``
    one RL training per role that has data with a signal (a valid SPC game, more than one
    reward), continuing from the role's current version with ``train`` and the role's
    ``train_roles`` options, launched as a job of its own (:mod:`training.jobs`) and waited
    for; a role not trained says why in the round's ``training_runs``.
``serve``
    each new version answers a probe through the backend that serves its role, which loads
    the adapter by name (hot-load, no restart); from then on the campaign plays with it.
``evaluate``
    SPC: the critic's step accuracy on single-step probes of held-out step-labelled solutions,
    in its own format (:mod:`training.step_probe_eval`), with ProcessBench's F1 beside it;
    RLAD: the solve rate on held-out problems. Each with a ``headline`` (name, value, interval,
    n), stored with the round's game statistics.

Where a campaign is, and everything each round made, is in the store
(:mod:`store.campaigns`), and every step is idempotent: games are runs with
idempotency keys, trainings have keys, evaluations have names. So whatever drives a campaign
(a Celery chain per round, or :func:`drive` in one process) can die at any point, and the next
driver continues the step it was in. A driver advances the campaign only while it holds the
campaign's driver token.

The parts: ``config`` (kinds, settings, the steps' order, errors, the driver's environment),
``lifecycle`` (create, resume, cancel, fail), ``driver`` (one step at a time, with a heartbeat)
and ``steps`` (play, export, train, serve, evaluate). The names callers use are handed on here.
"""

from training.campaigns.config import (
    BASELINE_STEPS,
    HEARTBEAT_S,
    KINDS,
    ROUND_STEPS,
    TRAIN_ATTEMPTS,
    CampaignConfig,
    CampaignEnv,
    CampaignError,
    StepPending,
    campaign_dir,
    first_position,
    next_position,
    steps_of,
    version_name,
)
from training.campaigns.driver import advance, drive, run_step
from training.campaigns.lifecycle import (
    TooManyCampaigns,
    cancel_campaign,
    create_campaign,
    fail_campaign,
    resume_campaign,
)

__all__ = [
    "BASELINE_STEPS",
    "HEARTBEAT_S",
    "KINDS",
    "ROUND_STEPS",
    "TRAIN_ATTEMPTS",
    "CampaignConfig",
    "CampaignEnv",
    "CampaignError",
    "StepPending",
    "TooManyCampaigns",
    "advance",
    "campaign_dir",
    "cancel_campaign",
    "create_campaign",
    "drive",
    "fail_campaign",
    "first_position",
    "next_position",
    "resume_campaign",
    "run_step",
    "steps_of",
    "version_name",
]
