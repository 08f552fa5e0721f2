"""Model-map entries for models served by Ray Serve: the ``ray`` and ``vllm`` backends.

Kept apart from the backends so that reading a model map never imports Ray or vLLM. Each entry
says two things: how the model is *served* (a Ray Serve deployment: its engine, replica count or
autoscaling bounds, resources) and how a graph *calls* it (a DeploymentHandle to that deployment,
an optional default LoRA adapter). ``services.serving`` reads the first half to build the
application; ``agents.backends.ray_handle`` and ``agents.backends.vllm`` read the second.

A deployment is named after its ``served_name`` (``ray``) or ``model_id`` (``vllm``), the name
clients also send as ``model`` on the OpenAI-compatible routes, so the API process finds a
deployment from its model-map entry alone. Logical names that differ only in ``adapter`` share
one deployment: one base model, several LoRA adapters.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from agents.backends.local.config import LocalModelConfig
from agents.backends.scripted import ScriptedModelConfig

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Adapter names are folder names (a directory or a bucket prefix): no slashes, no ``..``,
no ``:`` (Ray Serve LLM splits ``model:adapter`` on it)."""


def check_adapter_name(name: str) -> str:
    if not ADAPTER_NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid adapter name {name!r}: use letters, digits, '.', '_' and '-' "
            "(a versioned folder name such as critic-v0003)"
        )
    return name


class AutoscalingSpec(BaseModel):
    """Ray Serve autoscaling bounds (``ray.serve.config.AutoscalingConfig``)."""

    min_replicas: int = Field(1, ge=0, description="replicas kept when idle")
    max_replicas: int = Field(1, ge=1, description="most replicas under load")
    initial_replicas: int | None = Field(None, ge=0, description="replicas at deploy time")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="requests in flight per replica the autoscaler aims for"
    )
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self

    def serve_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class DeploymentSpec(BaseModel):
    """How many replicas serve a model and what each one holds."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (without autoscaling)")
    autoscaling: AutoscalingSpec | None = Field(
        None, description="autoscaling bounds; when set, num_replicas is not used"
    )
    max_ongoing_requests: int = Field(
        64,
        ge=1,
        description="requests one replica takes at once; the engines batch them, so keep it "
        "well above the batch size",
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (local engine only)")

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options`` for this spec."""
        options: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests}
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.serve_options()
        else:
            options["num_replicas"] = self.num_replicas
        return options


EngineSpec = Annotated[LocalModelConfig | ScriptedModelConfig, Field(discriminator="backend")]


class RayModelConfig(BaseModel):
    """A model served by this project's own Ray Serve deployment (any machine, CPU included):
    the ``engine`` runs inside each replica and graphs reach it through a DeploymentHandle."""

    backend: Literal["ray"] = "ray"
    served_name: str = Field(
        "local",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="the model's name on the Serve application (deployment Model:<name>, "
        "`model` on its OpenAI-compatible routes)",
    )
    engine: EngineSpec = Field(
        default_factory=LocalModelConfig, description="what each replica runs"
    )
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    adapter: str | None = Field(
        None, description="LoRA adapter for requests that name none (a versioned name)"
    )
    app_name: str = Field("models", description="the Serve application holding the deployment")
    ray_address: str = Field(
        "auto", description="Ray cluster to join when the caller is not in one already"
    )
    timeout_s: float = Field(600.0, gt=0, description="longest wait for one call's reply")

    @model_validator(mode="after")
    def _names(self) -> RayModelConfig:
        if self.adapter is not None:
            check_adapter_name(self.adapter)
        return self

    def deployment_name(self) -> str:
        return f"Model:{self.served_name.replace('/', '--')}"

    def serving_key(self) -> str:
        """Entries with equal keys are served by one deployment (they differ in adapter only)."""
        return self.model_dump_json(include={"served_name", "engine", "deployment", "app_name"})


class VLLMLoraSpec(BaseModel):
    """Where Ray Serve LLM loads LoRA adapters from, per request, by name."""

    adapters_uri: str = Field(
        description="bucket prefix whose sub-folders are adapters (s3://, gs://, abfss://, "
        "azure://); Ray Serve LLM loads no local paths"
    )
    max_adapters: int = Field(
        16, ge=1, description="adapters kept on a replica (LRU) and on the GPU at once"
    )
    max_lora_rank: int = Field(16, ge=1, description="at least the rank adapters were trained at")
    download_timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _remote(self) -> VLLMLoraSpec:
        if not self.adapters_uri.startswith(("s3://", "gs://", "abfss://", "azure://")):
            raise ValueError(
                f"adapters_uri {self.adapters_uri!r}: Ray Serve LLM loads adapters only from "
                "s3://, gs://, abfss:// or azure:// (any S3-compatible store serves s3://)"
            )
        return self


class VLLMModelConfig(BaseModel):
    """A model served by vLLM through Ray Serve LLM (GPU machines). The engine options become
    Ray Serve LLM's ``LLMConfig``; graphs call the ``LLMServer`` deployment by handle."""

    backend: Literal["vllm"] = "vllm"
    model_id: str = Field(
        min_length=1,
        pattern=r"^[^:]+$",
        description="the served name (clients send it as `model`; `<model_id>:<adapter>` "
        "selects a LoRA adapter)",
    )
    model_source: str = Field(
        description="weights: a local directory (mounted from the host) or a bucket URI; "
        "never downloaded from a hub by thinktank"
    )
    tokenizer_source: str | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    enable_prefix_caching: bool = Field(
        True, description="reuse the KV cache of shared prompt prefixes across requests"
    )
    max_model_len: int | None = Field(None, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="any further vLLM engine arguments, verbatim"
    )
    lora: VLLMLoraSpec | None = None
    accelerator_type: str | None = Field(
        None,
        description="e.g. H100; adds a resource demand, so leave it unset on machines whose "
        "node does not advertise it",
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env of the replicas (e.g. env_vars for the S3 endpoint)"
    )
    deployment: DeploymentSpec = Field(default_factory=lambda: DeploymentSpec(num_cpus=0))
    adapter: str | None = Field(None, description="LoRA adapter for requests that name none")
    app_name: str = Field("llm", description="the Serve application holding the deployment")
    ray_address: str = "auto"
    timeout_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> VLLMModelConfig:
        if self.adapter is not None:
            check_adapter_name(self.adapter)
            if self.lora is None:
                raise ValueError(f"adapter {self.adapter!r} needs a `lora` section")
        clash = {"tensor_parallel_size", "enable_prefix_caching", "enable_lora"} & set(
            self.engine_kwargs
        )
        if clash:
            raise ValueError(f"set {sorted(clash)} with their own fields, not in engine_kwargs")
        return self

    def deployment_name(self) -> str:
        # Ray Serve LLM's own naming (core/server/builder.py).
        return "LLMServer:" + self.model_id.replace("/", "--").replace(".", "_")

    def serving_key(self) -> str:
        return self.model_dump_json(exclude={"adapter", "ray_address", "timeout_s"})
