"""A GGUF model loaded by llama.cpp: its tokenizer, chat template and end-of-turn tokens.

llama.cpp's backend is initialised once per process, with its own logging sent to ours.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import llama_cpp as lc

log = logging.getLogger(__name__)

_BACKEND_READY = threading.Lock()
_backend_initialised = False


def init_backend() -> None:
    """``llama_backend_init`` once per process, with llama.cpp's own logging silenced."""
    global _backend_initialised
    with _BACKEND_READY:
        if _backend_initialised:
            return
        lc.llama_log_set(_silent_log, ctypes.c_void_p(0))
        lc.llama_backend_init()
        _backend_initialised = True


@lc.llama_log_callback
def _silent_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    if level <= 2:  # GGML_LOG_LEVEL_ERROR and worse are worth a line in our log
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


class LlamaModel:
    """A loaded GGUF file: tokenizer, chat template, end-of-generation tokens."""

    def __init__(self, path: Path, *, threads: int) -> None:
        init_backend()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = 0
        self.path = path
        self.threads = threads
        self.model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ValueError(f"llama.cpp could not load {path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lc.llama_model_n_ctx_train(self.model)
        self.chat_template = self.meta("tokenizer.chat_template")
        self.name = self.meta("general.name") or path.stem
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(lc.llama_vocab_bos(self.vocab))

    def meta(self, key: str) -> str | None:
        size = lc.llama_model_meta_val_str(self.model, key.encode(), None, 0)
        if size < 0:
            return None
        buffer = ctypes.create_string_buffer(size + 1)
        lc.llama_model_meta_val_str(self.model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", "replace")

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (lc.llama_token * capacity)()
        count = lc.llama_tokenize(self.vocab, data, len(data), tokens, capacity, False, special)
        if count < 0:  # cannot happen with capacity > bytes, but llama.cpp says how many
            capacity = -count
            tokens = (lc.llama_token * capacity)()
            count = lc.llama_tokenize(self.vocab, data, len(data), tokens, capacity, False, special)
        return list(tokens[:count])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for; control tokens (end of turn...) stand for none."""
        buffer = ctypes.create_string_buffer(64)
        size = lc.llama_token_to_piece(self.vocab, token, buffer, 64, 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = lc.llama_token_to_piece(self.vocab, token, buffer, -size, 0, False)
        return buffer.raw[:size]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None
