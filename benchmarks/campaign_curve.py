"""Does a round of self-play make the agents better? A small SPC campaign and a small RLAD
campaign end to end on the embedded default model, with each round's learning-curve figures.

Each campaign runs in this process as ``thinktank campaign start`` runs it without a broker:
round 0 evaluates the starting models, then every round plays its games on the local model,
exports them, trains each role's LoRA adapter in a training process of its own (on the base
the local backend serves, so its llama.cpp engine serves the new adapter by name), serves it and
evaluates on held-out problems. Everything is stored in a SQLite file and a data directory
under ``--out``; running the same command again resumes a campaign that did not finish and
prints one that did.

Prints each round's headline metric with its 95% interval (SPC: the critic on held-out
step-labelled solutions; RLAD: the solve rate with abstractions), the games played, the share
that counted (SPC: valid rewrites; RLAD: abstractions that did not leak the answer), the mean
rewards, the final loss of each training and each round's wall time; writes one learning
curve PNG per campaign (``thinktank campaign report`` draws the same).

Run:  python benchmarks/campaign_curve.py            # 3 rounds (about an hour)
      python benchmarks/campaign_curve.py --quick    # 1 small round (about 10 minutes)
      python benchmarks/campaign_curve.py --quick --rounds 1 --games 1 --eval-limit 2 \\
          --max-steps 1                               # a smoke run: does every step work?

Sizes are for 2 CPU cores; what was measured is in the README's training section.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Size:
    rounds: int
    spc_games: int
    rlad_games: int
    spc_eval: int
    rlad_eval: int
    max_steps: int
    warm_n: int
    """problems of the round-0 warm-start data (SPC: 2 critic probes and 1 rewrite each)"""
    warm_steps: int


SIZES = {
    "quick": Size(
        rounds=1,
        spc_games=4,
        rlad_games=2,
        spc_eval=4,
        rlad_eval=2,
        max_steps=2,
        warm_n=16,
        warm_steps=4,
    ),
    "full": Size(
        rounds=3,
        spc_games=12,
        rlad_games=4,
        spc_eval=16,
        rlad_eval=8,
        max_steps=8,
        warm_n=64,
        warm_steps=16,
    ),
}
"""Sized from what one unit cost on 2 shared cores (load average 4-6, about half an idle
machine's speed): an SPC game 1.5-3 min and an SPC evaluation problem 15-30 s with 4 at once;
an RLAD game about 1.6 min and an RLAD evaluation problem 1-2.5 min (each is a whole rlad run:
abstractions, their solutions and the baseline's)."""

TRAIN = {"batch_size": 2, "lora_r": 8, "max_length": 512, "eval_fraction": 0.0, "threads": 2}
"""Trainer options of every training: small batches and sequences, both cores, no held-out
split (the campaign evaluates on problems it never played)."""

GAME = {
    "spc": {"rollouts": 4},
    "rlad": {"abstractions": 2, "solutions_per_abstraction": 2},
}
"""Game options, scaled down from the papers' (SPC: 8 roll-outs; RLAD: 4 x 4) so a round's
games fit the budget; the campaign's defaults otherwise."""

PROBLEMS = "gen:mixed?difficulty=1&n=1000"
"""The games' problems; the evaluations use the campaign's held-out defaults, seeded apart."""


def stamp(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def campaign_config(kind: str, size: Size, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": kind,
        "rounds": size.rounds,
        "games_per_round": size.spc_games if kind == "spc" else size.rlad_games,
        "problems": PROBLEMS,
        "eval_limit": size.spc_eval if kind == "spc" else size.rlad_eval,
        "concurrency": args.concurrency,
        "base": args.base,
        "game": GAME[kind],
        "train": {**TRAIN, "max_steps": size.max_steps},
        # round 0 as the papers start: SFT on the recipe's format (template targets)
        "warm_start": {"n": size.warm_n} if args.warm_start else None,
        "warm_start_train": (
            {**TRAIN, "max_steps": size.warm_steps, "learning_rate": 2e-4}
            if args.warm_start
            else {}
        ),
        "seed": args.seed,
    }


async def run_campaign(kind: str, size: Size, args: argparse.Namespace, out: Path) -> None:
    from agents.model_map import ModelRouter
    from store import campaigns as repo
    from store.db import create_engine, migrate
    from store.runs import Store
    from training.campaigns import (
        CampaignConfig,
        CampaignEnv,
        create_campaign,
        drive,
        resume_campaign,
    )
    from training.campaigns.report import load_report, render_table, write_curve_png

    engine = create_engine(f"sqlite+aiosqlite:///{out / 'campaigns.db'}")
    await migrate(engine)
    store = Store(engine)
    models = ModelRouter()
    name = f"curve-{kind}-{args.size_name}"
    started = time.perf_counter()
    try:
        campaign = await repo.find_campaign(store, name)
        if campaign is None:
            config = CampaignConfig.model_validate(campaign_config(kind, size, args))
            campaign = await create_campaign(store, config, name=name, driver="embedded")
            token = campaign.driver_token
            stamp(f"{kind}: campaign {name}, {config.rounds} rounds of {config.games_per_round}")
        elif campaign.status != "succeeded":
            token = await resume_campaign(store, campaign.id, driver="embedded")
            stamp(f"{kind}: resuming {name} at round {campaign.round}, {campaign.step}")
        else:
            token = None
            stamp(f"{kind}: {name} finished before; its figures (delete {out} to run again)")
        if token is not None:
            env = CampaignEnv(
                store, models, str(engine.url), on_progress=lambda m: stamp(f"{kind}: {m}")
            )
            campaign = await drive(env, campaign.id, token)
        wall = time.perf_counter() - started
        rounds = await repo.rounds_of(store, campaign.id)
        report = await load_report(store, campaign, rounds)
        print(render_table(report))
        for row in rounds:
            if row.finished_at is not None:
                seconds = (row.finished_at - row.started_at).total_seconds()
                print(f"  round {row.round}: {seconds:.0f} s")
        if campaign.error:
            print(f"  {campaign.status}: {campaign.error}")
        png = write_curve_png(report, out / f"{kind}-curve.png")
        load = os.getloadavg()[0]
        print(f"[{kind}: {wall:.0f} s wall, load average {load:.2f}] curve: {png}", flush=True)
    finally:
        await models.close()
        await store.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the ~10 minute size, not ~1 hour")
    parser.add_argument("--kinds", default="spc,rlad", help="campaigns to run: spc, rlad or both")
    parser.add_argument("--rounds", type=int, default=None, help="rounds after the baseline")
    parser.add_argument("--games", type=int, default=None, help="games per round (both kinds)")
    parser.add_argument(
        "--eval-limit", type=int, default=None, help="evaluation problems (both kinds)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="steps of each training")
    parser.add_argument(
        "--warm-steps", type=int, default=None, help="steps of each round-0 warm-start training"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="games and evaluations at once")
    parser.add_argument(
        "--base",
        default=None,
        help="the trained base (default: the model the embedded default serves, so its engine "
        "serves the adapters)",
    )
    parser.add_argument(
        "--warm-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="round 0 trains each role by SFT on warm-start data first (the papers' round 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated problems")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args()

    size = SIZES["quick" if args.quick else "full"]
    overrides = {
        "rounds": args.rounds,
        "spc_games": args.games,
        "rlad_games": args.games,
        "spc_eval": args.eval_limit,
        "rlad_eval": args.eval_limit,
        "max_steps": args.max_steps,
        "warm_steps": args.warm_steps,
    }
    custom = {k: v for k, v in overrides.items() if v is not None}
    size = replace(size, **custom)
    args.size_name = (
        ("quick" if args.quick else "full")
        + ("-custom" if custom else "")
        + ("" if args.warm_start else "-cold")
    )
    out = (args.out or Path("benchmarks/results") / f"campaign-curve-{args.size_name}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    # The campaigns' adapters, datasets and trainings live under --out; the assembled base
    # model files stay where this machine keeps them, so they are not copied again.
    from agents.backends.local.catalog import DEFAULT_MODEL, gguf_dir

    os.environ.setdefault("THINKTANK_MODELS_DIR", str(gguf_dir()))
    os.environ["THINKTANK_HOME"] = str(out / "home")
    if args.base is None:
        args.base = DEFAULT_MODEL
    stamp(
        f"{size.rounds} rounds; games: spc {size.spc_games}, rlad {size.rlad_games}; "
        f"evaluation problems: spc {size.spc_eval}, rlad {size.rlad_eval}; "
        f"{size.max_steps} steps per training; "
        f"base {args.base} -> {out}"
    )
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        asyncio.run(run_campaign(kind, size, args, out))


if __name__ == "__main__":
    main()
