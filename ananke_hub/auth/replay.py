"""Server-side memory of used nonces, so a captured launch cannot be replayed.

ltiauthenticator ties the nonce to a cookie that is cleared when read; a second POST of
the same id_token with the same cookies would pass that check. The hub is one process,
so an in-memory map from nonce to expiry is enough: an entry only needs to outlive the
token's own acceptance window (``max_age`` + leeway), after which the token is refused
as too old anyway.
"""

import time


class NonceRegistry:
    def __init__(self, ttl: float):
        self.ttl = ttl
        self._seen: dict[str, float] = {}

    def _prune(self, now: float) -> None:
        # One TTL for all: insertion order is expiry order, so stop at the first live one.
        while self._seen:
            nonce, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[nonce]

    def use(self, nonce: str) -> bool:
        """Record ``nonce``; False if it was already used within the window."""
        now = time.monotonic()
        self._prune(now)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now + self.ttl
        return True

    def __len__(self) -> int:
        return len(self._seen)
