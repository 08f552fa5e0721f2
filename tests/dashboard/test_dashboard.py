"""The dashboard as a user sees it in a browser: the runs table, a run's conversation with its
decisions, a run streaming live, and a server with API keys on."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.calls import Agent, RunContext, ask
from graphs.common import PatternConfig
from graphs.patterns import PATTERNS, Pattern
from store import api_keys
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, wait_for_run
from tests.api.test_model_versions import register_two
from tests.dashboard.conftest import (
    CONTINUE,
    DISCUSSION,
    DOCS,
    STOP,
    dashboard_settings,
    open_page,
    screenshot,
    submit,
)

LANES = ["CEO", "Recruiter", "Solver", "Critic 1", "Critic 2", "Evaluator"]


def runs_url(server: LiveServer) -> str:
    return f"{server.url}/ui/#/runs"


def run_url(server: LiveServer, run_id: str) -> str:
    return f"{server.url}/ui/#/runs/{run_id}"


def api_turns(server: LiveServer, run_id: str, **headers: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/runs/{run_id}/turns", headers=headers)
    response.raise_for_status()
    return response.json()


def row_count(page: Any) -> int:
    return page.locator("#runs-body tr").count()


def finished_cards(page: Any) -> Any:
    return page.locator("#timeline .turn:not(.pending)")


# --- the runs table ------------------------------------------------------------------------


def test_the_runs_table_lists_runs_with_their_facts_filters_and_search(
    server: LiveServer, page: Any
) -> None:
    discussion = submit(server, DISCUSSION)
    tricky = 'Which is larger, <b>9</b> or 11? <img src=x onerror="window.pwned=1">'
    voted = submit(
        server, {"pattern": "self_consistency", "problem": tricky, "config": {"samples": 3}}
    )
    facts = {r["id"]: r for r in httpx.get(f"{server.url}/v1/runs").json()["items"]}

    page.goto(runs_url(server))
    page.wait_for_function("document.querySelectorAll('#runs-body tr').length === 2")
    row = page.locator(f"#runs-body tr[data-run-id='{discussion}']")
    cells = row.locator("td")
    assert cells.nth(1).inner_text() == discussion[:8]
    assert cells.nth(2).inner_text() == "discussion"
    assert cells.nth(3).inner_text() == "succeeded"
    assert cells.nth(5).inner_text() == "5"
    assert cells.nth(7).inner_text() == f"{facts[discussion]['usage']['total_tokens']:,}"
    assert cells.nth(8).inner_text() == "$0"
    assert re.fullmatch(r"\d+(\.\d+)? m?s", cells.nth(9).inner_text())

    # problem text is shown as text, never run as markup
    problem_cell = page.locator(f"#runs-body tr[data-run-id='{voted}'] td.problem")
    assert "<b>9</b>" in problem_cell.inner_text()
    assert page.locator("#runs-body b, #runs-body img").count() == 0
    assert page.evaluate("window.pwned") is None
    screenshot(page, "runs")

    page.select_option("#filter-pattern", "self_consistency")
    page.wait_for_function("document.querySelectorAll('#runs-body tr').length === 1")
    assert page.locator("#runs-body tr").get_attribute("data-run-id") == voted
    assert "pattern=self_consistency" in page.url

    page.select_option("#filter-pattern", "")
    page.wait_for_function("document.querySelectorAll('#runs-body tr').length === 2")
    page.fill("#filter-q", "LARGER")
    page.wait_for_function("document.querySelectorAll('#runs-body tr').length === 1")
    assert page.locator("#runs-body tr").get_attribute("data-run-id") == voted

    page.fill("#filter-q", discussion[:6])
    page.wait_for_function(
        f"document.querySelector('#runs-body tr')?.dataset.runId === '{discussion}'"
    )
    assert row_count(page) == 1

    page.fill("#filter-q", "no such problem anywhere")
    page.wait_for_function("document.querySelectorAll('#runs-body tr').length === 0")
    assert page.locator("#runs-info").inner_text() == "No run matches these filters."


def test_the_runs_table_updates_while_runs_are_going(tmp_path: Path, page: Any) -> None:
    with LiveServer(dashboard_settings(tmp_path, latency_s=0.5)) as server:
        first = submit(server, DISCUSSION, wait=False)
        page.goto(runs_url(server))
        page.evaluate("window.notReloaded = true")
        status = "document.querySelector(\"tr[data-run-id='{}']\")?.dataset.status"
        page.wait_for_function(f"['queued', 'running'].includes({status.format(first)})")

        second = submit(server, DISCUSSION, wait=False)
        page.locator(f"#runs-body tr[data-run-id='{second}']").wait_for()
        page.wait_for_function(f"{status.format(first)} === 'succeeded'", timeout=30_000)
        page.wait_for_function(f"{status.format(second)} === 'succeeded'", timeout=30_000)
        assert page.locator(f"tr[data-run-id='{first}'] td.answer").inner_text() == "5"
        assert page.evaluate("window.notReloaded") is True


# --- one run -------------------------------------------------------------------------------


def lane_colors(page: Any) -> dict[str, str]:
    """The lanes as the legend above the conversation lists them, each with its colour."""
    heads = page.locator("#timeline-lanes .lane-head").all()
    return {head.get_attribute("data-lane"): border_color(head) for head in heads}


def lane_names(page: Any) -> list[str]:
    return list(lane_colors(page))


def border_color(element: Any) -> str:
    return element.evaluate("(el) => getComputedStyle(el).borderTopColor")


def reads_before(first: Any, then: Any) -> bool:
    """Whether ``first`` comes before ``then`` in the page's reading order."""
    return first.evaluate(
        "(el, other) => (el.compareDocumentPosition(other) & Node.DOCUMENT_POSITION_FOLLOWING) > 0",
        then.element_handle(),
    )


def test_a_run_page_shows_every_turn_in_its_agents_lane_and_the_ceos_decisions(
    server: LiveServer, page: Any
) -> None:
    run_id = submit(server, DISCUSSION)
    turns = api_turns(server, run_id)
    run = httpx.get(f"{server.url}/v1/runs/{run_id}").json()

    page.goto(run_url(server, run_id))
    page.wait_for_function(
        f"document.querySelectorAll('#timeline .turn:not(.pending)').length === {len(turns)}"
    )
    assert page.locator("#run-answer").inner_text() == "5"
    assert "ceo_stop" in page.locator("#run-summary").inner_text()
    assert f"{run['usage']['total_tokens']:,}" in page.locator("#run-summary").inner_text()

    # one lane per agent, each turn in its agent's lane (its name and colour), in the order
    # the turns were taken
    lanes = lane_colors(page)
    assert list(lanes) == LANES
    assert len(set(lanes.values())) == len(LANES)
    cards = finished_cards(page)
    assert [cards.nth(i).get_attribute("data-key") for i in range(cards.count())] == [
        t["key"] for t in turns
    ]
    for i, turn in enumerate(turns):
        card = cards.nth(i)
        assert card.get_attribute("data-agent") == turn["agent"]
        assert card.locator(".agent").inner_text() == turn["agent"]
        assert border_color(card) == lanes[turn["agent"]]
        assert f"{turn['prompt_tokens']} → {turn['completion_tokens']} tokens" in (
            card.locator(".stats").inner_text()
        )
    # the two critics of one step stand side by side
    critics = page.locator("#timeline .turn[data-role='critic']")
    tops = critics.evaluate_all("cards => cards.map((card) => card.offsetTop)")
    assert tops[0] == tops[1], tops

    # the CEO's decisions: continue with a team and a budget, then stop
    ceo = page.locator("#timeline .decision[data-by='ceo']")
    assert ceo.count() == 2
    first, last = ceo.nth(0).inner_text(), ceo.nth(1).inner_text()
    assert "CEO · round 0" in first and "Continue" in first
    assert "recruit 3 experts" in first and "128 tokens per expert call" in first
    assert "add the two numbers carefully" in first
    assert "CEO · round 1" in last and "Stop" in last and "not honoured" not in last
    # each decision right after the turn that made it, under it, in its agent's colour
    ceo_turns = page.locator("#timeline .turn[data-role='ceo']")
    recruiter = page.locator("#timeline .turn[data-role='recruiter']")
    assert reads_before(ceo_turns.nth(0), ceo.nth(0)) and reads_before(ceo.nth(0), recruiter)
    assert ceo.nth(0).evaluate("(el) => el.closest('.turn-group').dataset.node") == "ceo"
    assert ceo_turns.nth(0).bounding_box()["y"] < ceo.nth(0).bounding_box()["y"]
    assert ceo.nth(0).evaluate("(el) => getComputedStyle(el).borderLeftColor") == lanes["CEO"]
    critics_said = page.locator("#timeline .decision[data-by='critics']")
    assert "the solver revises" in critics_said.nth(0).inner_text()
    assert "no revision" in critics_said.nth(1).inner_text()
    evaluator = page.locator("#timeline .decision[data-by='evaluator']").inner_text()
    assert "judged not correct" in evaluator and "next round" in evaluator

    # reasoning is folded away until asked for; the answer text is not
    solver = page.locator("#timeline .turn[data-role='solver']").first
    reasoning = solver.locator("details.think")
    assert not reasoning.locator(".text").is_visible()
    assert solver.get_by_text("2 + 3 = 5 so \\boxed{5}").is_visible()
    reasoning.locator("summary").click()
    assert reasoning.locator(".text").inner_text() == "Two plus three: count 3, 4, 5."

    # parsed output, and the prompt on request
    disagreeing = page.locator("#timeline .turn[data-role='critic']:has-text('Check the carry')")
    assert "agree: no" in disagreeing.locator(".parsed").inner_text()
    solver.locator("details.prompt summary").click()
    solver.locator(".message-role", has_text="system").wait_for()
    assert "What is 2+3?" in solver.locator("details.prompt").inner_text()

    # charts: tokens per agent and per round, a bar per turn on the latency timeline
    captions = page.locator("#charts figcaption").all_inner_texts()
    assert captions[:2] == ["Tokens per agent", "Tokens per round"]
    assert page.locator("#charts figure").nth(0).locator("rect").count() == 2 * len(LANES)
    assert page.locator("#charts .turn-bar").count() == len(turns)

    screenshot(page, "run-page")


def test_a_live_run_streams_new_turns_into_the_page(tmp_path: Path, page: Any) -> None:
    with LiveServer(dashboard_settings(tmp_path, latency_s=0.5)) as server:
        run_id = submit(server, DISCUSSION, wait=False)
        page.goto(run_url(server, run_id))
        page.evaluate("window.notReloaded = true")

        # a turn's text arrives word by word while the model writes it
        page.wait_for_function(
            "[...document.querySelectorAll('#timeline .turn.pending .live-text')]"
            ".some(el => el.textContent.trim().split(/\\s+/).length >= 2)"
        )
        assert page.locator("#stream-state").inner_text() == "● live"
        screenshot(page, "run-live")
        seen = finished_cards(page).count()
        page.wait_for_function(
            f"document.querySelectorAll('#timeline .turn:not(.pending)').length > {seen}"
        )
        page.wait_for_selector("#timeline .decision[data-by='ceo']")

        page.wait_for_selector(".page-head .badge[data-status='succeeded']", timeout=30_000)
        turns = api_turns(server, run_id)
        page.wait_for_function(
            f"document.querySelectorAll('#timeline .turn:not(.pending)').length === {len(turns)}"
        )
        assert page.locator("#timeline .turn.pending").count() == 0
        assert page.locator("#timeline .decision[data-by='ceo']").count() == 2
        assert page.locator("#run-answer").inner_text() == "5"
        assert page.evaluate("window.notReloaded") is True
        page.wait_for_selector("#charts .turn-bar")
        screenshot(page, "run-live-finished")
        if os.environ.get("THINKTANK_DOCS_SCREENSHOT"):  # the README's picture
            page.set_viewport_size({"width": 1400, "height": 1400})
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(DOCS / "run-page.png"))


def test_cancelling_a_running_run_from_its_page(tmp_path: Path, page: Any) -> None:
    with LiveServer(dashboard_settings(tmp_path, latency_s=0.5)) as server:
        run_id = submit(server, DISCUSSION, wait=False)
        page.goto(run_url(server, run_id))
        page.wait_for_selector("#timeline .turn")
        page.click("#cancel-run")
        page.wait_for_selector(".page-head .badge[data-status='cancelled']", timeout=30_000)
        assert page.locator("#cancel-run").count() == 0
        assert httpx.get(f"{server.url}/v1/runs/{run_id}").json()["status"] == "cancelled"
        page.wait_for_function("document.querySelector('#stream-state').textContent === ''")
        assert page.locator("#timeline .turn.pending").count() == 0


def test_a_verifier_that_escalates_shows_why_and_the_step_it_flagged(
    tmp_path: Path, page: Any
) -> None:
    solution = (
        "6 times 7 is 42.\n\nSo the answer is \\boxed{42}. Wait, let me add 6 seven times: "
        "6, 12, 18, 24, 30, 36, 42. Hmm, 42 again. \\boxed{42}"
    )
    # two of the four readable fast checks flag step 1: below the threshold, so slow checks
    fast = ["\\boxed{1}", "\\boxed{-1}", "\\boxed{1}", "\\boxed{0}", "I cannot tell."]
    slow = "Let me recheck paragraph 1: it is wrong. \\boxed{1}"
    replies = {"solver": [solution], "detector": ["No"], "verifier": [*fast, slow]}
    settings = dashboard_settings(tmp_path, latency_s=0.2, replies=replies)
    with LiveServer(settings) as server:
        run_id = submit(
            server,
            {
                "pattern": "sdv",
                "problem": "What is 6 times 7?",
                "config": {
                    "fast_checks": 5,
                    "agreement_threshold": 0.8,
                    "refine_rounds": 0,
                    "reference_answer": "42",
                },
            },
        )
        page.goto(run_url(server, run_id))
        verifier = page.locator("#timeline .decision[data-by='verifier']")
        verifier.wait_for()
        said = verifier.inner_text()
        assert "fast checks disagreed (agreement 50%) → slow check" in said
        assert "flagged step 1" in said and "solution rejected" in said

        detector = page.locator("#timeline .decision[data-by='detector']")
        assert detector.count() >= 1
        assert "not complete → keep writing" in detector.nth(0).inner_text()
        assert "at “wait”" in detector.nth(0).inner_text()

        lanes = lane_names(page)
        assert lanes[0] == "Solver"
        assert [lane for lane in lanes if "verifier" in lane] == [
            *(f"Fast verifier {i}" for i in range(5)),
            "Slow verifier 0",
            "Slow verifier 1",
        ]
        assert "correct (reference 42)" in page.locator("#run-summary").inner_text()
        screenshot(page, "run-sdv")

        page.goto(runs_url(server))
        correct = page.locator(f"#runs-body tr[data-run-id='{run_id}'] td.correct")
        correct.wait_for()
        assert correct.inner_text() == "correct"


# --- patterns the dashboard does not know ---------------------------------------------------


class OracleConfig(PatternConfig):
    """A pattern that exists only in this test."""


class OracleState(TypedDict, total=False):
    problem: str
    answer: str


ORACLE = Agent("Oracle", "oracle", "policy")


async def consult(state: OracleState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    turn = await ask(ctx, ORACLE, [], key="consult", node="consult")
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {"by": "oracle", "confidence": 0.9, "flagged_step": 2, "why": "<i>too quick</i>"},
    )
    return {"answer": turn.text}


def oracle_graph() -> StateGraph:
    graph = StateGraph(OracleState, context_schema=RunContext)
    graph.add_node("consult", consult)
    graph.add_edge(START, "consult")
    graph.add_edge("consult", END)
    return graph


@pytest.fixture
def oracle_pattern(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    pattern = Pattern(
        name="oracle",
        summary="one oracle, one decision",
        config_model=OracleConfig,
        build_graph=oracle_graph,
        initial_state=lambda problem, _config: {"problem": problem},
        recursion_limit=lambda _config: 5,
    )
    monkeypatch.setitem(PATTERNS, "oracle", pattern)
    yield


def test_decisions_of_a_kind_it_does_not_know_show_every_field(
    oracle_pattern: None, server: LiveServer, page: Any
) -> None:
    run_id = submit(server, {"pattern": "oracle", "problem": "Is it <i>so</i>?"})
    page.goto(run_url(server, run_id))
    decision = page.locator("#timeline .decision[data-by='oracle']")
    decision.wait_for()
    assert decision.locator(".decision-title").inner_text() == "Oracle"
    assert decision.locator("dt").all_inner_texts() == ["confidence", "flagged step", "why"]
    assert decision.locator("dd").all_inner_texts() == ["0.9", "2", "<i>too quick</i>"]
    assert page.locator(".problem-text").inner_text() == "Is it <i>so</i>?"
    assert page.locator("main i").count() == 0
    assert lane_names(page) == ["Oracle"]


def test_a_majority_vote_shows_its_count_and_the_samples_side_by_side(
    server: LiveServer, page: Any
) -> None:
    run_id = submit(
        server,
        {
            "pattern": "self_consistency",
            "problem": "What is 2+3?",
            "config": {"samples": 3, "early_stop": False},
        },
    )
    page.goto(run_url(server, run_id))
    vote = page.locator("#timeline .decision[data-by='vote']")
    vote.wait_for()
    assert "majority: 5" in vote.inner_text()
    assert lane_names(page) == ["Sampler 0", "Sampler 1", "Sampler 2"]
    # one read in the page, against the timeline: card by card, a scroll of the followed page
    # between two reads moved the later ones
    tops = page.evaluate(
        """() => [...document.querySelectorAll('#timeline .turn:not(.pending)')]
            .map((card) => card.offsetTop)"""
    )
    assert len(tops) == 3 and len(set(tops)) == 1, tops


# --- traces and keys -------------------------------------------------------------------------


def in_store(database_url: str, work: Any) -> Any:
    """``await work(store)`` on the server's database, in a thread of its own: Playwright's
    sync API keeps an event loop on this one."""

    async def main() -> Any:
        engine = create_engine(database_url)
        try:
            await migrate(engine)
            return await work(Store(engine))
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def test_a_traced_run_links_to_its_trace(tmp_path: Path, page: Any) -> None:
    template = "http://jaeger.example:16686/trace/{trace_id}"
    settings = dashboard_settings(tmp_path, trace_url_template=template)
    with LiveServer(settings) as server:
        run_id = submit(server, {"pattern": "single", "problem": "What is 2+3?"})
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        in_store(settings.database_url, lambda store: store.set_trace_id(run_id, trace_id))
        page.goto(run_url(server, run_id))
        link = page.locator("#trace-link")
        link.wait_for()
        assert link.get_attribute("href") == f"http://jaeger.example:16686/trace/{trace_id}"
        assert link.get_attribute("target") == "_blank"


def make_key(database_url: str) -> str:
    async def create(store: Store) -> str:
        _, key = await api_keys.create_key(store, "dashboard", rate_limit_per_minute=600)
        return key

    return in_store(database_url, create)


def test_with_keys_on_the_page_asks_for_the_key_once_per_browser_session(
    tmp_path: Path, browser: Any
) -> None:
    settings = dashboard_settings(tmp_path, auth="on")
    key = make_key(settings.database_url)
    # with its Content-Security-Policy in force
    with LiveServer(settings) as server, open_page(browser, bypass_csp=False) as page:
        run_id = submit(server, DISCUSSION, Authorization=f"Bearer {key}")

        page.goto(runs_url(server))  # the page itself loads without a key
        page.wait_for_selector("#key-form")
        screenshot(page, "key-form")

        page.fill("#api-key", "tt_not_a_key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-error:has-text('unknown API key')")

        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}']")

        # the run page reads the transcript and the event stream with the key
        page.click(f"#runs-body tr[data-run-id='{run_id}'] td.problem a")
        page.wait_for_selector("#timeline .decision[data-by='ceo']")
        assert finished_cards(page).count() == len(
            api_turns(server, run_id, Authorization=f"Bearer {key}")
        )

        page.reload()  # same browser session: no second prompt
        page.wait_for_selector("#timeline .turn")
        assert page.locator("#key-form").count() == 0

        with open_page(browser, bypass_csp=False) as other:  # a new session asks again
            other.goto(runs_url(server))
            other.wait_for_selector("#key-form")


# --- model versions --------------------------------------------------------------------------


def test_the_model_versions_page_lists_versions_and_shows_one_with_its_metrics(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    settings = dashboard_settings(tmp_path)
    in_store(settings.database_url, register_two)
    # with its Content-Security-Policy in force
    with LiveServer(settings) as server, open_page(browser, bypass_csp=False) as page:
        page.goto(runs_url(server))
        page.click("nav a[data-nav='models']")
        page.wait_for_selector("#models-body tr[data-name='policy-sft-v1']")
        names = page.locator("#models-body tr td:first-child").all_inner_texts()
        assert names == ["critic-rl-v1", "policy-sft-v1"]
        critic = page.locator("#models-body tr[data-name='critic-rl-v1'] td").all_inner_texts()
        assert critic[:5] == ["critic-rl-v1", "critic", "rl", "smollm2", "policy-sft-v1"]
        assert critic[6] == "mean reward 0.75"
        assert page.locator("nav a.active").inner_text() == "Model versions"
        screenshot(page, "model-versions")

        # the critic's parent link opens the policy it was trained from
        page.click("#models-body tr[data-name='critic-rl-v1'] td:nth-child(5) a")
        page.wait_for_selector("#model-metrics")
        assert page.locator("#model-name").inner_text() == "policy-sft-v1"
        metrics = {
            row.get_attribute("data-metric"): row.locator("td").nth(1).inner_text()
            for row in page.locator("#model-metrics tbody tr").all()
        }
        assert metrics == {"eval_loss": "1.5", "eval_loss_base": "2.5"}
        fields = page.locator("#model-fields").inner_text()
        assert "ab" * 32 in fields and "policy-sft-v1" in fields
        screenshot(page, "model-version")

        page.goto(f"{server.url}/ui/#/models/policy-sft-v9")
        page.wait_for_selector("#models-error:has-text(\"no model version named 'policy-sft-v9'\")")


# --- layout: a long discussion, compact and readable ----------------------------------------

# What a real model writes: paragraphs of working, a few long words, some notation.
WORKING = (
    "First I restate the problem so nothing is lost: two apples and three apples are put "
    "together, and we want the total. Counting on from two, the next three numbers are "
    "three, four and five, so the total is five. To double-check, decompose differently: "
    "three plus two is also five, because addition is commutative. An alternative, more "
    "systematic verification uses the number line: start at zero, move two units right, "
    "then three more; the position reached is five. Nothing here depends on carrying, "
    "since both addends are single digits and their sum stays below ten. "
)
LONG_REPLIES = {
    "ceo": [
        "The team needs one more careful pass before we stop.\n" + CONTINUE,
        "The critics still disagree, so another round is worth its tokens.\n" + CONTINUE,
        "Everyone now agrees on the arithmetic.\n" + STOP,
    ],
    "recruiter": ["1. An arithmetic teacher.\n2. A careful checker.\n3. A sceptic."],
    "solver": [f"{WORKING}\nSo 2 + 3 = 5, and the answer is \\boxed{{5}}"],
    "critic": [
        f"{WORKING}The sum is right, and the reasoning is complete. [Agree]",
        f"{WORKING}Still, the characterisation of commutativity is loose. [Disagree]",
        f"{WORKING}Fine now: every step is justified. [Agree]",
    ],
    "evaluator": [
        f"{WORKING}\n### Correctness: 0\n### Advice: verify once more",
        f"{WORKING}\n### Correctness: 0\n### Advice: state commutativity precisely",
        "### Correctness: 1",
    ],
}
LONG_DISCUSSION = {**DISCUSSION, "config": {**DISCUSSION["config"], "max_rounds": 3}}

# The timeline's height, the narrowest card, how its text may wrap, and every run of letters
# and digits that a line break cut in two (a word drawn on two lines has two boxes).
LAYOUT = """() => {
  const timeline = document.querySelector('#timeline');
  const cards = [...timeline.querySelectorAll('.turn')];
  const texts = [...timeline.querySelectorAll('.turn .text')];
  const broken = [];
  const walker = document.createTreeWalker(timeline, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const word of node.data.matchAll(/[A-Za-z0-9]{2,}/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      const boxes = [...range.getClientRects()].filter((box) => box.width > 0);
      if (boxes.length > 1) broken.push(word[0]);
    }
  }
  return {
    timeline: timeline.getBoundingClientRect().height,
    page: document.documentElement.scrollHeight,
    narrowest: Math.min(...cards.map((card) => card.getBoundingClientRect().width)),
    wraps: [...new Set(texts.map((el) => {
      const style = getComputedStyle(el);
      return `${style.overflowWrap} ${style.wordBreak}`;
    }))],
    broken,
  };
}"""


def test_a_sixteen_turn_discussion_fits_in_two_screens_without_breaking_a_word(
    tmp_path: Path, page: Any
) -> None:
    with LiveServer(dashboard_settings(tmp_path, replies=LONG_REPLIES)) as server:
        run_id = submit(server, LONG_DISCUSSION)
        turns = api_turns(server, run_id)
        assert len(turns) == 16
        page.goto(run_url(server, run_id))
        page.wait_for_function(
            "document.querySelectorAll('#timeline .turn:not(.pending)').length === 16"
        )
        page.wait_for_selector("#charts .turn-bar")
        layout = page.evaluate(LAYOUT)
        screenshot(page, "run-long")

        # one turn per row made this 7,436 px tall; the window is 1,000 px
        assert layout["timeline"] < 2_000, layout
        assert layout["narrowest"] >= 280, layout  # a lane of ~190 px broke words
        assert layout["wraps"] == ["break-word normal"], layout  # never mid-word by choice
        assert layout["broken"] == [], layout

        # long text is cut short in place, and shows in full on request
        solver = page.locator("#timeline .turn[data-role='solver']").first
        text = solver.locator(".completion .text").first
        short = text.bounding_box()["height"]
        solver.get_by_role("button", name="Show all").click()
        assert text.bounding_box()["height"] > short * 1.5
        assert "the answer is \\boxed{5}" in text.inner_text()

        # still in the order they were said, each turn under its agent's colour and name
        cards = finished_cards(page)
        assert [cards.nth(i).get_attribute("data-key") for i in range(16)] == [
            t["key"] for t in turns
        ]
        lanes = lane_colors(page)
        assert list(lanes) == LANES
        for i, turn in enumerate(turns):
            card = cards.nth(i)
            assert card.locator(".agent").inner_text() == turn["agent"]
            assert border_color(card) == lanes[turn["agent"]]


# --- cancelled runs and time zones -----------------------------------------------------------


def test_a_cancelled_run_shows_no_error_for_an_answer(tmp_path: Path, page: Any) -> None:
    with LiveServer(dashboard_settings(tmp_path, latency_s=0.5)) as server:
        run_id = submit(server, DISCUSSION, wait=False)
        with httpx.Client(base_url=server.url) as client:
            client.post(f"/v1/runs/{run_id}/cancel").raise_for_status()
            assert wait_for_run(client, run_id)["status"] == "cancelled"

        page.goto(runs_url(server))
        answer = page.locator(f"#runs-body tr[data-run-id='{run_id}'] td.answer")
        answer.wait_for()
        assert answer.inner_text() == "cancelled"

        page.goto(run_url(server, run_id))
        page.wait_for_selector(".page-head .badge[data-status='cancelled']")
        facts = dict(
            zip(
                page.locator("#run-summary dt").all_text_contents(),
                page.locator("#run-summary dd").all_text_contents(),
                strict=True,
            )
        )
        assert facts["Answer"] == "none: cancelled"
        assert "Error" not in facts
        assert page.locator("#run-summary .error").count() == 0


def strip_zones(route: Any) -> None:
    """The API's answer with every time written without its zone, as SQLite once gave them."""
    response = route.fetch()
    zoneless = re.sub(r'("\d{4}-\d\d-\d\dT[\d:.]+)(Z|[+-]\d\d:\d\d)"', r'\1"', response.text())
    route.fulfill(response=response, body=zoneless)


@pytest.mark.parametrize("zones", ["as sent", "stripped"])
def test_a_run_made_a_moment_ago_says_so_in_tokyo(
    server: LiveServer, browser: Any, zones: str
) -> None:
    run_id = submit(server, {"pattern": "single", "problem": "What is 2+3?"})
    created = httpx.get(f"{server.url}/v1/runs/{run_id}").json()["created_at"]
    context = browser.new_context(timezone_id="Asia/Tokyo")
    try:
        page = context.new_page()
        if zones == "stripped":
            page.route("**/v1/runs**", strip_zones)
        page.goto(runs_url(server))
        cell = page.locator(f"#runs-body tr[data-run-id='{run_id}'] td").first
        cell.wait_for()
        assert re.fullmatch(r"\d{1,2}s ago", cell.inner_text()), cell.inner_text()
        # the full time, in Tokyo's clock, of the instant the server recorded
        utc = created if created.endswith("Z") or "+" in created[10:] else f"{created}Z"
        tokyo = page.evaluate(f"new Date({utc!r}).toLocaleString()")
        assert cell.get_attribute("title") == tokyo

        page.goto(run_url(server, run_id))
        page.wait_for_selector("#run-answer")
        assert tokyo in page.locator("#run-summary").inner_text()
        duration = page.locator("#run-duration").inner_text()
        assert re.fullmatch(r"\d+ ms|\d+\.\d+ s", duration), duration
    finally:
        # the runs page polls: a handler still between its fetch and its fulfil when the
        # context closes finds its response disposed, so let the running ones finish first
        for page in context.pages:
            page.unroute_all(behavior="wait")
        context.close()
