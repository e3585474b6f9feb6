"""The hub user name of an LMS user: one rule for launches and for the NRPS roster.

A launch (the authenticator) and a roster sync (Kore, from the LMS's membership list)
must arrive at the same name for the same person, or a student enrolled before their
first launch would become two hub users. Both call :func:`hub_username`.
"""

import hashlib
import re

#: The default prefix: Moodle's user 123 is ``u123`` (``AnankeLTI13Authenticator.username_prefix``).
DEFAULT_PREFIX = "u"

# Names usable as hub user, systemd unit and dynamic user name (systemd.exec(5) User=):
# a letter first, then letters, digits, "_" or "-", at most 31 characters.
SAFE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")


def hub_username(value: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``prefix`` + the LMS user id, lower case; prefix + a hash when that is no safe name."""
    name = (prefix + value).lower()
    if SAFE_NAME.match(name):
        return name
    digest = hashlib.sha256(value.encode("utf8")).hexdigest()
    return (prefix + digest)[:31].lower()
