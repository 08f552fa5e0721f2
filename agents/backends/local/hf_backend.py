"""The ``local`` backend on transformers (``engine = "transformers"``): torch on the CPU or a GPU.

The embedded default runs on llama.cpp (:mod:`agents.backends.local.llama_backend`); this
engine serves a transformers model folder or a hub id, and is what training loads its base
model with (:mod:`agents.backends.local.hf_weights`), so a test that checks the trainer's
log-probabilities against served ones uses it.

Throughput on a CPU comes from batching: concurrent :meth:`TransformersBackend.generate` calls are
merged into one ``model.generate`` call. One decoding step for eight rows costs little more
than a step for one, because a 135M model's step is dominated by fixed per-step overhead and
weight reads, not by arithmetic.

Threading: everything that touches the model or the tokenizer runs on one dedicated worker
thread (fast tokenizers are not safe to use from two threads at once, and torch would only
split the same cores between two concurrent generates). The event loop only queues requests,
forms batches and hands results back.

Choices a caller may want to know:

* ``completion_tokens`` counts the tokens the model actually generated for a sample, up to and
  including the EOS token or the token that completed the stop string (those were generated,
  and count against ``max_tokens``), never the padding a finished row receives while the rest
  of its batch goes on.
* ``prompt_tokens`` is the prompt's length once per request, even when ``n > 1``: the samples
  of a request share one prompt (as OpenAI-compatible servers report it).
* A request whose prompt plus ``max_tokens`` exceeds the model's context is refused with a
  non-retryable :class:`ModelError`; ``max_tokens`` is never shrunk behind the caller's back.
* ``seed`` is best-effort: it seeds torch before the batch, so a sampled request is
  reproducible only when it runs in a batch of the same shape. Sampled requests are batched
  only with requests of the same temperature, top_p and seed.
* Logprobs are the model's raw distribution (log-softmax of the logits before temperature and
  top_p), so they stay finite and comparable across sampling settings.
* Every completion carries ``token_ids`` (all ``completion_tokens`` of them, the EOS token or a
  stop string's tokens included) and ``token_logprobs``, the chosen token's log-probability
  under that same raw distribution, whether or not ``top_logprobs`` was asked for: what
  training needs to see exactly the tokens sampled (see :class:`ChosenLogprobs`).
* ``generate(request, on_text=...)`` streams sample 0 of the request without leaving its batch:
  the worker decodes that row's new tokens incrementally at every step of the batch's
  ``generate`` and hands out the text that can no longer turn into a stop string. Rows nobody
  listens to are not decoded until the end, as before.
* A request's ``adapter`` names a LoRA adapter under ``adapters_dir``, loaded with PEFT on
  first use (:mod:`agents.backends.lora`); rows with different adapters share a batch.
* ``generate(request, halt=event)``: once the event is set, the request's rows stop at the
  next decoding step (finish reason ``"cancelled"``, every token generated counted) and the
  call returns at once, without waiting for the rest of its batch (unless it asked for
  log-probabilities, which exist only once the batch's ``generate`` ends). A caller that
  cancels its ``generate`` stops its rows the same way.
* Interjections: a short greedy request (``max_tokens`` up to ``interject_max_tokens``, n=1,
  no seed, no adapter) that arrives while a batch is generating is served between two decoding steps
  of that batch, which pauses for it, instead of waiting for the whole batch: a detector's
  one-token probe of a solver that is still streaming is answered while the solver can
  still be stopped. Greedy requests use no random numbers, so seeded batches stay as
  reproducible as before; the paused batch's output does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from agents.backends.local.config import LocalModelConfig
from agents.backends.local.hf_batching import (
    Interjection,
    LoopState,
    Outcome,
    Pending,
    relay_halt,
)
from agents.backends.local.hf_rows import (
    ChosenLogprobs,
    Row,
    RowResult,
    RowsStreamer,
    RowStopper,
    RowText,
    row_completion,
    row_logprobs,
)
from agents.backends.local.hf_weights import LoadedModel, load_transformers
from agents.backends.lora import AdapterSet
from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
)

ProgressCallback = Callable[[str], None]


@dataclass
class LocalBackendStats:
    """Counters a test or a dashboard reads to see whether batching happens."""

    requests: int = 0
    generate_calls: int = 0
    batched_sequences: int = 0
    largest_batch: int = 0
    completion_tokens: int = 0
    interjections: int = 0  # requests served between two decoding steps of a running batch


class TransformersBackend:
    """Serves chat requests from an in-process transformers model, batching concurrent calls.

    ``on_progress`` receives human-readable loading messages (called from the worker thread).
    """

    def __init__(
        self,
        config: LocalModelConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        name: str = "local",
    ) -> None:
        self.config = config or LocalModelConfig()
        self.name = name
        self.stats = LocalBackendStats()
        self._on_progress = on_progress
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thinktank-local")
        self._load_lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._closing = threading.Event()
        self._closed = False
        self._state: LoopState | None = None
        self._interjections: queue.SimpleQueue[Interjection] = queue.SimpleQueue()
        self._generating = 0  # generate calls running on the worker (an interjection nests)
        self._interjecting = False
        self.adapters = AdapterSet(self.config.adapters_dir, self.config.max_adapters)

    # ----------------------------------------------------------------- loading (worker thread)

    def _progress(self, message: str) -> None:
        if self._on_progress is not None:
            with contextlib.suppress(Exception):  # a broken progress display must not stop a load
                self._on_progress(message)

    def _load_sync(self) -> LoadedModel:
        """Load once; later calls (and concurrent first callers) get the same model. Runs on
        the worker thread, where all inference happens (torch keeps its threads per thread)."""
        with self._load_lock:
            if self._loaded is None:
                self._loaded = load_transformers(self.config, self._progress)
            return self._loaded

    async def _ensure_loaded(self) -> LoadedModel:
        if self._loaded is not None:
            return self._loaded
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._load_sync)
        except ModelError:
            raise
        except Exception as error:
            raise ModelError(f"could not load the local model: {error}") from error

    # ----------------------------------------------------------------- generation (worker thread)

    def _encode(self, loaded: LoadedModel, request: ModelRequest) -> list[int]:
        messages = [message.model_dump() for message in request.messages]
        text = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _check_fits(self, loaded: LoadedModel, request: ModelRequest, prompt_len: int) -> None:
        wanted = prompt_len + request.params.max_tokens
        if wanted > loaded.context:
            raise ModelError(
                f"request too long for {loaded.name}: {prompt_len} prompt tokens + max_tokens "
                f"{request.params.max_tokens} = {wanted} > context of {loaded.context} tokens",
                retryable=False,
            )

    def _run_rows(
        self,
        loaded: LoadedModel,
        rows: list[Row],
        request: ModelRequest,
        texts: dict[int, RowText] | None = None,
        cancel: threading.Event | None = None,
        on_halt: Callable[[RowStopper, torch.Tensor], None] | None = None,
    ) -> list[RowResult]:
        """One ``model.generate`` call over left-padded rows sharing the sampling settings of
        ``request``; each row is then cut to its own max_tokens and stop strings. ``texts``
        streams the rows it has (by index) as they are generated; ``on_halt`` hears of rows
        halted mid-batch. Interjections are served between its steps (unless this call is one).
        """
        params = request.params
        width = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), loaded.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention[index, width - len(row.prompt_ids) :] = 1
        events = [self._closing] + ([cancel] if cancel is not None else [])
        between_steps = None if self._interjecting else (lambda: self._between_steps(rows))
        chosen = ChosenLogprobs(len(rows))
        stopper = RowStopper(rows, width, loaded, events, on_halt, between_steps, chosen)
        want_logprobs = max(row.top_logprobs for row in rows)
        options: dict[str, Any] = {
            "max_new_tokens": max(row.max_tokens for row in rows),
            "eos_token_id": sorted(loaded.eos_ids),
            "pad_token_id": loaded.pad_id,
            "logits_processor": LogitsProcessorList([chosen]),
            "stopping_criteria": StoppingCriteriaList([stopper]),
            "streamer": RowsStreamer(texts, stopper) if texts else None,
        }
        if params.temperature == 0:
            options.update(do_sample=False)
        else:
            options.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0
            )
        if want_logprobs:
            options.update(return_dict_in_generate=True, output_logits=True)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        self.stats.generate_calls += 1
        self.stats.batched_sequences += len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        # LoRA: rows may name different adapters; loading one wraps the model (worker thread).
        loaded.model, lora_options = self.adapters.prepare(
            loaded.model, [row.adapter for row in rows]
        )
        options.update(lora_options)
        device = loaded.model.device
        self._generating += 1
        try:
            with torch.inference_mode():
                output = loaded.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), **options
                )
        finally:
            self._generating -= 1
        sequences = output.sequences if want_logprobs else output
        generated = sequences[:, width:].tolist()
        results = []
        for index, row in enumerate(rows):
            length = stopper.finished_len[index] or len(generated[index])
            tokens = generated[index][:length]
            logprobs = None
            if row.top_logprobs:
                logprobs = row_logprobs(loaded, output.logits, index, tokens, row.top_logprobs)
            self.stats.completion_tokens += len(tokens)
            completion = row_completion(
                loaded, row, tokens, stopper.reason[index], logprobs, chosen.of(index, len(tokens))
            )
            results.append(RowResult(completion, tokens))
            if texts and index in texts:
                texts[index].finish(completion.text)
        return results

    # ----------------------------------------------------------------- interjections (worker)

    def _between_steps(self, rows: Sequence[Row]) -> None:
        """Serve waiting interjections now, between two steps of the batch of ``rows``.

        Not while LoRA adapters are in play: PEFT routes a batch's rows to their adapters with
        hooks that live for the whole ``generate`` call, which a nested call would disturb.
        Those interjections wait for the drain queued behind the batch instead.
        """
        if self._interjections.empty():
            return
        if self.adapters.loaded or any(row.adapter for row in rows):
            return
        self._drain_interjections()

    def _drain_interjections(self) -> None:
        """Serve every waiting interjection, one generate call each (worker thread)."""
        if self._interjecting:
            return
        self._interjecting = True
        try:
            while True:
                try:
                    item = self._interjections.get_nowait()
                except queue.Empty:
                    return
                if self._closing.is_set():
                    item.resolve(ModelError("the local backend was closed", retryable=True))
                    continue
                self.stats.interjections += self._generating > 0
                outcome: Outcome
                try:
                    [outcome] = self._serve_batch([item.request], [item.emitter], [item.halt])
                except Exception as error:  # nobody awaits this job: the caller must hear of it
                    outcome = ModelError(f"local generation failed: {error}", retryable=True)
                item.resolve(outcome)
        finally:
            self._interjecting = False

    def _interjectable(self, request: ModelRequest) -> bool:
        params = request.params
        return (
            self._generating > 0
            and params.n == 1
            and params.temperature == 0
            and params.seed is None
            and request.adapter is None
            and params.max_tokens <= self.config.interject_max_tokens
        )

    def _serve_batch(
        self,
        requests: list[ModelRequest],
        emitters: list[Callable[[str], None] | None],
        halts: Sequence[threading.Event | None] | None = None,
        resolvers: Sequence[Callable[[Outcome], None] | None] | None = None,
    ) -> list[Outcome]:
        """Worker-thread entry for one batch: encode, refuse what does not fit, generate the
        rest together, streaming sample 0 of each request that has an emitter. Returns, per
        request, its completions and prompt length, or its error. A request's rows stop when
        its ``halts`` event is set; once all of them have ended, its ``resolvers`` entry (when
        there is one) gets its outcome at once, mid-batch."""
        loaded = self._loaded
        assert loaded is not None, "the batcher loads the model before serving"
        outcomes: list[tuple[list[Completion], int] | ModelError | None] = []
        rows: list[Row] = []
        owners: list[int] = []
        texts: dict[int, RowText] = {}
        prompt_lens: dict[int, int] = {}
        for position, request in enumerate(requests):
            try:
                prompt_ids = self._encode(loaded, request)
                self._check_fits(loaded, request, len(prompt_ids))
            except ModelError as error:
                outcomes.append(error)
                continue
            except Exception as error:
                outcomes.append(ModelError(f"could not build the prompt: {error}"))
                continue
            outcomes.append(None)
            prompt_lens[position] = len(prompt_ids)
            params = request.params
            emit = emitters[position]
            halt = halts[position] if halts is not None else None
            for sample in range(params.n):
                row = Row(
                    prompt_ids,
                    params.max_tokens,
                    params.stop,
                    params.top_logprobs,
                    request.adapter,
                    halt,
                )
                if sample == 0 and emit is not None:
                    texts[len(rows)] = RowText(loaded.tokenizer, row, loaded.eos_ids, emit)
                rows.append(row)
                owners.append(position)
        if rows:
            first = requests[owners[0]]
            on_halt = None
            if resolvers is not None and any(resolvers):
                on_halt = self._early_delivery(loaded, rows, owners, texts, prompt_lens, resolvers)
            try:
                results = self._run_rows(loaded, rows, first, texts=texts, on_halt=on_halt)
            except Exception as error:
                failure = ModelError(f"local generation failed: {error}", retryable=True)
                return [failure if outcome is None else outcome for outcome in outcomes]
            grouped: dict[int, list[Completion]] = {position: [] for position in prompt_lens}
            for owner, result in zip(owners, results, strict=True):
                grouped[owner].append(result.completion)
            for position, completions in grouped.items():
                outcomes[position] = (completions, prompt_lens[position])
        return [outcome for outcome in outcomes if outcome is not None]  # all filled by now

    def _early_delivery(
        self,
        loaded: LoadedModel,
        rows: list[Row],
        owners: list[int],
        texts: dict[int, RowText],
        prompt_lens: dict[int, int],
        resolvers: Sequence[Callable[[Outcome], None] | None],
    ) -> Callable[[RowStopper, torch.Tensor], None]:
        """The stopper's ``on_halt`` for one batch: a halted request whose rows have all ended
        gets its outcome now rather than when the whole batch ends. A request that wants
        log-probabilities waits: they come from the logits ``generate`` returns at its end."""
        delivered: set[int] = set()
        members: dict[int, list[int]] = {}
        for index, owner in enumerate(owners):
            members.setdefault(owner, []).append(index)

        def on_halt(stopper: RowStopper, input_ids: torch.Tensor) -> None:
            for owner, indices in members.items():
                resolve = resolvers[owner]
                lengths = [stopper.finished_len[i] for i in indices]
                if (
                    resolve is None
                    or owner in delivered
                    or any(length is None for length in lengths)
                    or all(stopper.reason[i] != "cancelled" for i in indices)
                    or any(rows[i].top_logprobs for i in indices)
                ):
                    continue
                completions = []
                for i, length in zip(indices, lengths, strict=True):
                    start = stopper.prompt_width
                    tokens = input_ids[i, start : start + (length or 0)].tolist()
                    values = stopper.chosen.of(i, len(tokens)) if stopper.chosen else None
                    completion = row_completion(
                        loaded, rows[i], tokens, stopper.reason[i], token_logprobs=values
                    )
                    if i in texts:
                        texts[i].finish(completion.text)
                    completions.append(completion)
                delivered.add(owner)
                resolve((completions, prompt_lens[owner]))

        return on_halt

    # ----------------------------------------------------------------- batching (event loop)

    def _loop_state(self) -> LoopState:
        """The queue and batcher of the running loop (a new loop, e.g. per test, gets its own)."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            state = self._state = LoopState(loop)
        if state.task is None or state.task.done():
            state.task = loop.create_task(self._batch_loop(state), name="thinktank-local-batcher")
        return state

    def _take_batch(self, state: LoopState) -> list[Pending]:
        """The oldest live request plus later compatible ones, up to max_batch_size rows.

        A single request with more samples than max_batch_size still runs, alone.
        """
        while state.pending and state.pending[0].future.done():  # caller gave up
            state.pending.popleft()
        if not state.pending:
            return []
        first = state.pending.popleft()
        batch, rows, skipped = [first], first.rows, deque[Pending]()
        while state.pending:
            item = state.pending.popleft()
            if item.future.done():
                continue
            if item.key == first.key and rows + item.rows <= self.config.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
        state.pending.extendleft(reversed(skipped))
        return batch

    def _ready_rows(self, state: LoopState) -> int:
        if not state.pending:
            return 0
        key = state.pending[0].key
        return sum(item.rows for item in state.pending if item.key == key)

    async def _gather(self, state: LoopState) -> None:
        """Give concurrent callers ``batch_wait_ms`` (from the oldest request's arrival) to join."""
        deadline = state.pending[0].enqueued + self.config.batch_wait_ms / 1000
        while self._ready_rows(state) < self.config.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            state.wakeup.clear()
            try:
                await asyncio.wait_for(state.wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _batch_loop(self, state: LoopState) -> None:
        loop = state.loop
        while True:
            while not state.pending:
                state.wakeup.clear()
                await state.wakeup.wait()
            batch: list[Pending] = []
            try:
                await self._ensure_loaded()
                await self._gather(state)
                batch = self._take_batch(state)
                if not batch:
                    continue
                requests = [item.request for item in batch]
                emitters = [item.emitter(loop) for item in batch]
                halts = [item.halt for item in batch]
                resolvers = [item.resolver(loop) if item.stoppable else None for item in batch]
                outcomes = await loop.run_in_executor(
                    self._executor, self._serve_batch, requests, emitters, halts, resolvers
                )
            except asyncio.CancelledError:
                self._fail(batch, ModelError("the local backend was closed", retryable=True))
                raise
            except Exception as error:
                # Every waiter hears about it (a failed load fails everyone queued behind it);
                # the next request starts afresh (and retries a failed load).
                failure = (
                    error
                    if isinstance(error, ModelError)
                    else ModelError(f"local generation failed: {error}", retryable=True)
                )
                self._fail(batch or list(state.pending), failure)
                if not batch:
                    state.pending.clear()
                continue
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, ModelError):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    @staticmethod
    def _fail(items: Sequence[Pending], error: ModelError) -> None:
        for item in items:
            if not item.future.done() and not item.future.get_loop().is_closed():
                item.future.set_exception(error)

    def _check_request(self, request: ModelRequest) -> None:
        if self._closed:
            raise ModelError("the local backend is closed")
        if request.adapter is not None:
            self.adapters.check(request.adapter)

    # ----------------------------------------------------------------- public API

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        """All ``n`` samples, batched with concurrent calls; ``on_text`` gets sample 0's text as
        it is generated, without taking the request out of its batch; setting ``halt`` ends the
        request's rows at the next step and returns what they generated (see the module
        docstring), as does cancelling the call, which then returns nothing."""
        started = time.perf_counter()
        self._check_request(request)
        self.stats.requests += 1
        state = self._loop_state()
        loop = state.loop
        future: asyncio.Future[tuple[list[Completion], int]] = loop.create_future()
        pending = Pending(request, future, time.perf_counter(), on_text, stoppable=halt is not None)
        relay = loop.create_task(relay_halt(halt, pending.halt)) if halt is not None else None
        if self._interjectable(request):
            item = Interjection(
                request, pending.emitter(loop), pending.halt, pending.resolver(loop)
            )
            self._interjections.put(item)
            # Served between two steps of the running batch, or by this job once it ends.
            loop.run_in_executor(self._executor, self._drain_interjections)
        else:
            state.pending.append(pending)
            state.wakeup.set()
        try:
            completions, prompt_tokens = await future
        except asyncio.CancelledError:
            pending.halt.set()  # the caller gave up: its rows stop at the next step
            raise
        finally:
            if relay is not None:
                relay.cancel()
        return ModelResponse(
            completions=completions,
            prompt_tokens=prompt_tokens,
            model=self._loaded.name if self._loaded else self.name,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[str]:
        """Yield the text of one sample as it is generated (the concatenation is the text that
        ``generate`` returns for the same request). Streams run one at a time on the worker,
        between batches; they are not batched."""
        self._check_request(request)
        if request.params.n != 1:
            raise ModelError("stream() produces a single sample; use generate() for n > 1")
        loaded = await self._ensure_loaded()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()
        self.stats.requests += 1

        def emit(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        def run() -> list[RowResult]:
            prompt_ids = self._encode(loaded, request)
            self._check_fits(loaded, request, len(prompt_ids))
            params = request.params
            row = Row(prompt_ids, params.max_tokens, params.stop, 0, request.adapter)
            text = RowText(loaded.tokenizer, row, loaded.eos_ids, emit)
            return self._run_rows(loaded, [row], request, texts={0: text}, cancel=cancel)

        def finished(job: asyncio.Future[list[RowResult]]) -> None:
            if not job.cancelled():
                job.exception()  # retrieved here too, in case the consumer already left
            pieces.put_nowait(None)

        job = loop.run_in_executor(self._executor, run)
        job.add_done_callback(finished)
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            try:
                await job
            except ModelError:
                raise
            except Exception as error:
                raise ModelError(f"local generation failed: {error}", retryable=True) from error
        finally:
            cancel.set()  # a consumer that stops early ends the generation at the next token

    async def close(self) -> None:
        """Stop the batcher and the worker thread, fail what is still queued, free the model."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        state, self._state = self._state, None
        if state is not None:
            error = ModelError("the local backend was closed", retryable=True)
            self._fail(list(state.pending), error)
            state.pending.clear()
            task = state.task
            if task is not None and not task.done() and not state.loop.is_closed():
                if state.loop is asyncio.get_running_loop():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                else:
                    state.loop.call_soon_threadsafe(task.cancel)
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        while True:  # interjections whose drain job was cancelled with the executor
            try:
                item = self._interjections.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                item.resolve(ModelError("the local backend was closed", retryable=True))
        self._loaded = None
        gc.collect()
