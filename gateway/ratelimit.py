"""The gateway's admission: the shared token bucket, and its answer's Retry-After."""

from __future__ import annotations

import math

from messaging.ratelimit import TokenBucket

__all__ = ["TokenBucket", "retry_after_header"]


def retry_after_header(wait_s: float) -> str:
    """Retry-After is whole seconds; never 0 for a refusal."""
    return str(max(1, math.ceil(wait_s)))
