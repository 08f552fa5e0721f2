"""The CEO-managed discussion, driven by a scripted backend: what a user sees stored."""

from __future__ import annotations

from agents.backends.scripted import ScriptedBackend, Slow
from agents.model import ModelError
from tests.conftest import RunHarness

PROBLEM = "What is 6 times 7?"


def ceo(decision: str = "Continue", recruit: int = 3, tokens: int = 256) -> str:
    return (
        f"### Decision: <{decision}>\n### Recruit Number: {recruit}\n"
        f"### Direction: check the multiplication\n### Maximum Tokens: {tokens}"
    )


ROLES = "1. A mathematician specialized in arithmetic.\n2. A teacher.\n3. An engineer."
SOLUTION = "6 times 7 is 42. \\boxed{42}"
AGREE = "The answer matches mine. [Agree]"
DISAGREE = "I think the product is wrong. [Disagree]"
WRONG = "### Correctness: 0\n### Advice: recheck\n### Recruiting Suggestion: a checker"
RIGHT = "### Correctness: 1\n### Advice: none\n### Recruiting Suggestion: none"


def backend(latency_s: float = 0.0, **replies: list) -> ScriptedBackend:
    script = {
        "ceo": [ceo()],
        "recruiter": [ROLES],
        "solver": [SOLUTION],
        "critic": [AGREE],
        "evaluator": [WRONG],
    }
    script.update(replies)
    return ScriptedBackend(script, latency_s=latency_s)


async def turns_by_node(harness: RunHarness, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for turn in await harness.store.turns(run_id):
        counts[turn.node] = counts.get(turn.node, 0) + 1
    return counts


async def test_the_ceo_stops_after_round_1(harness: RunHarness) -> None:
    model = backend(ceo=[ceo("Continue"), ceo("Stop")])
    run_id, outcome = await harness.run(model, "discussion", PROBLEM, max_rounds=3)

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "ceo_stop"
    assert outcome["answer"] == "42"
    assert await turns_by_node(harness, run_id) == {
        "ceo": 2,
        "recruit": 1,
        "solve": 1,
        "critique": 2,
        "evaluate": 1,
    }
    ceo_decisions = harness.decisions("ceo")
    assert [d["decision"] for d in ceo_decisions] == ["continue", "stop"]


async def test_round_cap_ends_a_discussion_the_ceo_would_continue(harness: RunHarness) -> None:
    run_id, outcome = await harness.run(backend(), "discussion", PROBLEM, max_rounds=2)

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "max_rounds"
    counts = await turns_by_node(harness, run_id)
    assert counts["ceo"] == 2 and counts["evaluate"] == 2 and counts["solve"] == 2
    run = await harness.store.get_run(run_id)
    assert run.answer == "42"


async def test_token_budget_ends_the_run_and_is_never_exceeded(harness: RunHarness) -> None:
    long_solution = " ".join(["step"] * 200) + " \\boxed{42}"
    model = backend(solver=[long_solution])
    run_id, outcome = await harness.run(
        model, "discussion", PROBLEM, max_rounds=5, token_budget=150, token_menu=[128]
    )

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "token_budget"
    run = await harness.store.get_run(run_id)
    assert run.completion_tokens <= 150
    # The call that would have overrun was cut to what was left, not made in full.
    solver_turn = next(t for t in await harness.store.turns(run_id) if t.node == "solve")
    assert solver_turn.params["max_tokens"] < 128
    assert solver_turn.finish_reason == "length"


async def test_a_malformed_ceo_reply_gets_the_safe_default_and_is_recorded(
    harness: RunHarness,
) -> None:
    model = backend(ceo=["I am not sure what to do here."])
    run_id, outcome = await harness.run(
        model, "discussion", PROBLEM, max_rounds=1, token_menu=[64, 128]
    )

    assert outcome["status"] == "succeeded"
    ceo_turn = next(t for t in await harness.store.turns(run_id) if t.role == "ceo")
    assert not ceo_turn.parse_ok
    assert "decision" in (ceo_turn.parse_error or "").lower()
    assert ceo_turn.parsed == {
        "parse_ok": False,
        "parse_error": ceo_turn.parse_error,
        "decision": "continue",
        "recruit_number": 2,
        "direction": "No advice yet.",
        "max_tokens": 128,
    }
    # two experts: one solver and one critic
    assert (await turns_by_node(harness, run_id))["critique"] == 1


async def test_a_backend_error_mid_round_fails_the_run_and_keeps_the_turns(
    harness: RunHarness,
) -> None:
    model = backend(critic=[AGREE, ModelError("connection refused by the model server")])
    run_id, outcome = await harness.run(model, "discussion", PROBLEM, max_rounds=1)

    assert outcome["status"] == "failed"
    run = await harness.store.get_run(run_id)
    assert run.status == "failed"
    assert "connection refused by the model server" in (run.error or "")
    nodes = [t.node for t in await harness.store.turns(run_id)]
    assert nodes[:3] == ["ceo", "recruit", "solve"]
    failed = [t for t in await harness.store.turns(run_id) if t.error]
    assert len(failed) == 1 and failed[0].role == "critic"


async def test_critics_review_in_parallel(harness: RunHarness) -> None:
    model = backend(
        ceo=[ceo(recruit=5)],
        recruiter=["1. a\n2. b\n3. c\n4. d\n5. e"],
        critic=[Slow(AGREE, 0.05)],
    )
    run_id, outcome = await harness.run(model, "discussion", PROBLEM, max_rounds=1, agents=5)

    assert outcome["status"] == "succeeded"
    assert (await turns_by_node(harness, run_id))["critique"] == 4
    assert model.max_in_flight == 4


async def test_disagreeing_critics_make_the_solver_revise(harness: RunHarness) -> None:
    model = backend(
        solver=["6 times 7 is 48. \\boxed{48}", SOLUTION],
        critic=[DISAGREE, DISAGREE, AGREE, AGREE],
    )
    run_id, outcome = await harness.run(
        model, "discussion", PROBLEM, max_rounds=1, max_inner_turns=2
    )

    assert outcome["answer"] == "42"
    solves = [t for t in await harness.store.turns(run_id) if t.node == "solve"]
    assert len(solves) == 2
    revision_prompt = solves[1].messages[-1]["content"]
    assert "I think the product is wrong." in revision_prompt
    assert harness.decisions("critics")[0]["revise"] is True
    assert harness.decisions("critics")[1] == {
        "by": "critics",
        "round": 0,
        "inner_turn": 1,
        "agree": 2,
        "disagree": 0,
        "abstain": 0,
        "revise": False,
    }


async def test_a_critic_that_only_disagrees_still_tells_the_solver_so(
    harness: RunHarness,
) -> None:
    model = backend(
        solver=["6 times 7 is 48. \\boxed{48}", SOLUTION],
        critic=["[Disagree]", AGREE, AGREE, AGREE],
    )
    run_id, outcome = await harness.run(
        model, "discussion", PROBLEM, max_rounds=1, max_inner_turns=1
    )

    assert outcome["answer"] == "42"
    solves = [t for t in await harness.store.turns(run_id) if t.node == "solve"]
    revision_prompt = solves[1].messages[-1]["content"]
    critic = next(
        t.agent for t in await harness.store.turns(run_id) if t.completion == "[Disagree]"
    )
    assert f"[{critic}]: [Disagree]\n" in revision_prompt


async def test_the_evaluator_ends_the_run_when_policy_allows(harness: RunHarness) -> None:
    _, outcome = await harness.run(backend(evaluator=[RIGHT]), "discussion", PROBLEM, max_rounds=3)
    assert outcome["stop_reason"] == "evaluator_correct"

    _, outcome = await harness.run(
        backend(evaluator=[RIGHT]), "discussion", PROBLEM, max_rounds=2, stop_policy="ceo"
    )
    assert outcome["stop_reason"] == "max_rounds"


async def test_agents_see_only_text_after_think(harness: RunHarness) -> None:
    model = backend(solver=["<think>secret scratch work</think>Final: \\boxed{42}"])
    run_id, _ = await harness.run(model, "discussion", PROBLEM, max_rounds=1)

    turns = await harness.store.turns(run_id)
    critic_prompt = next(t for t in turns if t.role == "critic").messages[-1]["content"]
    assert "Final: \\boxed{42}" in critic_prompt
    assert "secret scratch work" not in critic_prompt
    solver = next(t for t in turns if t.role == "solver")
    assert "secret scratch work" in solver.completion


async def test_independent_critics_solve_alone_and_agree_by_their_answers(
    harness: RunHarness,
) -> None:
    model = backend(
        ceo=[ceo(recruit=4)],
        solver=["6 times 7 is 48. \\boxed{48}", SOLUTION],
        critic=[
            *("6 * 7 = 42. \\boxed{42}", "6 * 7 = 48, \\boxed{48}", "I am not sure."),
            *("7 * 6 = 42, \\boxed{42}", "\\boxed{42}", "It is \\boxed{42}"),
        ],
    )
    run_id, outcome = await harness.run(
        model,
        "discussion",
        PROBLEM,
        agents=4,
        max_rounds=1,
        max_inner_turns=1,
        critic_view="independent",
    )

    assert outcome["answer"] == "42"
    turns = await harness.store.turns(run_id)
    for critic in (t for t in turns if t.role == "critic"):
        prompt = "\n".join(m["content"] for m in critic.messages)
        assert PROBLEM in prompt
        assert "48" not in prompt and "chat history" not in prompt
    first, second = harness.decisions("critics")
    assert (first["agree"], first["disagree"], first["abstain"], first["revise"]) == (1, 1, 1, True)
    assert (second["agree"], second["disagree"], second["abstain"]) == (3, 0, 0)
    # the solver sees the dissent in full and the agreement by its answer; no word of the critic
    # that never reached an answer
    revision_prompt = [t for t in turns if t.node == "solve"][1].messages[-1]["content"]
    assert "]: 6 * 7 = 42. \\boxed{42}\n[Disagree]\n" in revision_prompt
    assert "]: I solved it on my own and also got \\boxed{48}. [Agree]\n" in revision_prompt
    assert "I am not sure." not in revision_prompt
