"""Used nonces, so a captured launch cannot be replayed; in the hub's memory, no write.

ltiauthenticator ties the nonce to a cookie that is cleared when read; a second POST of
the same id_token with the same cookies would pass that check. So the hub remembers
every used nonce for the token's acceptance window (``max_age`` + leeway, after which
the token is refused as too old anyway).

Why memory is enough, across restarts too: the nonce is made by this hub, at the login
initiation (the LMS signs it into the id_token), from a state kept in the browser's
encrypted nonce cookie and checked against the token by ``check_nonce``. That state
starts with the *epoch* of the hub process that made it, a random value chosen at the
process's start. A nonce of this process's epoch did not exist before the process
started, so no earlier process can have accepted it: this process's memory has seen
every use of it. A nonce of another epoch (a login initiated before a hub restart,
completed after it) is refused with a message to launch again: it may have been used
by the earlier process, whose memory is gone. Nothing is written to a database at a
launch, nothing is lost by a crash, and the check costs no thread-pool trip.
"""

import secrets
import time

from ltiauthenticator.lti13.handlers import make_nonce_state

#: Separates the epoch from the random part of a nonce state.
EPOCH_SEPARATOR = "."


class NonceFromEarlierProcess(Exception):
    """The launch's login was initiated by an earlier hub process (before a restart)."""


class NonceRegistry:
    """Nonces used in this hub process, each kept ``ttl`` seconds after its use."""

    def __init__(self, ttl: float, clock=time.monotonic):
        self.ttl = ttl
        self._clock = clock
        #: This process's epoch; in every nonce state it makes.
        self.epoch = secrets.token_hex(16)
        #: nonce -> monotonic time its entry expires. One ttl for all and a monotonic
        #: clock: insertion order is expiry order, so pruning pops from the front.
        self._used: dict[str, float] = {}

    def new_state(self) -> str:
        """A nonce state for a login initiation (the nonce is its SHA-256)."""
        return f"{self.epoch}{EPOCH_SEPARATOR}{make_nonce_state()}"

    def made_here(self, nonce_state: str) -> bool:
        """Whether ``nonce_state`` was made by this process (see the module docstring)."""
        epoch, sep, _ = nonce_state.partition(EPOCH_SEPARATOR)
        return bool(sep) and secrets.compare_digest(epoch, self.epoch)

    def use(self, nonce: str, nonce_state: str) -> bool:
        """Record ``nonce``; False if it was used before (a replay).

        ``nonce_state`` is the state the nonce was checked against (``check_nonce``).
        Raises NonceFromEarlierProcess for a state another hub process made.
        """
        if not self.made_here(nonce_state):
            raise NonceFromEarlierProcess()
        now = self._clock()
        self._prune(now)
        if nonce in self._used:
            return False
        self._used[nonce] = now + self.ttl
        return True

    def _prune(self, now: float) -> None:
        used = self._used
        while used:
            nonce, expires = next(iter(used.items()))
            if expires > now:
                return
            del used[nonce]

    def __len__(self) -> int:
        """Entries kept (tests)."""
        return len(self._used)
