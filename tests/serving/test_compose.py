"""compose.yaml: valid for Docker Compose, every service health-checked, and the thinktank
settings it hands the Ray heads serve as intended.

Where a Docker Compose CLI is installed, ``docker compose config`` validates the file for
real. This machine has none (no compose plugin, no engine), so the file is also validated
against the Compose Specification's JSON schema, as vendored by check-jsonschema, plus the
cross-references that a schema cannot see.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agents.backends.serving_config import RayModelConfig, VLLMModelConfig
from services.serving.app import plan_apps
from services.serving.llm import llm_config_kwargs
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${NAME:-default}`` and ``$$`` substitution, over a loaded document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, str):
        text = _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
        return text.replace("$$", "$")
    return value


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version"], capture_output=True, text=True).stdout
        if "v2." in version:  # v1 predates the Compose Specification
            return [standalone]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), {})


def test_compose_yaml_follows_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    document = yaml.safe_load(COMPOSE.read_text())

    jsonschema.validate(document, schema)  # raises with the offending path


@pytest.mark.skipif(compose_cli() is None, reason="no Docker Compose v2 CLI on this machine")
@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_docker_compose_config_accepts_it(profile: str) -> None:
    cli = compose_cli()
    assert cli is not None
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_every_service_has_a_health_check_and_every_reference_resolves(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "ray-head", "ray-head-gpu"} <= set(services)
    assert {"otel-collector", "jaeger", "minio"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./docker/"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
            elif not source.startswith(("./", "/", "$")):
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    assert services["ray-head"]["profiles"] == ["cpu"]
    assert services["ray-head-gpu"]["profiles"] == ["gpu"]
    gpu = services["ray-head-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def head_settings(
    service: dict[str, Any], config: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings a Ray head container reads: its environment and its mounted TOML file."""
    for key in [key for key in os.environ if key.startswith("THINKTANK_")]:
        monkeypatch.delenv(key)
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("THINKTANK_CONFIG", str(ROOT / config))
    return Settings()


def test_the_cpu_head_serves_the_local_model_where_the_workers_look_for_it(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    head = compose["services"]["ray-head"]
    settings = head_settings(head, "docker/ray-head-cpu.toml", monkeypatch)

    models, _ = plan_apps(settings)

    (served,) = models.models
    assert isinstance(served.spec, RayModelConfig)
    assert served.spec.engine.backend == "local"
    assert served.spec.deployment.autoscaling is not None
    workers = json.loads(compose["services"]["worker"]["environment"]["THINKTANK_MODELS__DEFAULT"])
    assert workers["base_url"] == f"http://models:8000{models.route_prefix}/v1"
    assert workers["model"] == served.spec.served_name
    assert "models" in head["networks"]["default"]["aliases"]


def test_the_gpu_head_serves_vllm_with_mounted_weights_and_adapters_from_minio(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    head = compose["services"]["ray-head-gpu"]
    settings = head_settings(head, "docker/ray-head-gpu.toml", monkeypatch)

    models, _ = plan_apps(settings)

    (served,) = models.models
    assert isinstance(served.spec, VLLMModelConfig)
    assert served.spec.model_source.startswith("/models/")
    assert any(volume.endswith(":/models:ro") for volume in head["volumes"])
    assert models.route_prefix == "/models"  # the workers' URL does not change with the profile
    workers = json.loads(compose["services"]["worker"]["environment"]["THINKTANK_MODELS__DEFAULT"])
    assert workers["model"] == served.spec.model_id
    kwargs = llm_config_kwargs(served.spec)
    assert kwargs["lora_config"]["dynamic_lora_loading_path"] == "s3://adapters/policy"
    assert kwargs["runtime_env"]["env_vars"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert kwargs["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
