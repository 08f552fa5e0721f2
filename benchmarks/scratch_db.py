"""A throwaway PostgreSQL database for one benchmark run, created and dropped by name."""

from __future__ import annotations

import uuid


def _libpq(admin_url: str) -> str:
    return admin_url.replace("postgresql+psycopg://", "postgresql://")


def create_scratch_database(admin_url: str, prefix: str) -> tuple[str, str]:
    """A new empty database on the server of ``admin_url``: (its SQLAlchemy URL, its name)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_scratch_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
