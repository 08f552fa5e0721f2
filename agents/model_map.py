"""The model map: logical model names (``policy``, ``ceo``, ``critic``...) to backends.

Configuration names a backend and its options per logical name; names that are not mapped fall
back to ``default``. Two names with the same spec share one backend instance, so the CEO and the
experts on the embedded defaults load the local model once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, Field

from agents.backends.local.catalog import check_weights
from agents.backends.local.config import LocalModelConfig
from agents.backends.openai_compat import OpenAIModelConfig
from agents.backends.scripted import ScriptedBackend, ScriptedModelConfig
from agents.backends.serving_config import RayModelConfig, VLLMModelConfig
from agents.model import ModelBackend

ModelSpec = Annotated[
    LocalModelConfig | OpenAIModelConfig | ScriptedModelConfig | RayModelConfig | VLLMModelConfig,
    Field(discriminator="backend"),
]


class ModelMap(BaseModel):
    """Which backend answers for each logical model name."""

    default: ModelSpec = Field(default_factory=LocalModelConfig)
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="logical name -> backend spec; others use default"
    )

    def spec_for(self, logical_name: str) -> ModelSpec:
        return self.models.get(logical_name, self.default)

    def check_local_weights(self, progress: Callable[[str], None]) -> None:
        """Every local model's weights, assembled and checked before any run starts, so a
        missing or damaged package is one clear error up front (WeightsError), not a failed
        run."""
        for spec in [self.default, *self.models.values()]:
            if isinstance(spec, LocalModelConfig):
                check_weights(spec.model, spec.gguf_file, spec.model_dir, progress)


def build_backend(
    spec: ModelSpec, name: str, on_progress: Callable[[str], None] | None = None
) -> ModelBackend:
    if isinstance(spec, ScriptedModelConfig):
        return ScriptedBackend.from_config(spec)
    if isinstance(spec, OpenAIModelConfig):
        from agents.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(spec)
    if isinstance(spec, RayModelConfig):  # Ray and vLLM load only when these are used
        from agents.backends.ray_handle import RayHandleBackend

        return RayHandleBackend(spec)
    if isinstance(spec, VLLMModelConfig):
        from agents.backends.vllm import VLLMBackend

        return VLLMBackend(spec)
    return build_local_backend(spec, on_progress=on_progress)


def build_local_backend(
    spec: LocalModelConfig, *, name: str = "local", on_progress: Callable[[str], None] | None = None
) -> ModelBackend:
    """The local backend on the engine ``spec`` names. llama.cpp, torch and transformers load
    only when a local model is actually used."""
    if spec.engine == "transformers":
        from agents.backends.local.hf_backend import TransformersBackend

        return TransformersBackend(spec, on_progress=on_progress, name=name)
    from agents.backends.local.llama_backend import LlamaCppBackend

    return LlamaCppBackend(spec, on_progress=on_progress, name=name)


class ModelRouter:
    """Hands out one backend per distinct spec, built on first use and closed together."""

    def __init__(
        self,
        model_map: ModelMap | None = None,
        *,
        overrides: dict[str, ModelBackend] | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self._on_progress = on_progress
        self.model_map = model_map or ModelMap()
        self._overrides = dict(overrides or {})
        self._built: dict[str, ModelBackend] = {}

    @classmethod
    def single(cls, backend: ModelBackend) -> ModelRouter:
        """Every logical name answered by one backend (tests, benchmarks)."""
        router = cls()
        router._overrides["*"] = backend
        return router

    def get(self, logical_name: str) -> ModelBackend:
        if logical_name in self._overrides:
            return self._overrides[logical_name]
        if "*" in self._overrides:
            return self._overrides["*"]
        return self._backend(self.model_map.spec_for(logical_name), logical_name)

    def _backend(self, spec: ModelSpec, logical_name: str) -> ModelBackend:
        key = spec.model_dump_json()
        if key not in self._built:
            self._built[key] = build_backend(spec, logical_name, self._on_progress)
        return self._built[key]

    def warm(self) -> None:
        """Build now the backends that are only clients (``openai``, ``scripted``), so that a
        process's first run does not wait for them at its first call: a cold OpenAI client
        costs 0.1-0.3 s (its HTTP transport's imports, the TLS trust store). Models that load
        weights stay lazy. Call it before runs start, off the loop (it blocks while it builds).
        """
        specs = [("default", self.model_map.default), *self.model_map.models.items()]
        for name, spec in specs:
            if isinstance(spec, OpenAIModelConfig | ScriptedModelConfig):
                self._backend(spec, name)

    async def close(self) -> None:
        backends = {id(b): b for b in [*self._built.values(), *self._overrides.values()]}
        for backend in backends.values():
            await backend.close()
        self._built.clear()
