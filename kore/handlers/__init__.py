"""Kore's routes: each module of this package lists its handlers relative to the prefix.

Runs in Kore's event loop: handlers import Kore's services (:mod:`kore.manage`,
:mod:`kore.sync`) and never do blocking work themselves.
"""

import re

from tornado.web import RedirectHandler

from . import (
    courses,
    deeplink,
    grades,
    home,
    identity,
    jwks,
    lms,
    manage,
    oauth,
    roster,
    settings,
    ui,
)


def routes(prefix: str) -> list[tuple]:
    """The URL table of Kore served under ``prefix`` (``/services/kore/``)."""
    # Route patterns are regular expressions: the prefix is literal text.
    table = [(re.escape(prefix.rstrip("/")), RedirectHandler, {"url": prefix})]
    for module in (
        jwks, oauth, identity, courses, settings, grades, roster, manage, lms, ui, deeplink, home
    ):
        for path, handler, *kwargs in module.handlers:
            table.append((re.escape(prefix) + path, handler, *kwargs))
    return table
