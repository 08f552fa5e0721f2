"""Where thinktank keeps what lasts between runs on this machine: the data directory."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir


def data_dir() -> Path:
    """Where embedded state lives: ``$THINKTANK_HOME`` or the user's data directory."""
    return Path(os.environ.get("THINKTANK_HOME") or user_data_dir("thinktank"))
