"""Settings of the Ray Serve application (``[serving]`` in thinktank.toml,
``THINKTANK_SERVING__*``); per-model deployment settings live on the model-map entries
(:mod:`agents.backends.serving_config`). Reading them never imports Ray."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agents.backends.serving_config import DeploymentSpec


class ServingSettings(BaseModel):
    """Where the Serve application listens and how its API ingress is deployed."""

    ray_address: str | None = Field(
        None,
        description="Ray cluster to deploy to (e.g. auto, or ray-head:6379); unset: start a "
        "local Ray instance in the serving process",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of a local Ray instance (default: all of the machine's)"
    )
    api_app: str = Field("thinktank", description="name of the API's Serve application")
    api_route_prefix: str = Field("/", description="HTTP prefix of the API")
    api: DeploymentSpec = Field(
        default_factory=lambda: DeploymentSpec(num_cpus=0, max_ongoing_requests=256),
        description="replicas of the API ingress (each executes runs unless a broker is set)",
    )
    route_prefixes: dict[str, str] = Field(
        default_factory=lambda: {"models": "/models", "llm": "/llm"},
        description="HTTP prefix of each model application's OpenAI-compatible routes",
    )
