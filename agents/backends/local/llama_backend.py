"""The ``local`` backend on llama.cpp: the embedded default, a GGUF model run in-process.

Requests become jobs of one :class:`~agents.backends.local.llama_engine.LlamaEngine`, which
batches every concurrent call into its decoding steps (see there). This module is the async
face: it renders the chat template the GGUF file carries, tokenizes, hands the job over, and
turns the engine's samples into :class:`~agents.model.Completion` objects.

What a caller may rely on, as with every backend:

* ``completion_tokens`` counts every token generated, the end-of-turn token or a stop
  string's tokens included; ``token_ids`` are exactly those tokens and ``token_logprobs`` their
  log-probabilities under the raw distribution (see the engine); the text leaves the stop
  string and the end-of-turn token out.
* ``prompt_tokens`` is the prompt's length once per request, even when ``n > 1``.
* A request whose prompt plus ``max_tokens`` exceeds the context is refused with a
  non-retryable :class:`ModelError`; ``max_tokens`` is never shrunk behind the caller's back.
* ``on_text`` gets sample 0's text as it is generated; ``halt`` ends the request at the next
  step ("cancelled", every token counted); cancelling the call does the same.
* ``adapter`` names a LoRA adapter under ``adapters_dir`` (as training publishes them); its
  GGUF form is made on first use, so a new version answers without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from agents.backends.local.catalog import CATALOG, resolve_model
from agents.backends.local.config import LocalModelConfig, default_llama_threads
from agents.backends.local.llama_engine import (
    EngineClosed,
    Job,
    LlamaEngine,
    PromptTooLong,
    SampleResult,
)
from agents.backends.local.llama_model import LlamaModel
from agents.backends.local.llama_weights import compute_file
from agents.backends.local.lora_gguf import AdapterConversionError, convert_adapter
from agents.backends.lora import AdapterSet
from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
    TokenLogprob,
)

ProgressCallback = Callable[[str], None]

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The chat format of a GGUF file that carries no template of its own."""


class LlamaCppBackend:
    """Serves chat requests from an in-process llama.cpp model, batching concurrent calls."""

    def __init__(
        self,
        config: LocalModelConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        name: str = "local",
    ) -> None:
        self.config = config or LocalModelConfig()
        self.name = name
        self._on_progress = on_progress
        self._load_lock = threading.Lock()
        self._engine: LlamaEngine | None = None
        self._model: LlamaModel | None = None
        self._model_name = name
        self._template: Any = None
        self._closed = False
        self.adapters = AdapterSet(self.config.adapters_dir, self.config.max_adapters)

    # ----------------------------------------------------------------- loading

    def _progress(self, message: str) -> None:
        if self._on_progress is not None:
            with contextlib.suppress(Exception):  # a broken display must not stop a load
                self._on_progress(message)

    def weights(self) -> tuple[str, Path]:
        """The name turns record and the GGUF file as shipped (assembled on first use)."""
        if self.config.gguf_file is not None:
            return self.config.gguf_file.stem, self.config.gguf_file
        name, source = resolve_model(self.config.model, self._progress)
        if not isinstance(source, Path) or not source.is_file():
            raise ModelError(
                f"the llama.cpp engine needs a GGUF file; {self.config.model!r} is not one "
                "(use engine = 'transformers' for a model folder or a hub id)",
                retryable=False,
            )
        return name, source

    def _load_sync(self) -> LlamaEngine:
        with self._load_lock:
            if self._engine is not None:
                return self._engine
            if self._closed:
                raise ModelError("the local backend is closed")
            started = time.perf_counter()
            name, shipped = self.weights()
            entry = CATALOG.get(self.config.model) if self.config.gguf_file is None else None
            widen = entry is not None and entry.widen_to_bf16
            path = compute_file(shipped, self.config.compute_weights, widen=widen)
            self._progress(f"loading {name} with llama.cpp")
            threads = self.config.threads or default_llama_threads()
            model = LlamaModel(path, threads=threads)
            environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = environment.from_string(model.chat_template or CHATML)
            self._engine = LlamaEngine(
                model,
                context_tokens=self.config.context_tokens,
                max_sequences=self.config.max_batch_size,
                batch_tokens=self.config.batch_tokens,
                max_adapters=self.config.max_adapters,
            )
            self._model, self._model_name = model, name
            self._progress(f"model ready in {time.perf_counter() - started:.1f} s")
            return self._engine

    async def _ensure_loaded(self) -> LlamaEngine:
        if self._engine is not None:
            return self._engine
        try:
            return await asyncio.to_thread(self._load_sync)
        except ModelError:
            raise
        except Exception as error:
            raise ModelError(f"could not load the local model: {error}") from error

    def prompt_ids(self, request: ModelRequest) -> list[int]:
        """The request's chat, in the model's own chat format, as token ids."""
        assert self._model is not None and self._template is not None
        text = self._template.render(
            messages=[message.model_dump() for message in request.messages],
            add_generation_prompt=True,
            tools=None,
        )
        ids = self._model.tokenize(text, special=True)
        bos = self._model.bos
        if self._model.add_bos and bos >= 0 and ids[:1] != [bos]:
            ids = [bos, *ids]
        return ids

    def _adapter_file(self, name: str) -> Path:
        """The GGUF form of a published adapter, converted on first use."""
        self.adapters.check(name)
        _, base = self.weights()
        try:
            path = convert_adapter(self.adapters.root / name, base)
        except (AdapterConversionError, OSError, KeyError) as error:
            raise ModelError(
                f"LoRA adapter {name!r} cannot be served by llama.cpp: {error}", retryable=False
            ) from error
        self.adapters.remember(name, path)
        return path

    # ----------------------------------------------------------------- public API

    @property
    def stats(self) -> Any:
        return self._engine.stats if self._engine is not None else None

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        started = time.perf_counter()
        if self._closed:
            raise ModelError("the local backend is closed")
        if request.adapter is not None:
            self.adapters.check(request.adapter)  # refused before the model even loads
        engine = await self._ensure_loaded()
        adapter = None
        if request.adapter is not None:
            adapter = await asyncio.to_thread(self._adapter_file, request.adapter)
        try:
            prompt = self.prompt_ids(request)
        except Exception as error:
            raise ModelError(f"could not build the prompt: {error}", retryable=False) from error
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[SampleResult]] = loop.create_future()

        def settle(outcome: list[SampleResult] | BaseException) -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(_model_error(outcome))
            else:
                future.set_result(outcome)

        def deliver(piece: str) -> None:
            if on_text is not None and not future.done():
                on_text(piece)

        params = request.params
        job = Job(
            prompt=prompt,
            n=params.n,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop),
            top_logprobs=params.top_logprobs,
            adapter=adapter,
            on_done=lambda outcome: loop.call_soon_threadsafe(settle, outcome),
            on_text=(lambda piece: loop.call_soon_threadsafe(deliver, piece)) if on_text else None,
        )
        try:
            engine.submit(job)
        except PromptTooLong as error:
            raise ModelError(
                f"request too long for {self._model_name}: {error}", retryable=False
            ) from None
        except EngineClosed as error:
            raise ModelError(str(error), retryable=True) from None
        relay = loop.create_task(_relay(halt, job.halt)) if halt is not None else None
        try:
            samples = await future
        except asyncio.CancelledError:
            job.halt.set()  # the caller gave up: its samples stop at the next step
            raise
        finally:
            if relay is not None:
                relay.cancel()
        return ModelResponse(
            completions=[self._completion(sample, params.top_logprobs) for sample in samples],
            prompt_tokens=len(prompt),
            model=self._model_name,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
        )

    def _completion(self, sample: SampleResult, top_logprobs: int) -> Completion:
        logprobs = None
        if top_logprobs and sample.top_logprobs is not None:
            logprobs = [
                TokenLogprob(
                    token=self._piece(token),
                    logprob=value,
                    top=self._named(alternatives),
                )
                for token, value, alternatives in zip(
                    sample.token_ids, sample.token_logprobs, sample.top_logprobs, strict=True
                )
            ]
        return Completion(
            text=sample.text,
            finish_reason=sample.finish_reason,
            completion_tokens=len(sample.token_ids),
            logprobs=logprobs,
            token_ids=sample.token_ids,
            token_logprobs=sample.token_logprobs,
        )

    def _piece(self, token: int) -> str:
        assert self._model is not None
        return self._model.piece(token).decode("utf-8", "replace")

    def _named(self, alternatives: list[tuple[int, float]]) -> dict[str, float]:
        """Top-k as text -> logprob; ids that decode alike (partial UTF-8) keep their id."""
        named: dict[str, float] = {}
        for token, value in alternatives:
            key = self._piece(token)
            if key in named:
                key = f"{key}#{token}"
            named[key] = value
        return named

    async def stream(self, request: ModelRequest) -> AsyncIterator[str]:
        """Yield one sample's text as it is generated (its concatenation is the text)."""
        if request.params.n != 1:
            raise ModelError("stream() produces a single sample; use generate() for n > 1")
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        halt = asyncio.Event()
        call = asyncio.ensure_future(self.generate(request, on_text=pieces.put_nowait, halt=halt))
        call.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            await call
        finally:
            halt.set()  # a consumer that stops early ends the generation at the next token
            if not call.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await call

    async def close(self) -> None:
        """Stop the engine (what is in flight fails as retryable) and free the model."""
        if self._closed:
            return
        self._closed = True
        with self._load_lock:
            engine, model = self._engine, self._model
            self._engine = self._model = None
        if engine is not None:
            await asyncio.to_thread(engine.close)
        if model is not None:
            model.close()


async def _relay(halt: asyncio.Event, target: threading.Event) -> None:
    await halt.wait()
    target.set()


def _model_error(error: BaseException) -> ModelError:
    if isinstance(error, ModelError):
        return error
    if isinstance(error, EngineClosed):
        return ModelError("the local backend was closed", retryable=True)
    return ModelError(f"local generation failed: {error}", retryable=True)
