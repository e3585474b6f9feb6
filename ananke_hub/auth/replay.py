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
import logging
import time
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from ..courses.models import UsedNonce, utcnow
from ..courses.registry import CourseRegistry

log = logging.getLogger(__name__)

#: ``use_then``'s result when the read was not made.
NOT_READ = object()


class NonceRegistry:
    def __init__(self, registry: CourseRegistry, ttl: float, prune_every: float = 60):
        self.registry = registry
        self.ttl = ttl
        self.prune_every = prune_every
        self._next_prune = float("-inf")

    async def use(self, nonce: str) -> bool:
        """Record ``nonce``; False if it was already used within the window."""
        fresh, _ = await self.use_then(nonce, None)
        return fresh

    async def use_then(self, nonce: str, then, *args) -> tuple[bool, object]:
        """Record ``nonce``, then, if it was fresh, call ``then(*args)`` in the same
        thread-pool call: the launch's registry read rides along with the nonce's write
        instead of a second round trip through the pool. Returns ``(fresh, result)``;
        the result is ``NOT_READ`` when ``then`` was not called or failed (the caller
        reads again itself, so a failed read never fails the nonce check)."""
        prune = time.monotonic() >= self._next_prune
        if prune:
            self._next_prune = time.monotonic() + self.prune_every
        return await self.registry.run(self._use_then_blocking, nonce, prune, then, args)

    def _use_then_blocking(self, nonce, prune, then, args) -> tuple[bool, object]:
        fresh = self.use_blocking(nonce, prune)
        if not fresh or then is None:
            return fresh, NOT_READ
        try:
            return fresh, then(*args)
        except Exception:
            log.exception("lti: reading the launch's registry rows with its nonce failed")
            return fresh, NOT_READ

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
