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


def profiles() -> list[str]:
    """Every profile the file names, and "" for a plain ``docker compose up``."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    named = {profile for service in services.values() for profile in service.get("profiles", [])}
    return ["", *sorted(named)]


@pytest.mark.skipif(compose_cli() is None, reason="no Docker Compose v2 CLI on this machine")
@pytest.mark.parametrize("profile", profiles())
def test_docker_compose_config_accepts_it(profile: str) -> None:
    cli = compose_cli()
    assert cli is not None
    chosen = ["--profile", profile] if profile else []
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), *chosen, "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_every_pulled_image_is_pinned_to_a_release(compose: dict[str, Any]) -> None:
    """``latest`` or a bare major moves under a user, and a repository can vanish (MinIO's
    images left Docker Hub): each image names a release, and only thinktank's own images,
    built from this checkout, go by ``THINKTANK_TAG``."""
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?", image), f"{name}: {image} is unpinned"


def test_every_service_is_one_a_profile_uses(compose: dict[str, Any]) -> None:
    """A service that nothing calls only makes ``up`` slower and more fragile."""
    services = compose["services"]
    assert "minio" not in services  # it held adapters that nothing ever uploaded
    entry_points = {"api", "worker"}
    for name, service in services.items():
        needed = any(name in other.get("depends_on", {}) for other in services.values())
        assert needed or name in entry_points or service.get("profiles"), f"nothing uses {name}"


def test_every_service_has_a_health_check_and_every_reference_resolves(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "ray-head", "ray-head-gpu"} <= set(services)
    assert {"otel-collector", "jaeger"} <= set(services)
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
        if value is not None:  # a bare name passes the host's value through, if it has one
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


def test_the_gpu_head_serves_vllm_with_mounted_weights_and_adapters_from_your_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"THINKTANK_ADAPTERS_URI": "s3://lab-adapters/qwen-7b"}
    compose = interpolate(yaml.safe_load(COMPOSE.read_text()), env)
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
    assert kwargs["lora_config"]["dynamic_lora_loading_path"] == "s3://lab-adapters/qwen-7b"
    assert kwargs["runtime_env"]["env_vars"] == {"HF_HUB_OFFLINE": "1"}
    # the bucket's endpoint and keys come from the host, never a default written here
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        assert key in head["environment"] and head["environment"][key] is None


def test_adapters_that_trainings_publish_reach_the_cpu_head(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = "adapters:/var/lib/thinktank/models/adapters"  # where store.adapters_dir() is
    assert published in services["worker"]["volumes"]
    assert published in services["api"]["volumes"]
    assert "adapters:/adapters" in services["ray-head"]["volumes"]
