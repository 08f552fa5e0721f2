"""Terminal rendering: the live conversation of a run, and stored runs read back."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.status import Status
from rich.table import Table

from services.cli.common import escape
from store.tables.runs import Run, Turn

ROLE_COLOURS = {
    "ceo": "magenta",
    "recruiter": "blue",
    "solver": "green",
    "critic": "yellow",
    "evaluator": "cyan",
}


def _clip(text: str, limit: int = 1200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more chars]"


class LivePrinter:
    """Prints each turn as it finishes, the decisions that steer the run, and a spinner
    naming who is speaking (or what the model is loading) in between; with ``token`` events,
    the spinner also shows the latest words of whoever typed last."""

    TYPING_REFRESH_S = 0.1
    """Tokens come faster than anyone reads; the status line is redrawn at most this often."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.speaking: dict[str, str] = {}
        self.typed: dict[str, str] = {}  # turn key -> the end of its text so far
        self.typing: str | None = None  # the turn that sent the latest token
        self.status: Status | None = None
        self.started = time.perf_counter()
        self.refreshed = 0.0
        self.loading: str | None = None

    def start(self, run_id: str, pattern: str, problem: str) -> None:
        self.started = time.perf_counter()
        if self.quiet:
            return
        self.console.print(Panel(escape(problem), title=f"{pattern} · run {run_id}", expand=False))
        self.status = self.console.status("starting…")
        self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def _refresh(self) -> None:
        if self.status is None:
            return
        self.refreshed = time.perf_counter()
        elapsed = time.perf_counter() - self.started
        if self.loading:
            self.status.update(f"{self.loading} [dim]({elapsed:.0f}s)[/dim]")
        elif self.speaking:
            who = ", ".join(self.speaking.values())
            self.status.update(f"{who} writing… [dim]({elapsed:.0f}s)[/dim]{self._typing_tail()}")
        else:
            self.status.update(f"working… [dim]({elapsed:.0f}s)[/dim]")

    def _typing_tail(self) -> str:
        """`` · Agent: …latest words`` of the turn that typed last, clipped to one line."""
        key = self.typing
        if key is None or key not in self.speaking or not self.typed.get(key):
            return ""
        words = " ".join(self.typed[key].split())
        room = max(10, min(80, self.console.width - 40))
        tail = words if len(words) <= room else "…" + words[-room:]
        return f" · {escape(self.speaking[key])}: [dim]{escape(tail)}[/dim]"

    def progress(self, message: str) -> None:
        """Model-loading progress from a backend."""
        self.loading = None if message.startswith("model ready") else message
        if not self.quiet:
            self.console.print(f"[dim]· {escape(message)}[/dim]")
        self._refresh()

    def on_event(self, run_id: str, event: str, payload: dict[str, Any]) -> None:
        if event == "token":
            key = payload["key"]
            # only the latest words are shown: keep a bounded tail, not the whole reply
            self.typed[key] = (self.typed.get(key, "") + payload["text"])[-400:]
            self.typing = key
            if time.perf_counter() - self.refreshed < self.TYPING_REFRESH_S:
                return
        elif event == "turn_started":
            self.speaking[payload["key"]] = payload["agent"]
        elif event == "turn_finished":
            self.speaking.pop(payload["key"], None)
            self.typed.pop(payload["key"], None)
            self.loading = None
            if not self.quiet:
                self._print_turn(payload)
        elif event == "decision" and not self.quiet:
            self._print_decision(payload)
        elif event == "turn_retry" and not self.quiet:
            self.console.print(
                f"[yellow]↻ {escape(payload['agent'])}: try {payload['attempt']} of "
                f"{payload['attempts']} failed ({escape(payload['error'])}); "
                f"trying again in {payload['delay_s']:.1f}s[/yellow]",
                soft_wrap=True,
            )
        self._refresh()

    def _print_turn(self, turn: dict[str, Any]) -> None:
        colour = ROLE_COLOURS.get(turn["role"], "white")
        title = (
            f"[{colour}]{escape(turn['agent'])}[/{colour}] · {turn['node']} · round {turn['round']}"
        )
        subtitle = (
            f"{turn['completion_tokens']} tokens · {turn['latency_s']:.1f}s · {turn['model']}"
            + ("" if turn.get("parse_ok", True) else " · [red]unparsed[/red]")
        )
        body = escape(_clip(turn["completion"])) or "[dim](empty)[/dim]"
        self.console.print(Panel(body, title=title, subtitle=subtitle, title_align="left"))

    def _print_decision(self, decision: dict[str, Any]) -> None:
        by = decision.get("by")
        if by == "ceo":
            verdict = decision["decision"].upper() + (
                ""
                if decision.get("honoured", True) or decision["decision"] != "stop"
                else " (ignored before any solution)"
            )
            text = (
                f"CEO decides [bold]{verdict}[/bold]: {decision['recruit_number']} experts, "
                f"{decision['max_tokens']} tokens each; direction: {escape(decision['direction'])}"
            )
            if not decision.get("parse_ok", True):
                text += f" [red](unparsed reply: {escape(decision.get('parse_error') or '')})[/red]"
        elif by == "critics":
            text = f"critics: {decision['agree']} agree, {decision['disagree']} disagree"
            if decision.get("abstain"):
                text += f", {decision['abstain']} without an answer"
            if decision["revise"]:
                text += " → solver revises"
        elif by == "evaluator":
            text = f"evaluator: {'correct' if decision['correct'] else 'not correct'}"
            if decision.get("stop_reason"):
                text += f" → stop ({decision['stop_reason']})"
        elif by == "vote":
            text = (
                f"vote: {escape(str(decision['answer']))} with {decision['votes']} of "
                f"{decision['samples']} samples ({decision['cancelled']} cancelled)"
            )
        else:
            # every other pattern's decisions, one readable line: "detector: cue=wait, ..."
            fields = ", ".join(
                f"{key}={_short(value)}" for key, value in decision.items() if key != "by"
            )
            text = escape(f"{by or 'decision'}: {fields}")
        self.console.print(f"[bold]▸[/bold] {text}")

    def summary(self, run: Run) -> None:
        if self.quiet:
            self.console.print(run.answer if run.answer is not None else "(no answer)")
            return
        elapsed = time.perf_counter() - self.started
        lines = [
            f"answer: [bold]{escape(str(run.answer))}[/bold]",
            f"status: {run.status}" + (f" ({run.stop_reason})" if run.stop_reason else ""),
            f"tokens: {run.prompt_tokens} prompt + {run.completion_tokens} generated",
            f"time: {elapsed:.1f}s",
            f"run id: {run.id}  (thinktank runs show {run.id})",
        ]
        if run.error:
            lines.insert(1, f"[red]error: {escape(run.error)}[/red]")
        self.console.print(Panel("\n".join(lines), title="result", expand=False))


def print_runs(console: Console, runs: list[Run]) -> None:
    if not runs:
        console.print('no runs stored yet: try `thinktank solve "What is 2+3?"`')
        return
    table = Table("id", "pattern", "status", "answer", "tokens", "created", "problem")
    for run in runs:
        table.add_row(
            run.id,
            run.pattern,
            run.status,
            escape(str(run.answer)) if run.answer is not None else "",
            str(run.prompt_tokens + run.completion_tokens),
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(_clip(run.problem, 60)),
        )
    console.print(table)


def run_as_dict(run: Run, turns: list[Turn]) -> dict[str, Any]:
    columns = [c.key for c in Run.__table__.columns]
    out = {c: getattr(run, c) for c in columns}
    out["turns"] = [{c.key: getattr(t, c.key) for c in Turn.__table__.columns} for t in turns]
    return out


def print_run(console: Console, run: Run, turns: list[Turn], *, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(run_as_dict(run, turns), default=str))
        return
    header = [
        f"pattern: {run.pattern}   status: {run.status}"
        + (f" ({run.stop_reason})" if run.stop_reason else ""),
        f"answer: {escape(str(run.answer))}",
        f"tokens: {run.prompt_tokens} prompt + {run.completion_tokens} generated   "
        f"turns: {len(turns)}",
        f"config: {escape(json.dumps(run.config))}",
    ]
    if run.error:
        header.append(f"[red]error: {escape(run.error)}[/red]")
    console.print(Panel(escape(run.problem), title=f"run {run.id}", expand=False))
    console.print("\n".join(header))
    for number, turn in enumerate(turns, start=1):
        colour = ROLE_COLOURS.get(turn.role, "white")
        parts = [
            f"[dim]model[/dim] {escape(turn.model)}"
            + (f"  [dim]adapter[/dim] {escape(turn.adapter)}" if turn.adapter else "")
            + f"  [dim]params[/dim] {escape(json.dumps(turn.params))}",
        ]
        if turn.role_description:
            parts.append(f"[dim]role description[/dim] {escape(turn.role_description)}")
        for message in turn.messages:
            parts.append(f"[dim]{message['role']}:[/dim] {escape(message['content'])}")
        parts.append(f"[bold]completion[/bold] ({turn.finish_reason}):\n{escape(turn.completion)}")
        if turn.parsed is not None:
            parts.append(f"[dim]parsed[/dim] {escape(json.dumps(turn.parsed))}")
        if not turn.parse_ok:
            parts.append(f"[red]parse failed: {escape(turn.parse_error or '')}[/red]")
        if turn.error:
            parts.append(f"[red]error: {escape(turn.error)}[/red]")
        console.print(
            Panel(
                "\n".join(parts),
                title=f"#{number} [{colour}]{escape(turn.agent)}[/{colour}] ({turn.role}) · "
                f"{turn.node} · round {turn.round}",
                subtitle=f"{turn.prompt_tokens} prompt + {turn.completion_tokens} generated tokens"
                f" · {turn.latency_ms:.0f} ms",
                title_align="left",
            )
        )


def _short(value: Any, limit: int = 60) -> str:
    """A decision's field as a short one-line value."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
