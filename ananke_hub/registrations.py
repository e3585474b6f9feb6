"""Every LMS registration of the hub: the one in ``30_lms.py`` and those made by pasting a
registration URL (LTI Dynamic Registration 1.0), stored in the course registry's database.

The hub's launch path and Kore's syncs look a registration up by issuer and client id
(:class:`RegistrationBook`, a short cache over the database, read through the registry's
thread pool). The CLI and Kore's admin page change them with the blocking functions of
:class:`RegistrationStore`, which also writes the audit log.

Usernames: the hub's first registration keeps today's names (``username_prefix`` + sub,
``u123``); every further one gets its own short prefix, so Moodle A's user 2 and
Moodle B's user 2 become different hub users. The prefixes of a hub are *prefix-free*
(none is the start of another): with :func:`ananke_hub.usernames.hub_username`, names of
different registrations can then never be equal (see docs/admin/lms.md).
"""

import hashlib
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update
from traitlets import Float, TraitError, Unicode, validate
from traitlets.config import Configurable

from .courses.models import AuditEvent, LTIRegistration, RegistrationTicket, aware, utcnow
from .courses.registry import CourseRegistry
from .registration import LMSRegistration
from .usernames import check_prefix

#: Registration states.
ENABLED = "enabled"
DISABLED = "disabled"
REMOVED = "removed"

#: The id under which the registration of 30_lms.py is listed.
CONFIG_ID = "config"

#: The client id of the shipped 30_lms.py, before an admin fills it in.
PLACEHOLDER = "REPLACE-WITH"

#: How long a registration URL stays valid unless the admin says otherwise.
DEFAULT_TICKET_TTL = 3600


class DynamicRegistration(Configurable):
    """Registration URLs (``ananke lms registration-url``, Kore's LMS page)."""

    url_lifetime = Float(
        DEFAULT_TICKET_TTL,
        config=True,
        help="""Seconds a registration URL stays valid (default one hour). Each URL
        registers one LMS once; an unused one expires after this long.""",
    )

    hub_url = Unicode(
        "",
        config=True,
        help="""The hub's public URL as an LMS reaches it (e.g. `https://jupyter.example.edu`),
        the start of registration URLs. Empty: `c.JupyterHub.public_url`, else
        `c.JupyterHub.bind_url`.""",
    )

    @validate("url_lifetime")
    def _positive(self, proposal):
        if proposal.value <= 0:
            raise TraitError(
                f"DynamicRegistration.url_lifetime must be more than 0 seconds, not {proposal.value}."
            )
        return proposal.value


class RegistrationError(ValueError):
    """A registration change that cannot be made; the message says why and what to do."""


class TicketRefused(RegistrationError):
    """A registration URL that is unknown, expired or already used."""


@dataclass(frozen=True)
class Registration:
    """One platform registration, from the config or from the database."""

    id: str  # CONFIG_ID or the database id as a string
    issuer: str
    client_ids: tuple[str, ...]
    deployment_ids: tuple[str, ...]
    authorize_url: str
    jwks_url: str
    token_url: str = ""
    token_audience: str = ""
    #: The prefix of this registration's usernames (already resolved: never "" for a
    #: database registration other than the hub's first one).
    username_prefix: str = "u"
    state: str = ENABLED
    title: str = ""
    product_family: str = ""
    scopes: tuple[str, ...] = ()
    created_at: datetime | None = None
    created_by: str = ""

    @property
    def source(self) -> str:
        return "from config" if self.id == CONFIG_ID else "dynamic registration"

    @property
    def enabled(self) -> bool:
        return self.state == ENABLED

    def deployment_allowed(self, deployment_id: str) -> bool:
        return not self.deployment_ids or deployment_id in self.deployment_ids

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "issuer": self.issuer,
            "client_ids": list(self.client_ids),
            "deployment_ids": list(self.deployment_ids),
            "token_url": self.token_url,
            "username_prefix": self.username_prefix,
            "state": self.state,
            "title": self.title,
            "product_family": self.product_family,
            "created_at": self.created_at.isoformat() if self.created_at else "",
            "created_by": self.created_by,
        }


def from_config(config_registration: LMSRegistration, username_prefix: str) -> Registration | None:
    """The registration of 30_lms.py, or None if it is not filled in."""
    reg = config_registration
    if not (reg.issuer and reg.client_ids) or any(PLACEHOLDER in c for c in reg.client_ids):
        # Not filled in (the shipped 30_lms.py's placeholder): the hub's first LMS will be
        # one registered by URL, and it keeps today's usernames.
        return None
    return Registration(
        id=CONFIG_ID,
        issuer=reg.issuer,
        client_ids=tuple(reg.client_ids),
        deployment_ids=tuple(reg.deployment_ids),
        authorize_url=reg.authorize_url,
        jwks_url=reg.jwks_url,
        token_url=reg.access_token_url,
        token_audience=reg.token_audience,
        username_prefix=username_prefix,
    )


def _from_row(row: LTIRegistration, hub_prefix: str) -> Registration:
    return Registration(
        id=str(row.id),
        issuer=row.issuer,
        client_ids=(row.client_id,),
        deployment_ids=(row.deployment_id,) if row.deployment_id else (),
        authorize_url=row.authorize_url,
        jwks_url=row.jwks_url,
        token_url=row.token_url,
        username_prefix=row.username_prefix or hub_prefix,
        state=row.state,
        title=row.title,
        product_family=row.product_family,
        scopes=tuple(row.scopes or ()),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def registration_url(hub_url: str, secret: str) -> str:
    """The URL an admin pastes into the LMS (served by ananke_hub/auth/dynreg.py)."""
    return f"{hub_url.rstrip('/')}/hub/lti13/register?{urlencode({'ticket': secret})}"


def ticket_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf8", "surrogatepass")).hexdigest()


def prefixes_clash(a: str, b: str) -> bool:
    """Whether usernames with prefix ``a`` could equal names with prefix ``b``."""
    return a.startswith(b) or b.startswith(a)


@dataclass
class NewRegistration:
    """What a confirmed dynamic registration stores."""

    issuer: str
    client_id: str
    deployment_id: str
    authorize_url: str
    jwks_url: str
    token_url: str
    title: str = ""
    product_family: str = ""
    scopes: list[str] = field(default_factory=list)


class RegistrationStore:
    """Blocking reads and writes of the registrations (run them through
    ``registry.run`` in async code)."""

    def __init__(
        self,
        registry: CourseRegistry,
        config_registration: LMSRegistration | None = None,
        hub_prefix: str = "u",
    ):
        self.registry = registry
        self.config_registration = config_registration
        self.hub_prefix = hub_prefix

    @property
    def config_entry(self) -> Registration | None:
        if self.config_registration is None:
            return None
        return from_config(self.config_registration, self.hub_prefix)

    def entries(self, *, include_removed: bool = False) -> list[Registration]:
        """The config registration first, then the database's in order of creation."""
        with self.registry.session() as db:
            rows = db.scalars(select(LTIRegistration).order_by(LTIRegistration.id)).all()
        out = [r for r in [self.config_entry] if r is not None]
        out += [_from_row(row, self.hub_prefix) for row in rows]
        return [r for r in out if include_removed or r.state != REMOVED]

    def get(self, registration_id: str) -> Registration:
        for reg in self.entries(include_removed=True):
            if reg.id == str(registration_id):
                return reg
        raise RegistrationError(
            f"There is no registration {registration_id!r} on this hub; "
            "`ananke lms list` shows them."
        )

    # --- registration URLs ----------------------------------------------------------

    def create_ticket(self, *, ttl: float, actor: str, username_prefix: str = "") -> str:
        """A new registration URL's secret; only its hash is stored."""
        if ttl <= 0:
            raise RegistrationError("A registration URL must be valid for more than 0 seconds.")
        if username_prefix:
            self.check_new_prefix(username_prefix)
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        with self.registry.session() as db, db.begin():
            db.add(
                RegistrationTicket(
                    digest=ticket_digest(secret),
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                    created_by=actor,
                    username_prefix=username_prefix,
                )
            )
            db.add(
                AuditEvent(
                    actor=actor,
                    action="lms.registration_url",
                    target={"expires_in": int(ttl)},
                    outcome="ok",
                )
            )
        return secret

    def check_ticket(self, secret: str) -> RegistrationTicket:
        """The ticket of ``secret`` if it may still be used; TicketRefused if not."""
        if not secret:
            raise TicketRefused(
                "This address has no registration ticket. Ask the hub's admin for a "
                "registration URL (`ananke lms registration-url` or Kore's LMS page)."
            )
        with self.registry.session() as db:
            ticket = db.get(RegistrationTicket, ticket_digest(secret))
        if ticket is None:
            raise TicketRefused(
                "This registration URL is not one this hub issued. Ask the hub's admin for "
                "a new one."
            )
        if ticket.used_at is not None:
            raise TicketRefused(
                "This registration URL was already used: each URL registers one platform "
                "once. Ask the hub's admin for a new one."
            )
        if aware(ticket.expires_at) <= utcnow():
            raise TicketRefused(
                "This registration URL has expired. Ask the hub's admin for a new one."
            )
        return ticket

    def claim_ticket(self, secret: str) -> RegistrationTicket:
        """Mark the ticket in use, atomically: of two concurrent confirmations one wins."""
        ticket = self.check_ticket(secret)
        with self.registry.session() as db, db.begin():
            claimed = db.execute(
                update(RegistrationTicket)
                .where(
                    RegistrationTicket.digest == ticket.digest,
                    RegistrationTicket.used_at.is_(None),
                )
                .values(used_at=utcnow())
            ).rowcount
        if claimed != 1:
            raise TicketRefused(
                "This registration URL was already used: each URL registers one platform "
                "once. Ask the hub's admin for a new one."
            )
        return ticket

    def release_ticket(self, secret: str) -> None:
        """Give a claimed ticket back after a failed registration, so the admin can retry."""
        with self.registry.session() as db, db.begin():
            db.execute(
                update(RegistrationTicket)
                .where(
                    RegistrationTicket.digest == ticket_digest(secret),
                    RegistrationTicket.registration_id.is_(None),
                )
                .values(used_at=None)
            )

    # --- usernames ------------------------------------------------------------------

    def prefixes_in_use(self) -> list[str]:
        """Effective prefixes of every registration, removed ones included (their users stay)."""
        return [r.username_prefix for r in self.entries(include_removed=True)]

    def check_new_prefix(self, prefix: str) -> str:
        try:
            check_prefix(prefix)
        except ValueError as exc:
            raise RegistrationError(str(exc).replace("AnankeLTI13Authenticator.", "")) from None
        if not prefix:
            raise RegistrationError("A further platform's username prefix cannot be empty.")
        for other in [self.hub_prefix, *self.prefixes_in_use()]:
            if prefixes_clash(prefix, other):
                raise RegistrationError(
                    f"The username prefix {prefix!r} clashes with {other!r}, which this hub "
                    "uses already: names of two platforms could then be equal. Choose a "
                    "prefix that neither starts with it nor is its start."
                )
        return prefix

    def _choose_prefix(self, wanted: str, issuer: str, client_id: str) -> str:
        if not self.entries(include_removed=True):
            if wanted:
                raise RegistrationError(
                    "The hub's first platform keeps the hub's own username prefix "
                    f"({self.hub_prefix!r}); a username prefix applies from the second on."
                )
            return ""  # the hub's first registration keeps today's names
        if wanted:
            return self.check_new_prefix(wanted)
        if not self.hub_prefix:
            raise RegistrationError(
                "A second platform needs a username prefix, and with an empty "
                "AnankeLTI13Authenticator.username_prefix every prefix clashes with the "
                "first platform's names. Set a username_prefix first."
            )
        # Stable: derived from the platform; "p" and two characters, the next free one.
        alphabet = string.ascii_lowercase + string.digits
        start = int(hashlib.sha256(f"{issuer}\0{client_id}".encode()).hexdigest(), 16)
        used = [self.hub_prefix, *self.prefixes_in_use()]
        for step in range(len(alphabet) ** 2):
            n = (start + step) % len(alphabet) ** 2
            candidate = "p" + alphabet[n // len(alphabet)] + alphabet[n % len(alphabet)]
            if not any(prefixes_clash(candidate, other) for other in used):
                return candidate
        raise RegistrationError("No free username prefix is left; choose one yourself.")

    # --- changes --------------------------------------------------------------------

    def add(self, new: NewRegistration, *, secret: str, actor: str) -> Registration:
        """Store a registration the platform confirmed; the ticket becomes used for good."""
        config = self.config_entry
        if (
            config is not None
            and new.issuer == config.issuer
            and new.client_id in config.client_ids
        ):
            raise RegistrationError(
                f"The platform {new.issuer} with client id {new.client_id!r} is registered "
                "in 30_lms.py already."
            )
        digest = ticket_digest(secret)
        with self.registry.session() as db, db.begin():
            ticket = db.get(RegistrationTicket, digest)
            wanted = ticket.username_prefix if ticket is not None else ""
            prefix = self._choose_prefix(wanted, new.issuer, new.client_id)
            existing = db.scalars(
                select(LTIRegistration).where(
                    LTIRegistration.issuer == new.issuer,
                    LTIRegistration.client_id == new.client_id,
                )
            ).first()
            if existing is not None and existing.state != REMOVED:
                raise RegistrationError(
                    f"The platform {new.issuer} with client id {new.client_id!r} is "
                    f"registered already (registration {existing.id})."
                )
            now = utcnow()
            values = dict(
                deployment_id=new.deployment_id,
                authorize_url=new.authorize_url,
                jwks_url=new.jwks_url,
                token_url=new.token_url,
                title=new.title,
                product_family=new.product_family,
                scopes=list(new.scopes),
                state=ENABLED,
                created_at=now,
                created_by=actor,
                updated_at=now,
            )
            if existing is not None:  # registered again after a removal: same users
                for key, value in values.items():
                    setattr(existing, key, value)
                row = existing
            else:
                row = LTIRegistration(
                    issuer=new.issuer, client_id=new.client_id, username_prefix=prefix, **values
                )
                db.add(row)
            db.flush()
            if ticket is not None:
                ticket.registration_id = row.id
                ticket.used_at = ticket.used_at or now
            db.add(
                AuditEvent(
                    actor=actor,
                    action="lms.register",
                    target={
                        "registration": row.id,
                        "issuer": row.issuer,
                        "client_id": row.client_id,
                        "deployment_id": row.deployment_id,
                    },
                    outcome="ok",
                )
            )
        return _from_row(row, self.hub_prefix)

    def set_state(self, registration_id: str, state: str, *, actor: str) -> Registration:
        """Enable, disable or remove a database registration (audit-logged)."""
        if str(registration_id) == CONFIG_ID:
            raise RegistrationError(
                "The registration from config is changed in 30_lms.py "
                "(c.LMSRegistration), not here."
            )
        try:
            key = int(registration_id)
        except (TypeError, ValueError):
            raise RegistrationError(
                f"There is no registration {registration_id!r} on this hub; "
                "`ananke lms list` shows them."
            ) from None
        with self.registry.session() as db, db.begin():
            row = db.get(LTIRegistration, key)
            if row is None or (row.state == REMOVED and state != REMOVED):
                raise RegistrationError(
                    f"There is no registration {registration_id!r} on this hub; "
                    "`ananke lms list` shows them."
                )
            before = row.state
            row.state = state
            row.updated_at = utcnow()
            db.add(
                AuditEvent(
                    actor=actor,
                    action={ENABLED: "lms.enable", DISABLED: "lms.disable"}.get(
                        state, "lms.remove"
                    ),
                    target={"registration": row.id, "issuer": row.issuer, "before": before},
                    outcome="ok",
                )
            )
        return _from_row(row, self.hub_prefix)


class RegistrationBook:
    """The registrations as the launch path and the syncs read them: cached for
    ``max_age`` seconds, refreshed through the registry's thread pool, so a registration
    made or disabled meanwhile counts within seconds and no restart is needed."""

    def __init__(self, store: RegistrationStore, max_age: float = 5.0):
        self.store = store
        self.max_age = max_age
        self._entries: list[Registration] = []
        self._loaded_at = float("-inf")

    async def refresh(self, force: bool = False) -> list[Registration]:
        if force or time.monotonic() - self._loaded_at > self.max_age:
            registry = self.store.registry
            self._entries = await registry.run(lambda: self.store.entries(include_removed=True))
            self._loaded_at = time.monotonic()
        return self._entries

    def cached(self, issuer: str, client_id: str | None = None) -> Registration | None:
        """The registration of ``issuer`` (and ``client_id``) from the last refresh.

        Without a client id: the one registration of that issuer, if there is only one
        that is not removed."""
        if client_id:
            for reg in self._entries:
                if reg.issuer == issuer and client_id in reg.client_ids:
                    return reg
            return None
        matches = [r for r in self._entries if r.issuer == issuer and r.state != REMOVED]
        return matches[0] if len(matches) == 1 else None

    def knows_issuer(self, issuer: str) -> bool:
        """Whether a registration (of the last refresh) has this issuer."""
        return any(r.issuer == issuer for r in self._entries)

    async def find(self, issuer: str, client_id: str | None = None) -> Registration | None:
        await self.refresh()
        found = self.cached(issuer, client_id)
        if (found is None or not found.enabled) and time.monotonic() - self._loaded_at > 0.5:
            # Registered or enabled a moment ago? Read once more before refusing (at
            # most twice a second: anyone may send login requests).
            await self.refresh(force=True)
            found = self.cached(issuer, client_id)
        return found
