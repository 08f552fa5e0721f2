"""What the serving configuration turns into, without starting Ray: the deployments planned
from a model map, vLLM entries as Ray Serve LLM's own LLMConfig, and the requests the vllm
backend sends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

# The public ray.serve.llm.LLMConfig is this class unchanged (a `pass` subclass), but that
# module imports vLLM's protocol models, so tests validate against the class itself; it needs
# pyarrow (in the test extra), not vLLM.
from ray.llm._internal.serve.core.configs.llm_config import LLMConfig, LoraConfig

from agents.backends.local.config import LocalModelConfig
from agents.backends.scripted import ScriptedModelConfig
from agents.backends.serving_config import (
    AutoscalingSpec,
    DeploymentSpec,
    RayModelConfig,
    VLLMLoraSpec,
    VLLMModelConfig,
)
from agents.backends.vllm import chat_body, response_from_completion, structured_outputs
from agents.model import ChatMessage, ModelRequest, SamplingParams
from agents.model_map import ModelMap
from services.serving.app import ServingConfigError, plan_apps
from services.serving.llm import llm_config_kwargs
from services.settings import Settings
from tests.conftest import run_cli


def vllm_entry(**fields: object) -> VLLMModelConfig:
    values: dict[str, object] = {
        "model_id": "qwen-7b",
        "model_source": "/models/Qwen2.5-7B-Instruct",
        "tensor_parallel_size": 2,
        "max_model_len": 8192,
        "engine_kwargs": {"max_num_seqs": 128},
        "lora": VLLMLoraSpec(adapters_uri="s3://adapters/qwen-7b", max_adapters=4),
        "deployment": DeploymentSpec(
            num_cpus=0, autoscaling=AutoscalingSpec(min_replicas=1, max_replicas=3)
        ),
        "runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://minio:9000"}},
    }
    values.update(fields)
    return VLLMModelConfig.model_validate(values)


def test_a_vllm_entry_is_a_valid_ray_serve_llm_config() -> None:
    config = LLMConfig(**llm_config_kwargs(vllm_entry()))

    assert config.model_id == "qwen-7b"
    assert config.model_loading_config.model_source == "/models/Qwen2.5-7B-Instruct"
    assert config.engine_kwargs == {
        "max_num_seqs": 128,
        "tensor_parallel_size": 2,
        "enable_prefix_caching": True,
        "gpu_memory_utilization": 0.9,
        "max_model_len": 8192,
        "enable_lora": True,
        "max_loras": 4,
        "max_lora_rank": 16,
    }
    assert config.lora_config.dynamic_lora_loading_path == "s3://adapters/qwen-7b"
    assert config.multiplex_config().max_num_models_per_replica == 4
    assert config.deployment_config["autoscaling_config"]["max_replicas"] == 3
    assert "num_replicas" not in config.deployment_config
    assert config.runtime_env == {"env_vars": {"AWS_ENDPOINT_URL": "http://minio:9000"}}


def test_fixed_replicas_and_an_accelerator_type_reach_the_llm_config() -> None:
    entry = vllm_entry(
        lora=None, deployment=DeploymentSpec(num_replicas=2), accelerator_type="H100"
    )
    config = LLMConfig(**llm_config_kwargs(entry))

    assert config.deployment_config["num_replicas"] == 2
    assert config.accelerator_type == "H100"
    assert config.lora_config is None and "enable_lora" not in config.engine_kwargs


def test_local_adapter_folders_are_refused_for_vllm_as_ray_serve_llm_refuses_them() -> None:
    with pytest.raises(ValidationError, match="s3://"):
        VLLMLoraSpec(adapters_uri="/srv/adapters")
    with pytest.raises(ValidationError):
        LoraConfig(dynamic_lora_loading_path="/srv/adapters")


def test_engine_arguments_with_their_own_fields_are_refused_in_engine_kwargs() -> None:
    with pytest.raises(ValidationError, match="tensor_parallel_size"):
        vllm_entry(engine_kwargs={"tensor_parallel_size": 4})


def test_vllm_requests_carry_structured_outputs_never_guided_fields() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    request = ModelRequest(
        messages=[ChatMessage(role="user", content="6*7?")],
        params=SamplingParams(max_tokens=16, stop=["\n\n"], top_logprobs=2, seed=3),
    )

    body = chat_body(
        request,
        "qwen-7b:critic-v0002",
        stream=True,
        constraint=structured_outputs(json_schema=schema),
    )

    assert body["structured_outputs"] == {"json": schema}
    assert not [key for key in body if key.startswith("guided_")]
    assert body["model"] == "qwen-7b:critic-v0002"
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert (body["logprobs"], body["top_logprobs"], body["seed"]) == (True, 2, 3)
    with pytest.raises(ValueError, match="exactly one"):
        structured_outputs(json_schema=schema, regex="[0-9]+")


def test_a_vllm_reply_counts_each_samples_own_tokens() -> None:
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "qwen-7b:critic-v0002",
        "choices": [
            {
                "index": 1,
                "message": {"role": "assistant", "content": "42"},
                "finish_reason": "stop",
                "token_ids": [19, 17],
            },
            {
                "index": 0,
                "message": {"role": "assistant", "content": "It is 42 because"},
                "finish_reason": "length",
                "token_ids": [1, 2, 3, 4, 5],
            },
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }

    response = response_from_completion(reply, adapter="critic-v0002", asked_logprobs=False)

    assert [c.text for c in response.completions] == ["It is 42 because", "42"]
    assert [c.completion_tokens for c in response.completions] == [5, 2]
    assert [c.finish_reason for c in response.completions] == ["length", "stop"]
    assert (response.model, response.adapter, response.prompt_tokens) == (
        "qwen-7b",
        "critic-v0002",
        11,
    )


def test_logical_models_that_differ_in_adapter_share_one_deployment() -> None:
    base = RayModelConfig(served_name="smol", engine=LocalModelConfig())
    models = ModelMap(
        default=base,
        models={
            "critic": base.model_copy(update={"adapter": "critic-v0003"}),
            "ceo": LocalModelConfig(),
            "sneaky": ScriptedModelConfig(),
            "judge": vllm_entry(lora=None),
        },
    )

    apps = {app.name: app for app in plan_apps(Settings(models=models))}

    assert list(apps) == ["models", "llm", "thinktank"]
    served = {m.spec.deployment_name(): m.names for m in apps["models"].models}
    assert served == {
        "Model:smol": ["default", "critic"],
        "Model:local": ["ceo"],
        "Model:scripted": ["sneaky"],
    }
    assert [m.spec.deployment_name() for m in apps["llm"].models] == ["LLMServer:qwen-7b"]
    assert apps["llm"].route_prefix == "/llm"


def test_two_models_under_one_served_name_must_agree() -> None:
    models = ModelMap(
        default=RayModelConfig(served_name="m", deployment=DeploymentSpec(num_replicas=1)),
        models={"ceo": RayModelConfig(served_name="m", deployment=DeploymentSpec(num_replicas=2))},
    )
    with pytest.raises(ServingConfigError, match="default, ceo share the served name"):
        plan_apps(Settings(models=models))


def test_a_serve_config_file_lists_the_model_apps_before_the_api(tmp_path: Path) -> None:
    config = tmp_path / "thinktank.toml"
    config.write_text(
        '[models.default]\nbackend = "ray"\nserved_name = "smol"\n'
        "[models.default.deployment.autoscaling]\nmin_replicas = 1\nmax_replicas = 4\n"
    )
    env = {**os.environ, "THINKTANK_CONFIG": str(config), "THINKTANK_HOME": str(tmp_path)}
    out = tmp_path / "serve.yaml"

    done = run_cli(env, "serve", "--ray", "--serve-config", str(out), "--host", "0.0.0.0")

    assert done.returncode == 0, done.stderr
    written = yaml.safe_load(out.read_text())
    assert written["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert [(a["name"], a["route_prefix"], a["args"]["app"]) for a in written["applications"]] == [
        ("models", "/models", "models"),
        ("thinktank", "/", "thinktank"),
    ]
    assert all(
        a["import_path"] == "services.serving.app:application" for a in written["applications"]
    )


def test_a_model_map_that_cannot_be_served_is_one_line_and_exit_2(tmp_path: Path) -> None:
    models = {
        "default": {"backend": "ray", "served_name": "m"},
        "models": {
            "ceo": {"backend": "ray", "served_name": "m", "engine": {"backend": "scripted"}}
        },
    }
    env = {
        **os.environ,
        "THINKTANK_MODELS": json.dumps(models),
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_CONFIG": str(tmp_path / "none.toml"),
    }

    done = run_cli(env, "serve", "--ray", "--serve-config", str(tmp_path / "x.yaml"))

    assert done.returncode == 2
    assert "share the served name" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
