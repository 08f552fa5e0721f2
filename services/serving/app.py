"""Building and deploying the Ray Serve applications from the settings.

From the model map come one model deployment per distinct served model (logical names that
differ only in their LoRA adapter share one), grouped into applications by ``app_name``:

- ``models``: this project's ``ModelServer`` deployments (the local transformers model on
  CPUs, or the scripted engine), behind ``ModelIngress`` (OpenAI-compatible routes);
- ``llm``: vLLM through Ray Serve LLM (``LLMServer`` deployments behind its OpenAI ingress);
- ``thinktank``: the HTTP API as an ingress; its runs reach the models through
  DeploymentHandles found by name (``serve.get_deployment_handle``), so there is no HTTP hop.

Entries of the embedded kinds (``local``, ``scripted``) become ``ray`` entries served with the
default deployment settings, so ``thinktank serve --ray`` on a laptop serves the local model as
a deployment with no extra configuration; each distinct spec gets one deployment.

Entry points: :func:`deploy` (``thinktank serve --ray``), :func:`application` (``serve run
services.serving.app:application app=models``) and :func:`serve_config` (a Serve config file
for ``serve deploy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.backends.local.config import LocalModelConfig
from agents.backends.scripted import ScriptedModelConfig
from agents.backends.serving_config import RayModelConfig, VLLMModelConfig
from agents.model_map import ModelMap
from services.settings import Settings

ServedSpec = RayModelConfig | VLLMModelConfig


class ServingConfigError(ValueError):
    """The model map cannot be served as configured (the message says why)."""


@dataclass
class ServedModel:
    """One model deployment and the logical names it answers for."""

    spec: ServedSpec
    names: list[str] = field(default_factory=list)


@dataclass
class ServeApp:
    name: str
    route_prefix: str
    models: list[ServedModel] = field(default_factory=list)

    @property
    def engine(self) -> str:
        return self.models[0].spec.backend if self.models else "api"


def _entries(model_map: ModelMap) -> list[tuple[str, Any]]:
    return [("default", model_map.default), *model_map.models.items()]


def servable_map(model_map: ModelMap) -> ModelMap:
    """The model map with every embedded entry (``local``, ``scripted``) turned into a served
    ``ray`` entry; equal specs share one served name, hence one deployment."""
    names: dict[str, str] = {}

    def served(name: str, spec: Any) -> Any:
        if not isinstance(spec, LocalModelConfig | ScriptedModelConfig):
            return spec
        key = spec.model_dump_json()
        if key not in names:
            base = spec.backend
            names[key] = base if base not in names.values() else f"{base}-{name}"
        return RayModelConfig(served_name=names[key], engine=spec)

    return ModelMap(
        default=served("default", model_map.default),
        models={name: served(name, spec) for name, spec in model_map.models.items()},
    )


def plan_models(model_map: ModelMap) -> dict[str, ServedModel]:
    """Served models by ``<app>/<deployment>``; entries of one served name must agree on
    everything but the adapter."""
    plan: dict[str, ServedModel] = {}
    for name, spec in _entries(model_map):
        if not isinstance(spec, RayModelConfig | VLLMModelConfig):
            continue
        key = f"{spec.app_name}/{spec.deployment_name()}"
        served = plan.get(key)
        if served is None:
            plan[key] = ServedModel(spec.model_copy(update={"adapter": None}), [name])
        elif served.spec.serving_key() != spec.model_copy(update={"adapter": None}).serving_key():
            raise ServingConfigError(
                f"models {', '.join([*served.names, name])} share the served name "
                f"{key!r} but differ in how it is served; give each its own "
                "served_name / model_id, or make them equal apart from the adapter"
            )
        else:
            served.names.append(name)
    return plan


def plan_apps(settings: Settings) -> list[ServeApp]:
    """The model applications (deploy these first) and then the API's."""
    serving = settings.serving
    apps: dict[str, ServeApp] = {}
    for served in plan_models(servable_map(settings.models)).values():
        name = served.spec.app_name
        if name == serving.api_app:
            raise ServingConfigError(f"app_name {name!r} is the API's application name")
        prefix = serving.route_prefixes.get(name, f"/{name}")
        app = apps.setdefault(name, ServeApp(name, prefix))
        if app.models and app.engine != served.spec.backend:
            raise ServingConfigError(
                f"application {name!r} would hold both {app.engine} and {served.spec.backend} "
                "models; give the vllm entries their own app_name"
            )
        app.models.append(served)
    return [*apps.values(), ServeApp(serving.api_app, serving.api_route_prefix)]


def build_application(app: ServeApp, settings: Settings, bind_host: str = "127.0.0.1") -> Any:
    """The Serve application (an ``Application`` to ``serve.run``) of one planned app."""
    from services.serving.deployments import ApiServer, ModelIngress, ModelServer

    if app.engine == "api":
        api = settings.serving.api
        served_settings = settings.model_copy(update={"models": servable_map(settings.models)})
        return ApiServer.options(
            **api.serve_options(),
            ray_actor_options={"num_cpus": api.num_cpus, "num_gpus": api.num_gpus},
        ).bind(served_settings, bind_host)
    if app.engine == "vllm":
        from services.serving.llm import build_llm_app

        return build_llm_app([served.spec for served in app.models])  # type: ignore[misc]
    servers = {}
    for served in app.models:
        spec = served.spec
        assert isinstance(spec, RayModelConfig)
        servers[spec.served_name] = ModelServer.options(
            name=spec.deployment_name(),
            **spec.deployment.serve_options(),
            ray_actor_options={
                "num_cpus": spec.deployment.num_cpus,
                "num_gpus": spec.deployment.num_gpus,
            },
        ).bind(spec)
    return ModelIngress.options(name=f"ModelIngress:{app.name}").bind(servers)


def deploy(settings: Settings, *, bind_host: str = "127.0.0.1") -> list[ServeApp]:
    """Deploy every application to the connected Ray cluster (models first, so the API
    starts with its models ready); returns what was deployed."""
    from ray import serve

    apps = plan_apps(settings)
    for app in apps:
        serve.run(
            build_application(app, settings, bind_host),
            name=app.name,
            route_prefix=app.route_prefix,
        )
    return apps


def application(args: dict[str, str]) -> Any:
    """``serve run services.serving.app:application app=<name>`` (settings from the
    environment and thinktank.toml, as every thinktank process reads them)."""
    settings = Settings()
    wanted = args.get("app", settings.serving.api_app)
    for app in plan_apps(settings):
        if app.name == wanted:
            return build_application(app, settings, args.get("bind_host", "0.0.0.0"))
    known = ", ".join(app.name for app in plan_apps(settings))
    raise ServingConfigError(f"no application {wanted!r} in this configuration ({known})")


def serve_config(settings: Settings, *, host: str = "0.0.0.0", port: int = 8000) -> dict:
    """A Serve config (``serve deploy FILE``) with every application, models first."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": app.name,
                "route_prefix": app.route_prefix,
                "import_path": "services.serving.app:application",
                "args": {"app": app.name, "bind_host": host},
            }
            for app in plan_apps(settings)
        ],
    }
