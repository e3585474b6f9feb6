"""Server-side memory of used nonces, so a captured launch cannot be replayed.

ltiauthenticator ties the nonce to a cookie that is cleared when read; a second POST of
the same id_token with the same cookies would pass that check. So the hub records every
used nonce in the course registry's database (SQLite or PostgreSQL), where it outlives a
hub restart. An entry only needs to outlive the token's own acceptance window
(``max_age`` + leeway), after which the token is refused as too old anyway; expired
entries are deleted now and then. The database is reached through the registry's
thread pool, never from the event loop.
"""

import hashlib
import time
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from ..courses.models import UsedNonce, utcnow
from ..courses.registry import CourseRegistry


class NonceRegistry:
    def __init__(self, registry: CourseRegistry, ttl: float, prune_every: float = 60):
        self.registry = registry
        self.ttl = ttl
        self.prune_every = prune_every
        self._next_prune = float("-inf")

    async def use(self, nonce: str) -> bool:
        """Record ``nonce``; False if it was already used within the window."""
        prune = time.monotonic() >= self._next_prune
        if prune:
            self._next_prune = time.monotonic() + self.prune_every
        return await self.registry.run(self.use_blocking, nonce, prune)

    def use_blocking(self, nonce: str, prune: bool = False) -> bool:
        """:meth:`use` for a thread: one transaction, safe against a concurrent replay."""
        registry = self.registry
        digest = hashlib.sha256(nonce.encode("utf8", "surrogatepass")).hexdigest()
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        with registry.session() as session, session.begin():
            if prune:
                session.execute(delete(UsedNonce).where(UsedNonce.expires_at <= now))
            inserted = session.execute(
                registry._insert()(UsedNonce)
                .values(digest=digest, expires_at=until)
                .on_conflict_do_nothing(index_elements=["digest"])
                .returning(UsedNonce.digest)
            ).first()
            if inserted:
                return True
            # Seen before: allowed again only once its window has passed (then the
            # token is too old to pass anyway); else it is a replay.
            renewed = session.execute(
                update(UsedNonce)
                .where(UsedNonce.digest == digest, UsedNonce.expires_at <= now)
                .values(expires_at=until)
            )
            return renewed.rowcount == 1

    def count(self) -> int:
        """Entries stored, expired or not (tests)."""
        with self.registry.session() as session:
            return session.scalar(select(func.count()).select_from(UsedNonce))
