"""Per-tenant token buckets, counted in spans."""

import time
from collections.abc import Callable

from koverage.errors import ResourceExhaustedError


class TenantRateLimiter:
    """Lets each tenant send `rate_per_s` spans a second, bursting to `burst`.

    A request larger than the whole bucket passes when the bucket is full
    (and leaves it in debt), so a big batch is slowed, never refused forever.

    Args:
        rate_per_s: Refill rate in spans per second; 0 disables the limit.
        burst: Bucket size in spans (at least 1).
        clock: Monotonic clock in seconds (for tests).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s={rate_per_s} must be >= 0 (0 disables)")
        if burst < 1:
            raise ValueError(f"burst={burst} must be >= 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, tenant: str, spans: int) -> None:
        """Takes `spans` tokens from `tenant`'s bucket.

        Raises:
            ResourceExhaustedError: not enough tokens; `retry_after_s` says
                when there will be.
        """
        if self._rate == 0 or spans <= 0:
            return
        now = self._clock()
        tokens, updated = self._buckets.get(tenant, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)

        needed = min(float(spans), self._burst)
        if tokens < needed:
            self._buckets[tenant] = (tokens, now)
            retry_after_s = (needed - tokens) / self._rate
            raise ResourceExhaustedError(
                f"tenant {tenant!r} is over its ingest rate of {self._rate:g} "
                f"spans/s; retry after {retry_after_s:.3f} s",
                retry_after_s=retry_after_s,
            )
        self._buckets[tenant] = (tokens - spans, now)
