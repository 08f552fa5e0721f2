"""vLLM model-map entries as Ray Serve LLM configuration (``ray.serve.llm.LLMConfig``).

:func:`llm_config_kwargs` is pure (no Ray, no vLLM): it maps an entry's fields onto LLMConfig's
(engine arguments, tensor parallelism, prefix caching, LoRA, replicas or autoscaling).
:func:`build_llm_config` and :func:`build_llm_app` need Ray Serve LLM, whose public module
imports vLLM's protocol models, so they run only where vLLM is installed (the GPU image).
"""

from __future__ import annotations

from typing import Any

from agents.backends.serving_config import VLLMModelConfig


def llm_config_kwargs(spec: VLLMModelConfig) -> dict[str, Any]:
    """LLMConfig's keyword arguments for one entry."""
    engine_kwargs: dict[str, Any] = {
        **spec.engine_kwargs,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
    }
    if spec.max_model_len is not None:
        engine_kwargs["max_model_len"] = spec.max_model_len
    loading: dict[str, Any] = {"model_id": spec.model_id, "model_source": spec.model_source}
    if spec.tokenizer_source is not None:
        loading["tokenizer_source"] = spec.tokenizer_source
    kwargs: dict[str, Any] = {
        "model_loading_config": loading,
        "engine_kwargs": engine_kwargs,
        "deployment_config": spec.deployment.serve_options(),
    }
    if spec.lora is not None:
        # vLLM holds max_loras adapters on the GPU; Serve keeps as many per replica (LRU), so
        # a replica never routes to an adapter its engine has no slot for.
        engine_kwargs.update(
            enable_lora=True,
            max_loras=spec.lora.max_adapters,
            max_lora_rank=spec.lora.max_lora_rank,
        )
        kwargs["lora_config"] = {
            "dynamic_lora_loading_path": spec.lora.adapters_uri,
            "max_num_adapters_per_replica": spec.lora.max_adapters,
            "download_timeout_s": spec.lora.download_timeout_s,
        }
    if spec.accelerator_type is not None:
        kwargs["accelerator_type"] = spec.accelerator_type
    if spec.runtime_env is not None:
        kwargs["runtime_env"] = spec.runtime_env
    return kwargs


def build_llm_config(spec: VLLMModelConfig) -> Any:
    from ray.serve.llm import LLMConfig

    return LLMConfig(**llm_config_kwargs(spec))


def build_llm_app(specs: list[VLLMModelConfig]) -> Any:
    """Ray Serve LLM's OpenAI app: one ``LLMServer`` deployment per entry behind its
    OpenAI-compatible ingress (``/v1/chat/completions``, ``/v1/models``...)."""
    from ray.serve.llm import build_openai_app

    return build_openai_app({"llm_configs": [build_llm_config(spec) for spec in specs]})
