"""Adapter requests the local backend refuses before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.backends.local.config import LocalModelConfig
from agents.backends.local.hf_backend import TransformersBackend as LocalBackend
from agents.backends.serving_config import RayModelConfig
from agents.model import ChatMessage, ModelError, ModelRequest


def ask(adapter: str) -> ModelRequest:
    return ModelRequest(messages=[ChatMessage(role="user", content="hi")], adapter=adapter)


@pytest.mark.parametrize("name", ["../etc", "a/b", "base:adapter", "", "-x"])
async def test_adapter_names_that_are_not_plain_folder_names_are_refused(
    tmp_path: Path, name: str
) -> None:
    backend = LocalBackend(LocalModelConfig(adapters_dir=tmp_path))
    try:
        with pytest.raises(ModelError, match="invalid adapter name") as refused:
            await backend.generate(ask(name))
        assert refused.value.retryable is False
        assert backend.stats.requests == 0  # refused before it was queued
    finally:
        await backend.close()


async def test_an_adapter_that_was_never_published_is_refused_at_once(tmp_path: Path) -> None:
    backend = LocalBackend(LocalModelConfig(adapters_dir=tmp_path))
    try:
        with pytest.raises(ModelError, match="no LoRA adapter 'critic-v0001'") as refused:
            await backend.generate(ask("critic-v0001"))
        assert refused.value.retryable is False
    finally:
        await backend.close()


def test_adapters_default_to_where_training_publishes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store.model_versions import adapters_dir

    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path))
    assert LocalBackend(LocalModelConfig()).adapters.root == adapters_dir()


def test_a_model_map_entry_names_a_versioned_adapter() -> None:
    assert RayModelConfig(adapter="critic-v0003").adapter == "critic-v0003"
    with pytest.raises(ValueError, match="invalid adapter name"):
        RayModelConfig(adapter="critic/v3")
