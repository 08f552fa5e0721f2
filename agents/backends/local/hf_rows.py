"""The rows of one transformers ``generate`` call: how each finishes, streams and is scored.

One request's n samples are n rows of a left-padded batch; rows of different requests share
the call. :class:`RowStopper` finishes each row on its own terms, :class:`RowText` streams a
row's text incrementally, :class:`ChosenLogprobs` keeps each chosen token's log-probability.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from agents.backends.local.hf_weights import LoadedModel
from agents.backends.local.text import cut_at_stop, stable_prefix
from agents.model import Completion, TokenLogprob

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled"]


def stop_window(stops: Sequence[str]) -> int:
    """How many trailing tokens surely contain a stop string that just completed.

    Every byte-level token decodes to at least one byte, and a character is at most 4 bytes.
    """
    longest = max((len(stop) for stop in stops), default=0)
    return 4 * longest + 8


@dataclass
class Row:
    """One sequence of a batch: a request's prompt, repeated for each of its n samples."""

    prompt_ids: list[int]
    max_tokens: int
    stop: list[str]
    top_logprobs: int
    adapter: str | None = None  # LoRA adapter (agents.backends.lora); None: the base model
    halt: threading.Event | None = None  # set: the row ends at the next step ("cancelled")


@dataclass
class RowResult:
    completion: Completion
    tokens: list[int]


class ChosenLogprobs(LogitsProcessor):
    """The log-probability of every token each row of a batch generates, step by step.

    What is kept is the log-softmax of the model's raw logits (temperature 1, no top_p), not
    of the distribution actually sampled from: training (``training/rl.py``) computes its
    policy's log-probs that way, so a stored value is the "old" log-prob it would compute
    itself for the same weights, and a greedy or low-temperature sample does not store a
    near-certain 0.0 for every token. transformers applies the processors a caller passes
    after the generation config's own (penalties, suppressed tokens: none for the models served
    here) and before temperature and top_p, so ``scores`` here are the raw logits.

    Nothing extra is kept per step beyond one vocab-sized row per sequence, replaced at the
    next step (``output_logits`` would keep every step's logits until the end), and no extra
    forward pass is run: the step's token is only known once it is sampled, so
    :class:`RowStopper` calls :meth:`take` after each step.
    """

    def __init__(self, rows: int) -> None:
        self.values: list[list[float]] = [[] for _ in range(rows)]
        self._pending: torch.Tensor | None = None  # [rows, vocab] of the step being sampled

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores  # unchanged: sampling goes on as if this processor were not there

    def take(self, input_ids: torch.Tensor) -> None:
        """Record the log-prob of the token each row just received (the last column)."""
        if self._pending is None:
            return
        chosen = input_ids[:, -1:].to(self._pending.device)
        for row, value in enumerate(self._pending.gather(1, chosen).squeeze(1).tolist()):
            self.values[row].append(value)
        self._pending = None

    def of(self, index: int, length: int) -> list[float] | None:
        """Row ``index``'s first ``length`` log-probs (None if, against expectation, a step
        was missed: no values rather than values shifted against their tokens)."""
        values = self.values[index]
        return values[:length] if len(values) >= length else None


class RowStopper(StoppingCriteria):
    """Finishes each row of a batch on its own terms: EOS, its stop strings, its max_tokens or
    its halt event.

    This is what lets requests with different ``max_tokens`` and ``stop`` share one
    ``generate`` call; it also records, per row, how many tokens were really generated.
    Called after every decoding step, it is also where ``on_halt`` hands back rows just halted
    and ``between_steps`` serves interjections.
    """

    def __init__(
        self,
        rows: Sequence[Row],
        prompt_width: int,
        loaded: LoadedModel,
        cancel: Sequence[threading.Event],
        on_halt: Callable[[RowStopper, torch.Tensor], None] | None = None,
        between_steps: Callable[[], None] | None = None,
        chosen: ChosenLogprobs | None = None,
    ) -> None:
        self.rows = rows
        self.prompt_width = prompt_width
        self.loaded = loaded
        self.cancel = cancel
        self.on_halt = on_halt
        self.between_steps = between_steps
        self.chosen = chosen
        self.windows = [stop_window(row.stop) for row in rows]
        self.finished_len: list[int | None] = [None] * len(rows)
        self.reason: list[FinishReason | None] = [None] * len(rows)

    def _stop_string_done(self, index: int, input_ids: torch.Tensor) -> bool:
        row = self.rows[index]
        if not row.stop:
            return False
        start = max(self.prompt_width, input_ids.shape[1] - self.windows[index])
        tail = self.loaded.tokenizer.decode(
            input_ids[index, start:].tolist(), skip_special_tokens=True
        )
        return any(stop in tail for stop in row.stop)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        if self.chosen is not None:  # first: a row halted below is handed out with its values
            self.chosen.take(input_ids)
        generated = input_ids.shape[1] - self.prompt_width
        last = input_ids[:, -1].tolist()
        halted = False
        for index, row in enumerate(self.rows):
            if self.finished_len[index] is not None:
                continue
            if last[index] in self.loaded.eos_ids or self._stop_string_done(index, input_ids):
                self.finished_len[index], self.reason[index] = generated, "stop"
            elif generated >= row.max_tokens:
                self.finished_len[index], self.reason[index] = generated, "length"
            elif row.halt is not None and row.halt.is_set():
                self.finished_len[index], self.reason[index] = generated, "cancelled"
                halted = True
        if halted and self.on_halt is not None:
            self.on_halt(self, input_ids)
        if self.between_steps is not None:
            self.between_steps()
        if any(event.is_set() for event in self.cancel):
            return torch.ones(len(self.rows), dtype=torch.bool, device=input_ids.device)
        done = [length is not None for length in self.finished_len]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class RowText:
    """The text of one row of a batch as its tokens arrive, handed out in pieces that are only
    ever appended (their concatenation is the row's final text).

    Runs on the worker thread; ``emit`` gets each piece. Decoding is incremental (as vLLM's
    detokenizer does it): each new token is decoded with the few tokens before it as context
    (a SentencePiece word's leading space depends on its neighbour) and the difference is
    appended, so decoding a step costs as much late in a long completion as early on, where
    decoding the whole text again would grow with it. A token that ends inside a UTF-8
    character adds nothing until the character is complete. Text that could still turn into
    a stop string is held back, as :func:`stable_prefix` does.
    """

    def __init__(
        self, tokenizer: Any, row: Row, eos_ids: frozenset[int], emit: Callable[[str], None]
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = row.stop
        self.max_tokens = row.max_tokens
        self.eos_ids = eos_ids
        self.emit = emit
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read]: context re-decoded with each new token
        self.read = 0  # ids[:read] are decoded into text
        self.text = ""
        self.sent = ""
        self.finished = False  # the row has its last token: later ones are padding

    def add(self, token: int) -> None:
        if self.finished:
            return
        self.ids.append(token)
        self.finished = token in self.eos_ids or len(self.ids) >= self.max_tokens
        if token in self.eos_ids:
            return  # decodes to nothing (special tokens are skipped)
        self._decode()
        cut, hit = cut_at_stop(self.text, self.stops)
        if hit:
            self.finished = True
            self._send_up_to(cut)
        else:
            self._send_up_to(stable_prefix(self.text, self.stops))

    def finish(self, text: str) -> None:
        """Hand out the rest of the row's final text: what was held back or not yet decoded."""
        if not text.startswith(self.sent):
            # Cannot happen with a tokenizer whose decoding is the sum of its parts; pieces
            # cannot be taken back, so the stream ends here rather than contradicting itself.
            log.warning("streamed text %r is not a prefix of the final text", self.sent[-80:])
            return
        self._send_up_to(text)

    def _decode(self) -> None:
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        now = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.text += now[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)

    def _send_up_to(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.emit(text[len(self.sent) :])
            self.sent = text


class RowsStreamer(BaseStreamer):
    """Hands each step's new tokens to the rows that stream; the others cost nothing."""

    def __init__(self, texts: dict[int, RowText], stopper: RowStopper | None = None) -> None:
        self.texts = texts
        self.stopper = stopper
        self.prompt_skipped = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_skipped:  # generate first hands over the whole prompt
            self.prompt_skipped = True
            return
        tokens = value.reshape(-1).tolist()  # one new token per row
        for index, text in self.texts.items():
            # A halted row gets padding from then on, which is not its text.
            ended = self.stopper.finished_len[index] if self.stopper is not None else None
            if ended is not None and len(text.ids) >= ended:
                continue
            text.add(tokens[index])

    def end(self) -> None:
        """Nothing: the final texts, cut to each row's own limits, come from ``_run_rows``."""


def row_logprobs(
    loaded: LoadedModel,
    logits: Sequence[torch.Tensor],
    index: int,
    tokens: list[int],
    k: int,
) -> list[TokenLogprob]:
    """Chosen-token and top-k log-probabilities from the raw logits of one row."""
    if not tokens:
        return []
    steps = torch.stack([logits[step][index] for step in range(len(tokens))]).float()
    logprobs = torch.log_softmax(steps, dim=-1)
    chosen = logprobs.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1).tolist()
    top_values, top_ids = logprobs.topk(k, dim=-1)
    result = []
    for step, token in enumerate(tokens):
        top = named_alternatives(loaded, top_ids[step].tolist(), top_values[step].tolist())
        result.append(
            TokenLogprob(token=loaded.tokenizer.decode([token]), logprob=chosen[step], top=top)
        )
    return result


def named_alternatives(
    loaded: LoadedModel, ids: list[int], values: list[float]
) -> dict[str, float]:
    """Top-k as text -> logprob; ids that decode alike (partial UTF-8) keep their raw name."""
    named: dict[str, float] = {}
    for token_id, value in zip(ids, values, strict=True):
        key = loaded.tokenizer.decode([token_id])
        if key in named:
            key = loaded.tokenizer.convert_ids_to_tokens(token_id)
        if key in named:
            key = f"{key}#{token_id}"
        named[key] = value
    return named


def row_completion(
    loaded: LoadedModel,
    row: Row,
    tokens: list[int],
    reason: FinishReason | None,
    logprobs: list[TokenLogprob] | None = None,
    token_logprobs: list[float] | None = None,
) -> Completion:
    """A row's generated tokens as its completion, cut at its stop strings (the text only:
    ``token_ids`` keep every token generated and counted)."""
    text, hit = cut_at_stop(loaded.tokenizer.decode(tokens, skip_special_tokens=True), row.stop)
    finish: FinishReason = "stop" if hit else (reason or "length")
    return Completion(
        text=text,
        finish_reason=finish,
        completion_tokens=len(tokens),
        logprobs=logprobs,
        token_ids=list(tokens),
        token_logprobs=token_logprobs,
    )
