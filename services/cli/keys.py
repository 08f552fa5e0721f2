"""``thinktank keys``: API keys for the HTTP API."""

from __future__ import annotations

from typing import TypeVar

import typer
from rich.table import Column, Table

from services.cli.common import CliError, console, escape, open_store, run_async
from services.settings import Settings
from store import api_keys

T = TypeVar("T")


app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)


PERMISSIONS = ("campaigns",)


def campaigns_shown(row: api_keys.ApiKey) -> str:
    return f"yes, {row.max_running_campaigns} at once" if row.can_start_campaigns else "no"


@app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="who or what the key is for"),
    rate_limit: int = typer.Option(
        api_keys.DEFAULT_RATE_LIMIT_PER_MINUTE, min=1, help="requests per minute"
    ),
    token_quota: int | None = typer.Option(
        None, min=1, help="tokens the key's runs may spend in all (default: no quota)"
    ),
    campaigns: bool = typer.Option(
        False, help="may start campaigns, which play many games and train models"
    ),
    max_campaigns: int = typer.Option(
        api_keys.DEFAULT_MAX_RUNNING_CAMPAIGNS,
        min=1,
        max=api_keys.MAX_RUNNING_CAMPAIGNS,
        help="most of the key's campaigns queued or running at once (each trains one model "
        "at a time)",
    ),
) -> None:
    """Create an API key and print it; it is shown this once and cannot be shown again."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            row, key = await api_keys.create_key(
                store,
                name,
                rate_limit_per_minute=rate_limit,
                token_quota=token_quota,
                can_start_campaigns=campaigns,
                max_running_campaigns=max_campaigns,
            )
        quota = f"{row.token_quota} tokens" if row.token_quota else "none"
        console.print(
            f"created API key {row.id} ({escape(row.name)}): prefix {row.prefix}, "
            f"{row.rate_limit_per_minute} requests/minute, token quota {quota}, campaigns "
            f"{campaigns_shown(row)}"
        )
        console.print(f"\n{key}\n", markup=False, highlight=False, soft_wrap=True)
        console.print(
            "This is the only time the key is shown: only its hash is stored, so it cannot be "
            f"shown again. A lost key can only be revoked (thinktank keys revoke {row.prefix})."
        )

    run_async(main)


@app.command("list")
def keys_list() -> None:
    """List API keys: id, name, prefix, created, revoked, limits, tokens spent (never the key)."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            rows = await api_keys.list_keys(store)
            spent = await api_keys.tokens_spent_by_key(store)
        if not rows:
            console.print('no API keys yet: try `thinktank keys create "my client"`')
            return
        table = Table(
            Column("id", no_wrap=True),
            "name",
            Column("prefix", no_wrap=True),
            Column("created", no_wrap=True),
            Column("revoked", no_wrap=True),
            "req/min",
            "token quota",
            "spent",
            "campaigns",
        )
        for row in rows:
            table.add_row(
                row.id,
                escape(row.name),
                row.prefix,
                row.created_at.strftime("%Y-%m-%d %H:%M"),
                row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else "",
                str(row.rate_limit_per_minute),
                str(row.token_quota) if row.token_quota is not None else "none",
                str(spent.get(row.id, 0)),
                campaigns_shown(row),
            )
        console.print(table)

    run_async(main)


@app.command("revoke")
def keys_revoke(
    id_or_prefix: str = typer.Argument(..., help="the key's id or prefix (from `keys list`)"),
) -> None:
    """Revoke an API key: its next request is refused."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            try:
                row = await api_keys.revoke_key(store, id_or_prefix)
            except (api_keys.KeyNotFound, api_keys.AmbiguousKey) as exc:
                raise CliError(str(exc)) from None
        console.print(f"revoked API key {row.id} ({escape(row.name)}, prefix {row.prefix})")

    run_async(main)


@app.command("grant")
def keys_grant(
    id_or_prefix: str = typer.Argument(..., help="the key's id or prefix (from `keys list`)"),
    permission: str = typer.Argument(
        ..., help="campaigns: start self-play campaigns, which play games and train models"
    ),
    max_campaigns: int | None = typer.Option(
        None,
        min=1,
        max=api_keys.MAX_RUNNING_CAMPAIGNS,
        help="most of the key's campaigns queued or running at once (default: as it was, 1 "
        "for a key never granted it)",
    ),
) -> None:
    """Let a key start campaigns through the API; its next request may."""
    _set_campaigns(permission, id_or_prefix, allowed=True, max_running=max_campaigns)


@app.command("deny")
def keys_deny(
    id_or_prefix: str = typer.Argument(..., help="the key's id or prefix (from `keys list`)"),
    permission: str = typer.Argument(..., help="campaigns"),
) -> None:
    """Take a permission back; campaigns the key already started go on (cancel them with
    `thinktank campaign cancel`)."""
    _set_campaigns(permission, id_or_prefix, allowed=False, max_running=None)


def _set_campaigns(
    permission: str, id_or_prefix: str, *, allowed: bool, max_running: int | None
) -> None:
    settings = Settings()

    async def main() -> None:
        if permission not in PERMISSIONS:
            raise CliError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
        async with open_store(settings) as store:
            try:
                row = await api_keys.set_campaign_permission(
                    store, id_or_prefix, allowed=allowed, max_running=max_running
                )
            except (api_keys.KeyNotFound, api_keys.AmbiguousKey) as exc:
                raise CliError(str(exc)) from None
        console.print(
            f"API key {row.id} ({escape(row.name)}, prefix {row.prefix}): campaigns "
            f"{campaigns_shown(row)}"
        )

    run_async(main)
