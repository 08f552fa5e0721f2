"""llama.cpp in-process: one GGUF model, one context, continuous batching on one thread.

Every sample of every request is a *sequence* of one llama.cpp context (``max_sequences``
slots). The engine thread loops over steps: it admits waiting sequences into free slots,
builds one batch from each running sequence's next token plus prompt chunks of the admitted
ones (at most ``batch_tokens`` in all), runs ``llama_decode`` once, then samples every
sequence that got logits. A request that arrives while others generate joins at the next
step, so four agents that call at once cost about one step each, not four.

Prefix reuse: a slot keeps the tokens of its last sequence in the KV cache after it ends, and
a new sequence starts from the longest cached prefix of any slot (``llama_memory_seq_cp``
shares the cells of the unified cache, nothing is copied). The critics of a discussion, the n
samples of one request and the retries of a step share their prompts this way and pay for
them once. Cached prefixes are only reused under the same LoRA adapter.

LoRA adapters (GGUF files, see :mod:`agents.backends.local.lora_gguf`) apply to the whole
context, so one step decodes only the sequences of one adapter (or the base model); steps
alternate between the adapters that have work.

Log-probabilities are the log-softmax of the raw logits (temperature 1, no top_p), computed
for the chosen token of every step whether or not anything asked for them: what training
needs (``training/rl.py`` computes its policy's log-probs the same way). Sampling itself is
llama.cpp's (temperature, then top_p, then a seeded draw per sequence), so a seeded request
gives the same tokens whatever else shares its steps.

Everything that touches llama.cpp runs on the engine thread; callers hand in :class:`Job`
objects and get their results through callbacks that must not block.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import queue
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import llama_cpp as lc
import numpy as np

from agents.backends.local.llama_model import LlamaModel
from agents.backends.local.text import cut_at_stop, stable_prefix

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled"]

SHARED_PREFIX_WAIT = 32
"""A job waits for a prompt being read when it shares at least this many more tokens with it."""

# --------------------------------------------------------------------------- jobs and results


@dataclass
class SampleResult:
    """One finished sample: what :class:`agents.model.Completion` is made of."""

    text: str
    finish_reason: FinishReason
    token_ids: list[int]
    token_logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]] | None


@dataclass
class Job:
    """One request: ``n`` samples of one prompt, handed to the engine thread.

    ``on_text`` (sample 0's text, piece by piece) and ``on_done`` (every sample, or an
    error) are called on the engine thread and must only hand the value on; ``halt`` ends the
    job's samples at the next step with finish reason ``"cancelled"``.
    """

    prompt: list[int]
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    top_logprobs: int
    adapter: Path | None
    on_done: Callable[[list[SampleResult] | BaseException], None]
    on_text: Callable[[str], None] | None = None
    halt: threading.Event = field(default_factory=threading.Event)
    results: list[SampleResult | None] = field(init=False)
    admitted: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.results = [None] * self.n

    @property
    def reserved(self) -> int:
        """KV cells one sample may come to hold."""
        return len(self.prompt) + self.max_tokens


@dataclass
class _Sequence:
    """One sample of a job while it runs in a slot."""

    job: Job
    index: int
    slot: _Slot
    sampler: ctypes.c_void_p
    fed: int  # prompt tokens already in the KV cache
    last_token: int | None = None  # sampled, not yet decoded
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[tuple[int, float]]] = field(default_factory=list)
    text: str = ""
    sent: str = ""
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.job.prompt)


@dataclass
class _Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens of this seq in the KV cache
    adapter: Path | None = None
    running: _Sequence | None = None
    used_at: float = 0.0


class EngineClosed(RuntimeError):
    """The engine was closed before the job finished."""


class PromptTooLong(ValueError):
    """A job whose prompt and max_tokens cannot fit the context."""


# --------------------------------------------------------------------------- the engine


@dataclass
class EngineStats:
    """Counters a test, a benchmark or a dashboard reads to see what the engine did."""

    jobs: int = 0
    steps: int = 0
    decoded_tokens: int = 0  # prompt and generated tokens through llama_decode
    generated_tokens: int = 0
    reused_prefix_tokens: int = 0  # prompt tokens served from a cached prefix
    largest_step: int = 0  # most sequences sampled in one step
    adapter_switches: int = 0


class LlamaEngine:
    """Continuous batching over one llama.cpp context; start it, submit jobs, close it."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        context_tokens: int,
        max_sequences: int,
        batch_tokens: int,
        max_adapters: int = 8,
    ) -> None:
        self.model = model
        self.max_sequences = max_sequences
        self.batch_tokens = batch_tokens
        self.max_adapters = max_adapters
        self.stats = EngineStats()
        params = lc.llama_context_default_params()
        params.n_ctx = context_tokens
        params.n_batch = batch_tokens
        params.n_ubatch = batch_tokens
        params.n_seq_max = max_sequences
        params.n_threads = model.threads
        params.n_threads_batch = model.threads
        params.kv_unified = True  # one pool of cells: sequences share cached prefixes
        params.no_perf = True
        self.ctx = lc.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise ValueError("llama.cpp could not create a context (out of memory?)")
        self.context_tokens = lc.llama_n_ctx(self.ctx)
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(batch_tokens, 0, 1)
        self.slots = [_Slot(seq_id) for seq_id in range(max_sequences)]
        self.waiting: deque[Job] = deque()
        self.inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.adapters: OrderedDict[Path, ctypes.c_void_p] = OrderedDict()
        self.active_adapter: Path | None = None
        self._adapter_turn = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thinktank-llama", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- callers' side

    def submit(self, job: Job) -> None:
        """Queue a job; refuses at once one that can never fit the context."""
        if self._closing.is_set():
            raise EngineClosed("the llama.cpp engine is closed")
        limit = min(self.context_tokens, self.model.n_ctx_train)
        if job.reserved > limit:
            raise PromptTooLong(
                f"{len(job.prompt)} prompt tokens + max_tokens {job.max_tokens} = "
                f"{job.reserved} > context of {limit} tokens"
            )
        self.stats.jobs += 1
        self.inbox.put(job)

    def close(self) -> None:
        """Stop the thread (what is in flight fails with :class:`EngineClosed`), free memory."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.inbox.put(None)
        self._thread.join()
        for adapter in self.adapters.values():
            lc.llama_adapter_lora_free(adapter)
        self.adapters.clear()
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        self.ctx = None

    # ----------------------------------------------------------------- the engine thread

    def _run(self) -> None:
        while not self._closing.is_set():
            running = [slot.running for slot in self.slots if slot.running is not None]
            block = not running and not self.waiting
            if not self._take_inbox(block=block):
                break
            self._admit()
            try:
                self._step()
            except Exception as error:  # a failed decode fails what was in it, not the engine
                log.exception("llama.cpp step failed")
                self._fail_running(error)
        closed = EngineClosed("the llama.cpp engine was closed")
        self._fail_running(closed)
        while self.waiting:
            self._finish_job_error(self.waiting.popleft(), closed)
        with contextlib.suppress(queue.Empty):
            while True:
                job = self.inbox.get_nowait()
                if job is not None:
                    self._finish_job_error(job, closed)

    def _take_inbox(self, *, block: bool) -> bool:
        """Move submitted jobs to the waiting line; False once closed."""
        try:
            job = self.inbox.get() if block else self.inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if job is None:
                return False
            self.waiting.append(job)
            try:
                job = self.inbox.get_nowait()
            except queue.Empty:
                return True

    def _reserved(self) -> int:
        total = 0
        for slot in self.slots:
            if slot.running is not None:
                total += slot.running.job.reserved
            else:
                total += len(slot.cached)
        return total

    def _admit(self) -> None:
        """Give waiting samples free slots, oldest job first, while the cache has room.

        Two kinds of job wait a step on purpose, so that a prompt is computed once: the
        further samples of a job whose first sample is still reading its prompt (they then
        copy it), and a job whose prompt shares a long beginning with one being read right now
        (the critics of one round, sent at once, share everything but their role).
        """
        for job in list(self.waiting):
            if job.halt.is_set() and job.admitted == 0:
                self.waiting.remove(job)
                self._finish_cancelled(job)
                continue
            while job.admitted < job.n:
                free = [slot for slot in self.slots if slot.running is None]
                if not free:
                    return
                if self._should_wait(job):
                    break
                if not self._make_room(job.reserved):
                    return
                self._start(job, self._best_free_slot(free, job))
            if job.admitted == job.n:
                self.waiting.remove(job)

    def _should_wait(self, job: Job) -> bool:
        cached = max(
            (_common(s.cached, job.prompt) for s in self.slots if s.adapter == job.adapter),
            default=0,
        )
        for slot in self.slots:
            seq = slot.running
            if seq is None or not seq.prefilling or seq.job.adapter != job.adapter:
                continue
            if seq.job is job:
                return True
            coming = min(_common(seq.job.prompt, job.prompt), len(job.prompt) - 1)
            if coming - max(cached, seq.fed) >= SHARED_PREFIX_WAIT:
                return True
        return False

    def _make_room(self, needed: int) -> bool:
        """Drop idle slots' cached prefixes, least recently used first, until ``needed`` more
        cells fit; False when even that is not enough (the job waits for running ones)."""
        while self._reserved() + needed > self.context_tokens:
            idle = [s for s in self.slots if s.running is None and s.cached]
            if not idle:
                return False
            victim = min(idle, key=lambda s: s.used_at)
            lc.llama_memory_seq_rm(self.memory, victim.seq_id, -1, -1)
            victim.cached = []
        return True

    def _best_free_slot(self, free: list[_Slot], job: Job) -> _Slot:
        """A free slot whose own cache shares the most with the prompt, else the one least
        recently used (its cache is the least likely to be wanted again)."""
        return max(
            free,
            key=lambda s: (
                _common(s.cached, job.prompt) if s.adapter == job.adapter else 0,
                -s.used_at,
            ),
        )

    def _start(self, job: Job, slot: _Slot) -> None:
        prompt = job.prompt
        donor, shared = slot, _common(slot.cached, prompt) if slot.adapter == job.adapter else 0
        for other in self.slots:
            if other is slot or other.adapter != job.adapter:
                continue
            length = _common(other.cached, prompt)
            if length > shared:
                donor, shared = other, length
        shared = min(shared, len(prompt) - 1)  # the last prompt token is decoded for logits
        if donor is slot:
            lc.llama_memory_seq_rm(self.memory, slot.seq_id, shared, -1)
        else:
            lc.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            lc.llama_memory_seq_cp(self.memory, donor.seq_id, slot.seq_id, 0, shared)
        slot.cached = list(prompt[:shared])
        slot.adapter = job.adapter
        slot.used_at = time.monotonic()
        self.stats.reused_prefix_tokens += shared
        index = job.admitted
        job.admitted += 1
        slot.running = _Sequence(job, index, slot, self._sampler(job, index), fed=shared)

    def _sampler(self, job: Job, index: int) -> ctypes.c_void_p:
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if job.temperature == 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        # temperature first, then the nucleus of the tempered distribution, as transformers
        # and vLLM do it; each sample its own seed, so a seeded request is reproducible
        seed = random.getrandbits(32) if job.seed is None else (job.seed + index) % 2**32
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(job.temperature))
        if job.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(job.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _adapter_for_step(self, running: list[_Sequence]) -> Path | None:
        groups = sorted({seq.job.adapter for seq in running}, key=lambda a: str(a or ""))
        if len(groups) == 1:
            return groups[0]
        self._adapter_turn = (self._adapter_turn + 1) % len(groups)
        return groups[self._adapter_turn]

    def _use_adapter(self, adapter: Path | None) -> None:
        if adapter == self.active_adapter:
            return
        if adapter is None:
            lc.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            handle = self._load_adapter(adapter)
            handles = (lc.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            if lc.llama_set_adapters_lora(self.ctx, handles, 1, scales) != 0:
                raise ValueError(f"llama.cpp could not apply the LoRA adapter {adapter}")
        self.active_adapter = adapter
        self.stats.adapter_switches += 1

    def _load_adapter(self, path: Path) -> ctypes.c_void_p:
        if path in self.adapters:
            self.adapters.move_to_end(path)
            return self.adapters[path]
        handle = lc.llama_adapter_lora_init(self.model.model, str(path).encode())
        if not handle:
            raise ValueError(f"llama.cpp could not load the LoRA adapter {path}")
        self.adapters[path] = handle
        while len(self.adapters) > self.max_adapters:
            victim = next(iter(self.adapters))
            if victim == self.active_adapter:
                self.adapters.move_to_end(victim)
                continue
            lc.llama_adapter_lora_free(self.adapters.pop(victim))
        return handle

    def _step(self) -> None:
        """One ``llama_decode`` over the sequences of one adapter, then sampling."""
        running = [slot.running for slot in self.slots if slot.running is not None]
        for seq in running:
            if seq.job.halt.is_set():
                self._end(seq, "cancelled")
        running = [slot.running for slot in self.slots if slot.running is not None]
        if not running:
            return
        adapter = self._adapter_for_step(running)
        self._use_adapter(adapter)
        group = [seq for seq in running if seq.job.adapter == adapter]
        entries: list[tuple[int, int, int, bool]] = []  # token, position, seq id, wants logits
        outputs: list[tuple[_Sequence, int]] = []  # sequence, its row in the batch
        budget = self.batch_tokens
        # Sequences that are generating go first (one token each): a long prompt arriving
        # must not stall the agents that are already typing.
        for seq in group:
            if seq.prefilling or budget == 0:
                continue
            position = len(seq.job.prompt) + len(seq.ids) - 1
            outputs.append((seq, len(entries)))
            entries.append((seq.last_token, position, seq.slot.seq_id, True))
            budget -= 1
        for seq in group:
            if not seq.prefilling or budget == 0:
                continue
            prompt, start = seq.job.prompt, seq.fed
            take = min(budget, len(prompt) - start)
            for position in range(start, start + take):
                last = position == len(prompt) - 1
                if last:
                    outputs.append((seq, len(entries)))
                entries.append((prompt[position], position, seq.slot.seq_id, last))
            seq.fed += take
            seq.slot.cached.extend(prompt[start : start + take])
            budget -= take
        if not entries:
            return
        self._fill(entries)
        status = lc.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} (context full or aborted)")
        self.stats.steps += 1
        self.stats.decoded_tokens += len(entries)
        self.stats.largest_step = max(self.stats.largest_step, len(outputs))
        for seq, row in outputs:
            if seq.last_token is not None:
                seq.slot.cached.append(seq.last_token)
            self._sample(seq, row)

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, position, seq_id, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits

    def _sample(self, seq: _Sequence, row: int) -> None:
        job = seq.job
        token = lc.llama_sampler_sample(seq.sampler, self.ctx, row)
        logits = np.ctypeslib.as_array(
            lc.llama_get_logits_ith(self.ctx, row), shape=(self.model.n_vocab,)
        )
        peak = float(logits.max())
        log_total = peak + float(np.log(np.exp(logits - peak).sum()))
        seq.ids.append(token)
        seq.logprobs.append(float(logits[token]) - log_total)
        if job.top_logprobs:
            top = np.argpartition(logits, -job.top_logprobs)[-job.top_logprobs :]
            top = top[np.argsort(-logits[top])]
            seq.tops.append([(int(t), float(logits[t]) - log_total) for t in top])
        seq.last_token = token
        self.stats.generated_tokens += 1
        if self.model.is_end(token):
            self._end(seq, "stop")
            return
        seq.text += seq.decoder.decode(self.model.piece(token))
        cut, hit = cut_at_stop(seq.text, job.stop)
        if hit:
            self._emit(seq, cut)
            self._end(seq, "stop")
            return
        if len(seq.ids) >= job.max_tokens:
            self._end(seq, "length")
            return
        self._emit(seq, stable_prefix(seq.text, job.stop))

    def _emit(self, seq: _Sequence, text: str) -> None:
        if seq.index != 0 or seq.job.on_text is None:
            return
        if len(text) > len(seq.sent) and text.startswith(seq.sent):
            piece, seq.sent = text[len(seq.sent) :], text
            seq.job.on_text(piece)

    def _end(self, seq: _Sequence, reason: FinishReason) -> None:
        job, slot = seq.job, seq.slot
        text = seq.text + seq.decoder.decode(b"", final=True)
        text, hit = cut_at_stop(text, job.stop)
        if hit:
            reason = "stop"
        self._emit(seq, text)
        job.results[seq.index] = SampleResult(
            text=text,
            finish_reason=reason,
            token_ids=list(seq.ids),
            token_logprobs=list(seq.logprobs),
            top_logprobs=seq.tops if job.top_logprobs else None,
        )
        lc.llama_sampler_free(seq.sampler)
        slot.running = None
        slot.used_at = time.monotonic()
        if all(result is not None for result in job.results):
            job.on_done(job.results)  # type: ignore[arg-type]

    def _finish_cancelled(self, job: Job) -> None:
        """A job halted before any of its samples started."""
        job.results = [
            SampleResult("", "cancelled", [], [], [] if job.top_logprobs else None)
            for _ in range(job.n)
        ]
        job.on_done(job.results)  # type: ignore[arg-type]

    def _finish_job_error(self, job: Job, error: BaseException) -> None:
        with contextlib.suppress(Exception):
            job.on_done(error)

    def _fail_running(self, error: BaseException) -> None:
        failed: dict[int, Job] = {}
        for slot in self.slots:
            seq = slot.running
            if seq is None:
                continue
            lc.llama_sampler_free(seq.sampler)
            slot.running = None
            # its cells may be half-written: forget them
            lc.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.cached = []
            failed[id(seq.job)] = seq.job
        for job in failed.values():
            if job in self.waiting:
                self.waiting.remove(job)
            self._finish_job_error(job, error)


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists."""
    limit = min(len(a), len(b))
    if limit == 0:
        return 0
    left = np.asarray(a[:limit])
    right = np.asarray(b[:limit])
    differ = np.flatnonzero(left != right)
    return int(differ[0]) if differ.size else limit
