"""Per-key limits: requests per minute, and a quota of tokens the key's runs may spend.

Requests per minute use a fixed window that opens at a key's first request and lasts 60
seconds. Over the limit, the answer is 429 with ``Retry-After``: the seconds until that window
closes. The count lives in Redis when the service has one (``Settings.events_redis_url``: one
count across every API process, atomic in a small Lua script) and in this process's memory
otherwise (the embedded single-process mode).

The token quota is a lifetime total, not a rate, so it is counted where tokens are already
recorded: ``Store.finish_run`` writes each run's token totals when the run ends, and a key's
spend is the sum over its runs. That one place covers runs executed in the API process and
on Celery workers alike, survives restarts (an in-memory counter would not), and counts a
resumed run once (a counter fed at every finish would add it again). Once the spend reaches
the quota, the next submission gets 429 without ``Retry-After``: waiting does not help. A run
that starts under the quota may end over it; runs are never cut short by the quota (use the
pattern's ``token_budget`` to bound a single run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.settings import Settings
from store.api_keys import tokens_spent
from store.runs import Store
from store.tables.runs import ApiKey

WINDOW_S = 60
REDIS_PREFIX = "thinktank:ratelimit:"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    """Whole seconds until the key's window closes (at least 1)."""


class RateLimiter(Protocol):
    async def hit(self, key_id: str, limit_per_minute: int) -> Decision:
        """Count one request of the key and say whether it is within the limit."""
        ...

    async def close(self) -> None: ...


def _decision(count: int, limit: int, seconds_left: float) -> Decision:
    return Decision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(limit - count, 0),
        retry_after_s=max(math.ceil(seconds_left), 1),
    )


class MemoryRateLimiter:
    """For one process: the embedded mode, where no Redis is configured."""

    def __init__(
        self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, key_id: str, limit_per_minute: int) -> Decision:
        now = self.clock()
        opened, count = self._windows.get(key_id, (now, 0))
        if now >= opened + self.window_s:
            opened, count = now, 0
        count += 1
        self._windows[key_id] = (opened, count)
        if len(self._windows) > 10_000:  # keys are few; this only guards against a leak
            self._windows = {k: w for k, w in self._windows.items() if now < w[0] + self.window_s}
        return _decision(count, limit_per_minute, opened + self.window_s - now)

    async def close(self) -> None:
        self._windows.clear()


# INCR and the window's expiry in one atomic step. A count found without an expiry (which
# only a foreign write could leave) gets one, so a key can never be locked out for good.
HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisRateLimiter:
    """One count per key shared by every API process, in keys ``{prefix}{key id}``."""

    def __init__(self, url: str, *, prefix: str = REDIS_PREFIX, window_s: int = WINDOW_S) -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self.window_ms = window_s * 1000
        self._redis = redis.Redis.from_url(url)
        self._hit = self._redis.register_script(HIT_SCRIPT)

    async def hit(self, key_id: str, limit_per_minute: int) -> Decision:
        count, ttl_ms = await self._hit(keys=[self.prefix + key_id], args=[self.window_ms])
        return _decision(int(count), limit_per_minute, int(ttl_ms) / 1000)

    async def close(self) -> None:
        await self._redis.aclose()


def make_rate_limiter(settings: Settings) -> RateLimiter:
    url = settings.events_redis_url
    return RedisRateLimiter(url) if url else MemoryRateLimiter()


async def token_quota_left(store: Store, key: ApiKey) -> int | None:
    """Tokens the key's runs may still spend (0 or less: exhausted); None: no quota."""
    if key.token_quota is None:
        return None
    return key.token_quota - await tokens_spent(store, key.id)
