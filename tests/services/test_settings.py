"""Settings come from THINKTANK_* variables first, then the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.backends.local.config import LocalModelConfig
from agents.backends.openai_compat import OpenAIModelConfig
from services.settings import Settings


def test_toml_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "thinktank.toml"
    config.write_text(
        'database_url = "sqlite+aiosqlite:///from-toml.db"\n'
        "[models.models.ceo]\n"
        'backend = "openai"\n'
        'base_url = "http://127.0.0.1:8000/v1"\n'
        'model = "big-model"\n'
    )
    monkeypatch.setenv("THINKTANK_CONFIG", str(config))
    monkeypatch.delenv("THINKTANK_DATABASE_URL", raising=False)
    monkeypatch.delenv("THINKTANK_MODELS__DEFAULT", raising=False)

    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///from-toml.db"
    ceo = settings.models.spec_for("ceo")
    assert isinstance(ceo, OpenAIModelConfig) and ceo.model == "big-model"
    assert isinstance(settings.models.spec_for("policy"), LocalModelConfig)

    monkeypatch.setenv("THINKTANK_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().database_url == "postgresql+psycopg://u@h/db"


def test_default_database_lives_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path))
    monkeypatch.setenv("THINKTANK_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("THINKTANK_DATABASE_URL", raising=False)
    assert Settings().database_url == f"sqlite+aiosqlite:///{tmp_path / 'thinktank.db'}"
