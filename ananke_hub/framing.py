"""LTI launches inside the LMS's frames, without third-party cookies.

An LMS shows a tool in an iframe of its own page: Moodle always opens "Select content"
(Deep Linking) in a modal with an iframe (``mod/lti/amd/src/contentitem.js``), and its
"Embed" launch container puts activities in one. Inside a cross-site iframe the hub's
cookies are third-party cookies: Chrome does not set its default (Lax) cookies there,
Safari and Firefox block or partition them. ltiauthenticator keeps the OIDC login's
``state`` and nonce in cookies, and JupyterLab needs the hub's login cookie, so neither
works in a frame. What the hub does instead:

- **Content selection** (the login initiation's ``target_link_uri`` is the hub's
  select-content URL, :func:`select_content_url`, registered as the
  ``LtiDeepLinkingRequest``'s ``target_link_uri``): the OIDC login runs in the frame with
  its state carried without cookies: :class:`FramedState`, signed with the hub's cookie
  secret, expiring, and naming the nonce the id_token must carry (the nonce is single
  use through the registry's used nonces). The callback then sets no login cookie; it
  hands the validated request to Kore's picker as a single-use ticket
  (``courses/deeplink.py``) posted in a form body.
- **Any other launch in a frame** (``Sec-Fetch-Dest: iframe``): the hub does not start
  the login in the frame; it shows a page whose button repeats the same login initiation
  in a new top-level window, where the hub's cookies are first-party. The LMS has not
  used its one-time launch hint yet (Moodle's ``lti_message_hint``), so no second click
  in the LMS is needed.
- **A browser that does not say** (no ``Sec-Fetch-Dest``: Safari before 16.4, and every
  browser towards an ``http`` origin that is not loopback): a content selection takes
  the framed path above, which works in a top-level window too; any other launch gets a
  page that asks the browser itself (``window.top``): in a top-level window it repeats
  the login initiation at once with :data:`WINDOW_FIELD` set to "top" (the usual
  cookie-based login), in a frame it offers the new window. A top-level launch works
  (one more automatic hop), a framed one does not break on cookies the frame cannot keep.
- These routes (login initiation, callback) and Kore's picker may be framed by the
  registered platforms' origins only (``Content-Security-Policy: frame-ancestors``);
  every other hub and Kore page keeps refusing frames.

Spec: IMS Security Framework 1.0 section 5.1.1 (the login's ``state``); browsers send
``Sec-Fetch-Dest`` (Fetch Metadata) since Chrome 80, Firefox 90 and Safari 16.4.
"""

import json
import time
from urllib.parse import parse_qs, urlsplit

from tornado.web import decode_signed_value

#: The query parameter that marks the select-content target_link_uri.
SELECT_CONTENT_PARAMETER = "ananke_lti"
SELECT_CONTENT_VALUE = "select-content"
#: Seconds between the framed login's initiation and its callback (the LMS answers at
#: once; Moodle's id_tokens live 60 s).
FRAMED_STATE_LIFETIME = 300
#: Name the framed state is signed under (tornado's signed values bind a name).
_STATE_NAME = "ananke-lti-framed-state"
#: Fetch Metadata destinations of a document loaded in a frame.
FRAME_DESTINATIONS = frozenset({"iframe", "frame"})
#: The login initiation's field with which the hub's own pages repeat it from a window
#: known to be top-level (the browser's check, or the new window a frame opened).
WINDOW_FIELD = "ananke_window"
TOP_LEVEL = "top"


def select_content_url(hub_target: str) -> str:
    """The ``target_link_uri`` of content selections, from the hub's ``<hub>/hub/``."""
    return f"{hub_target}?{SELECT_CONTENT_PARAMETER}={SELECT_CONTENT_VALUE}"


def is_select_content(target_link_uri: str) -> bool:
    query = parse_qs(urlsplit(target_link_uri or "").query)
    return query.get(SELECT_CONTENT_PARAMETER) == [SELECT_CONTENT_VALUE]


def frame_status(request, args: dict) -> bool | None:
    """Whether the browser loads this login initiation as a frame's document: True,
    False, or None when it does not say.

    Fetch Metadata's ``Sec-Fetch-Dest`` decides when it is there. Without it, a repeated
    initiation from one of the hub's own pages (:data:`WINDOW_FIELD`) is top-level. That
    field is believed only without the header: a forged one can only send its own login
    through cookies that a frame may not keep."""
    dest = request.headers.get("Sec-Fetch-Dest", "").strip().lower()
    if dest:
        return dest in FRAME_DESTINATIONS
    if args.get(WINDOW_FIELD) == TOP_LEVEL:
        return False
    return None


def origin_of(url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}"


def registration_origins(registration) -> list[str]:
    """Where a registration's LMS pages come from: its issuer's and login's origins."""
    found = (origin_of(registration.issuer), origin_of(registration.authorize_url))
    return sorted({o for o in found if o})


def frame_ancestors(origins) -> str:
    """The CSP header value: the hub itself and these origins may frame the page."""
    return " ".join(["frame-ancestors 'self'", *sorted(set(origins))])


async def enabled_platform_origins(book) -> list[str]:
    """The origins of every enabled registration (30_lms.py's and the database's)."""
    entries = await book.refresh()
    origins = set()
    for reg in entries:
        if reg.enabled:
            origins.update(registration_origins(reg))
    return sorted(origins)


class FramedState:
    """The OIDC ``state`` of a login in a frame: signed, expiring, naming the nonce state.

    The nonce is the nonce state's hash, as in a cookie-based login; the nonce state
    names the hub process that made it (``auth/replay.py``), so the callback's in-memory
    record of used nonces also makes a framed login single use."""

    def __init__(self, secret):
        self.secret = secret

    def create(self, handler, nonce_state: str) -> str:
        payload = json.dumps(
            {"nonce_state": nonce_state, "exp": int(time.time()) + FRAMED_STATE_LIFETIME}
        )
        return handler.create_signed_value(_STATE_NAME, payload).decode()

    def nonce_state_of(self, state: str) -> str | None:
        """The nonce state a valid, unexpired framed state names; None for anything else
        (a cookie-based state, a tampered or expired one)."""
        if not state or not state.startswith("2|"):
            return None
        raw = decode_signed_value(self.secret, _STATE_NAME, state, max_age_days=1)
        if raw is None:
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("nonce_state"), str):
            return None
        if not isinstance(payload.get("exp"), int) or payload["exp"] < time.time():
            return None
        return payload["nonce_state"]
