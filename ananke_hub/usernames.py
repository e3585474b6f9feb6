"""The hub user name of an LMS user: one rule for launches and for the NRPS roster.

A launch (the authenticator) and a roster sync (Kore, from the LMS's membership list)
must arrive at the same name for the same person, or a student enrolled before their
first launch would become two hub users. Both use :class:`UsernameRule`, resolved from
the authenticator's own settings (:meth:`UsernameRule.from_config`).

The encoding (``prefix`` is ``AnankeLTI13Authenticator.username_prefix``, ``u`` by default)
maps distinct LMS user ids to distinct names; an OIDC ``sub`` is case-sensitive, and
JupyterHub lower-cases names, so upper case is escaped, never lowered:

1. **Plain**: ``prefix + id`` when that is already a safe name (a lower-case letter
   first, then ``a-z``, ``0-9``, ``_``, ``-``; at most 31 characters). Moodle's user 123
   is ``u123``. Two exceptions go to rule 3: a name shaped like a hashed one (the prefix
   and only hex digits up to 31 characters) and a name of the hub's grader accounts
   (``grader-...``, possible with an empty prefix).
2. **Escaped**: an id of ASCII letters, digits, ``_`` and ``-`` with upper case letters,
   whose lower-cased form would be plain: ``_`` + prefix + the id with each upper case
   letter written as ``_`` and the letter in lower case and each ``_`` doubled.
   ``CaseX`` is ``_u_case_x``, ``a_B`` is ``_ua___b``. These names alone start with ``_``.
3. **Hashed**: anything else (other characters, too long, or an escaped name over 31
   characters): the prefix (``x`` for an empty prefix) and the first hex digits of the
   SHA-256 of the id, 31 characters in all: ``u3f9a...``.

The three forms cannot meet: only escaped names start with ``_``, plain names are never
shaped like hashed ones, and escaping is decodable. Two ids share a name only if their
SHA-256 hashes share their first 120 bits (with the default prefix). Rules 1 and 3 are
the rules of earlier releases, so existing users keep their names, except ids with
upper case letters that earlier releases lowered (they collided with their lower-case
twins) and the rare ids shaped like a hash.

Every name is a valid systemd user name for ``User=`` with ``DynamicUser=`` (systemd's
strict rule: a letter or ``_`` first, then letters, digits, ``_``, ``-``; at most 31
characters; https://systemd.io/USER_NAMES/), is lower case (JupyterHub lower-cases
names) and is usable in URLs and unit names.
"""

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .courses.layout import GRADER_PREFIX

#: The default prefix: Moodle's user 123 is ``u123`` (``AnankeLTI13Authenticator.username_prefix``).
DEFAULT_PREFIX = "u"

#: systemd's strict limit for user names (UT_NAMESIZE - 1).
MAX_LENGTH = 31

#: A prefix must leave room for a hash that two ids do not share by chance.
MAX_PREFIX_LENGTH = 8

#: What an admin may choose as username_prefix: empty, or a safe start of a name.
VALID_PREFIX = re.compile(rf"^([a-z][a-z0-9_-]{{0,{MAX_PREFIX_LENGTH - 1}}})?$")

# Names usable as hub user, systemd unit and dynamic user name (systemd.exec(5) User=):
# a letter first, then letters, digits, "_" or "-", at most 31 characters.
SAFE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")

# An id that may be escaped (rule 2): ASCII letters, digits, "_", "-".
_ESCAPABLE = re.compile(r"^[A-Za-z0-9_-]+$")

# The lead of hashed names when the prefix is empty: a name must start with a letter.
_HASH_LEAD_WITHOUT_PREFIX = "x"


def _hash_lead(prefix: str) -> str:
    return prefix or _HASH_LEAD_WITHOUT_PREFIX


def _hashed(value: str, prefix: str) -> str:
    lead = _hash_lead(prefix)
    digest = hashlib.sha256(value.encode("utf8", "surrogatepass")).hexdigest()
    return lead + digest[: MAX_LENGTH - len(lead)]


def _looks_hashed(name: str, prefix: str) -> bool:
    lead = _hash_lead(prefix)
    rest = name[len(lead) :]
    return (
        name.startswith(lead)
        and len(name) == MAX_LENGTH
        and all(ch in "0123456789abcdef" for ch in rest)
    )


def _escape(value: str) -> str:
    """Upper case letters as ``_`` + the lower case letter, ``_`` as ``__``."""
    out = []
    for ch in value:
        if "A" <= ch <= "Z":
            out.append("_" + ch.lower())
        elif ch == "_":
            out.append("__")
        else:
            out.append(ch)
    return "".join(out)


def check_prefix(prefix: str) -> str:
    """``prefix`` if it keeps the encoding injective and names valid; ValueError if not."""
    if isinstance(prefix, str) and prefix.startswith(GRADER_PREFIX):
        raise ValueError(
            f"AnankeLTI13Authenticator.username_prefix {prefix!r} is not usable: names "
            f"starting with {GRADER_PREFIX!r} belong to the courses' grader accounts."
        )
    if not isinstance(prefix, str) or not VALID_PREFIX.match(prefix):
        raise ValueError(
            f"AnankeLTI13Authenticator.username_prefix {prefix!r} is not usable: use at most "
            f"{MAX_PREFIX_LENGTH} characters, a lower-case letter first, then lower-case "
            'letters, digits, "_" or "-" (or an empty prefix).'
        )
    return prefix


def hub_username(value: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The hub user name of LMS user id ``value`` (see the module's docstring)."""
    value = str(value)
    plain = prefix + value
    if (
        value.isascii()
        and SAFE_NAME.match(plain)
        and not _looks_hashed(plain, prefix)
        and not plain.startswith(GRADER_PREFIX)
    ):
        return plain
    if value.isascii() and _ESCAPABLE.match(value) and SAFE_NAME.match(prefix + value.lower()):
        escaped = "_" + prefix + _escape(value)
        if len(escaped) <= MAX_LENGTH:
            return escaped
    return _hashed(value, prefix)


_quiet = logging.getLogger(__name__ + ".rule")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(frozen=True)
class UsernameRule:
    """How the hub names LMS users, from the authenticator's settings.

    ``prefix`` and ``key`` are ``username_prefix`` and ``username_key``; ``username_map``
    is JupyterHub's ``Authenticator.username_map``, which the hub applies to every name.
    """

    prefix: str = DEFAULT_PREFIX
    #: The launch claim the name comes from. Only ``sub`` is in the roster (``user_id``).
    key: str = "sub"
    username_map: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config) -> "UsernameRule":
        """The rule of an ``AnankeLTI13Authenticator`` made with ``config``.

        The authenticator itself reads the config, so every section it honours applies
        (``c.AnankeLTI13Authenticator``, ``c.LTI13Authenticator``, ``c.Authenticator``),
        the same way in the hub and in Kore.
        """
        from .auth.authenticator import AnankeLTI13Authenticator

        # A quiet logger: the authenticator's start-up warnings are the hub's to give.
        return AnankeLTI13Authenticator(config=config, log=_quiet).username_rule

    def for_prefix(self, prefix: str) -> "UsernameRule":
        """The rule of one registration: the same, with that platform's own prefix (the
        hub's first platform keeps ``username_prefix``; see ananke_hub/registrations.py)."""
        return replace(self, prefix=prefix)

    def username(self, user_id: str) -> str | None:
        """The hub name of LMS user ``user_id`` (the ``sub``); None if the name comes
        from another launch claim, which a roster does not carry."""
        if self.key != "sub":
            return None
        return self.normalize(hub_username(user_id, self.prefix))

    def normalize(self, name: str) -> str:
        # What JupyterHub's Authenticator.normalize_username does after every login.
        name = name.lower()
        return self.username_map.get(name, name)
