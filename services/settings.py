"""Service settings: ``THINKTANK_*`` environment variables, then an optional TOML file.

The TOML file is ``$THINKTANK_CONFIG`` or ``thinktank.toml`` in the working directory. Nested
keys use ``__`` in environment variables (``THINKTANK_MODELS__DEFAULT__BACKEND=openai``).
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agents.model_map import ModelMap


def data_dir() -> Path:
    """Where embedded state lives: ``$THINKTANK_HOME`` or the user's data directory."""
    return Path(os.environ.get("THINKTANK_HOME") or user_data_dir("thinktank"))


def default_database_url() -> str:
    return f"sqlite+aiosqlite:///{data_dir() / 'thinktank.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THINKTANK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL: sqlite+aiosqlite:///FILE or postgresql+psycopg://...",
    )
    models: ModelMap = Field(
        default_factory=ModelMap, description="logical model names to backends"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("THINKTANK_CONFIG", "thinktank.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )
