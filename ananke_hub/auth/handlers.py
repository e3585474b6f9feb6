"""The two LTI 1.3 login handlers, hardened.

They keep ltiauthenticator's routes and cookies and change what is checked:
- login initiation: `iss` and `client_id` (or the only one registered for that issuer,
  when the platform omits it) must name an enabled registration, 30_lms.py's or one in
  the database (registrations.py), and a sent `lti_deployment_id` must be allowed;
- callback: the registration named by the token's `iss` and `aud`; the signature is
  checked against that platform's keyset fetched without blocking the hub (see
  platform_keys.py), the deployment id against the registration, and the nonce against
  the cookie and against the nonces this hub process has seen (replay.py: in memory;
  a nonce made before a hub restart is refused).

Both may run in a frame of the LMS's page (``framing.py``): their answers may be framed
by the registered platforms' origins; a resource link launch in a frame gets a page that
continues in a new window; a content selection in a frame logs in with a state that
needs no cookie and goes on to Kore's picker with a single-use ticket. When the browser
does not say whether it is in a frame, a page asks it (``check_window.html``).
Under https, the state and nonce cookies are ``SameSite=None; Secure``: the LMS posts
the id_token to the callback from its own site.

Every refusal is an HTTPError with a message for the person (JupyterHub renders it)
that tornado logs as one line; nothing is written for a refused launch.

Both routes take form posts from anyone, without a cookie. Their bodies are streamed
(``@stream_request_body``) so that an oversized one is refused with 413 from its
headers, before tornado reads or buffers it (an LTI form post is a few KB); and an
id_token over its own limit is refused before it is decoded.
"""

import time
import weakref
from http import HTTPStatus
from pathlib import Path

import jinja2
import jwt
from jupyterhub import orm
from jupyterhub.metrics import TOTAL_USERS
from jupyterhub.utils import maybe_future
from ltiauthenticator.lti13.error import (
    InvalidAudienceError,
    LoginError,
    TokenError,
    ValidationError,
)
from ltiauthenticator.lti13.handlers import (
    NONCE_STATE_COOKIE_NAME,
    STATE_COOKIE_NAME,
    LTI13CallbackHandler,
    LTI13LoginInitHandler,
    get_nonce,
)
from ltiauthenticator.lti13.validator import LTI13LaunchValidator
from ltiauthenticator.utils import convert_request_to_dict
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import lazyload
from tornado import httputil
from tornado.httputil import url_concat
from tornado.web import HTTPError, stream_request_body

from ..courses.deeplink import (
    DeepLinkingSettings,
    check_deep_linking_request,
    is_deep_linking_request,
)
from ..courses.identity import LaunchError
from ..framing import (
    TOP_LEVEL,
    WINDOW_FIELD,
    FramedState,
    enabled_platform_origins,
    frame_ancestors,
    frame_status,
    is_select_content,
)
from .platform_keys import PlatformKeysUnavailable, UnknownSigningKey
from .replay import NonceFromEarlierProcess

# Claims an id_token must carry, on top of the LTI claims ltiauthenticator checks
# (OIDC Core 2, IMS Security Framework 5.1.3).
REQUIRED_JWT_CLAIMS = ["exp", "iat", "iss", "aud", "nonce", "sub"]


_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)
#: The login initiation's parameters a new window repeats (Security Framework 5.1.1.1).
INITIATION_FIELDS = (
    "iss",
    "login_hint",
    "target_link_uri",
    "client_id",
    "lti_deployment_id",
    "lti_message_hint",
)


class LaunchRefused(ValidationError):
    """A launch that is well-formed but not allowed by the registration."""


class BoundedFormBody:
    """A form body of at most ``c.AnankeLTI13Authenticator.max_request_body`` bytes.

    For handlers decorated with ``@stream_request_body``: ``prepare`` runs when the
    headers are in and refuses a declared length over the limit with 413 before any of
    the body is read; a chunked body is cut off by tornado at the same limit.
    ``read_form`` then parses what arrived, as tornado does for other handlers.
    """

    #: Origins that may frame this route's answers (the registered platforms').
    _frame_origins: list[str] | None = None

    def set_default_headers(self):
        super().set_default_headers()
        if self._frame_origins is not None:
            # Also for error pages: tornado's send_error resets headers through here.
            self.set_header("Content-Security-Policy", frame_ancestors(self._frame_origins))

    def render_page(self, template: str, **ns) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(_TEMPLATES.get_template(template).render(**ns))

    async def prepare(self):
        try:
            self._frame_origins = await enabled_platform_origins(self.authenticator.registrations)
        except SQLAlchemyError:
            self.log.exception("lti: cannot read the registrations for framing")
            self._frame_origins = None  # frames refused, as on every other page
        self.set_default_headers()
        limit = self.authenticator.max_request_body
        self._form_body = bytearray()
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            raise HTTPError(
                413,
                f"This request is larger than the {limit} bytes an LTI launch may have.",
            )
        # Without a Content-Length (chunked), tornado stops reading past the limit.
        self.request.connection.set_max_body_size(limit)
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if len(self._form_body) + len(chunk) <= self.authenticator.max_request_body:
            self._form_body.extend(chunk)

    def read_form(self) -> None:
        """Parse the streamed body into ``request.arguments`` (query and form)."""
        request = self.request
        request.body = bytes(self._form_body)
        try:
            httputil.parse_body_arguments(
                request.headers.get("Content-Type", ""),
                request.body,
                request.body_arguments,
                request.files,
                request.headers,
            )
        except httputil.HTTPInputError as exc:
            raise HTTPError(400, f"The form of this request cannot be read: {exc}") from None
        for name, values in request.body_arguments.items():
            request.arguments.setdefault(name, []).extend(values)


@stream_request_body
class AnankeLoginInitHandler(BoundedFormBody, LTI13LoginInitHandler):
    """Third-party initiated login (IMS Security Framework 5.1.1)."""

    async def post(self):
        self.read_form()
        args = convert_request_to_dict(self.request.arguments)
        if "iss" not in args and "login_hint" not in args:
            raise HTTPError(
                400,
                "This hub is opened from your learning platform: start from the Jupyter "
                "activity in your course.",
            )
        try:
            LTI13LaunchValidator(parent=self.app).validate_login_request(args)
            registration, client_id = await self.authenticator.registration_of_login(args)
        except ValidationError as exc:
            raise HTTPError(400, f"LTI login refused: {exc}") from None
        framed = frame_status(self.request, args)
        select_content = is_select_content(args.get("target_link_uri", ""))
        # The same login, repeated by the pages below from a top-level window (the LMS's
        # one-time hint is still unused).
        repeat = {k: args[k] for k in INITIATION_FIELDS if args.get(k)}
        repeat[WINDOW_FIELD] = TOP_LEVEL
        if framed is None and not select_content:
            # The browser did not say where it loads this (no Sec-Fetch-Dest: Safari
            # before 16.4, an http origin): its own check decides. A top-level window
            # goes on at once; a frame offers the new window below.
            self.log.info("lti: launch from %s, frame or window unknown: asking", args["iss"])
            self.render_page("check_window.html", action=self.request.path, fields=repeat)
            return
        if framed and not select_content:
            # A lab cannot keep its cookies in the LMS's frame: the same login goes on
            # in a new top-level window.
            self.log.info("lti: launch from %s in a frame: offering a new window", args["iss"])
            self.render_page("open_in_window.html", action=self.request.path, fields=repeat)
            return
        if select_content and framed is not False:
            # Content selection in the LMS's frame, or maybe in one: the state names the
            # nonce and is signed; no cookie (it would be a third-party one). This path
            # works in a top-level window too.
            nonce_state = self.authenticator.nonces.new_state()
            nonce = get_nonce(nonce_state)
            state = FramedState(self.settings["cookie_secret"]).create(self, nonce_state)
        else:
            nonce = self.generate_nonce()
            state = self.generate_state()
        # Upstream's authorize_redirect, at the authorization URL of this launch's own
        # registration (IMS Security Framework 5.1.1.2) rather than the one configured.
        query = {
            "response_type": "id_token",
            "scope": "openid",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": client_id,
            "redirect_uri": self.get_redirect_uri(),
            "login_hint": args["login_hint"],
            "nonce": nonce,
            "state": state,
        }
        if args.get("lti_message_hint"):
            query["lti_message_hint"] = args["lti_message_hint"]
        self.redirect(url_concat(registration.authorize_url, query))

    get = post

    def generate_nonce(self) -> str:
        # Upstream's, with a state that names this hub process (replay.py): the
        # callback then knows that no earlier process can have used the nonce.
        nonce_state = self.authenticator.nonces.new_state()
        self.set_nonce_state_cookie(nonce_state)
        return get_nonce(nonce_state)

    # The state and nonce cookies are read by the callback, which the LMS reaches with a
    # form it auto-posts from its own site (Moodle's mod/lti/auth.php posts id_token and
    # state to the redirection URI): a cross-site top-level POST. Browsers send a cookie
    # on it only if it says SameSite=None, which they accept only with Secure (Chrome 80+,
    # Firefox, Safari); a cookie without SameSite counts as Lax, and Chrome lets it
    # through such a POST only in its first 2 minutes, a stopgap it may drop. Upstream
    # sets no SameSite; JupyterHub's other cookies are not needed across that POST.
    def set_state_cookie(self, state: str) -> None:
        self._set_login_cookie(STATE_COOKIE_NAME, state)

    def set_nonce_state_cookie(self, nonce_state: str) -> None:
        self._set_login_cookie(NONCE_STATE_COOKIE_NAME, nonce_state)

    def _set_login_cookie(self, name: str, value: str) -> None:
        # As upstream's (encrypted, HttpOnly, one day; c.JupyterHub.cookie_options
        # apply), plus cross_site_cookie_options().
        self._set_cookie(
            name,
            value,
            expires_days=1,
            httponly=True,
            encrypted=True,
            **self.cross_site_cookie_options(),
        )

    def cross_site_cookie_options(self) -> dict:
        """``SameSite=None; Secure`` when the LMS posts back to an https redirection
        URI (the scheme of ``redirect_uri``: ``c.AnankeLTI13Authenticator.uri_scheme``, or
        with "auto" the forwarded protocol), else nothing. Under plain http (the demo
        on 127.0.0.1, a test hub) a Secure cookie would never come back and SameSite=None
        without Secure is refused by browsers, so the cookies stay as upstream makes
        them: the demo's LMS and hub are the same site (ports do not count), where a
        Lax cookie goes along; a cross-site LMS over plain http leans on Chrome's
        2-minute exception and is not supported (serve the hub over https)."""
        if self.authenticator.get_uri_scheme(self.request) != "https":
            return {}
        return {"secure": True, "samesite": "None"}


def find_hub_user(db, users, name: str):
    """JupyterHub's ``BaseHandler.find_user`` (the ``User`` of ``name``, or None) without
    loading again what the hub's database session already holds.

    JupyterHub's query loads a user's roles, shares and groups, and each group's roles and
    shares, with ``selectin`` loaders, and SQLAlchemy runs those five queries again for a
    user the session holds already (every returning launch). Here one query finds the id,
    and the session's identity map gives the user (``Session.get``: no query when it holds
    it, else JupyterHub's own loading). The same objects, loaded the same way; nothing is
    kept that the session would not keep.
    """
    user_id = db.execute(select(orm.User.id).where(orm.User.name == name)).scalar()
    if user_id is None:
        return None
    return users[db.get(orm.User, user_id)]  # UserDict: the User of an orm.User


#: (model, name) -> id of hub groups and roles a launch has found, per hub database
#: (engine): the next launch takes the object from the hub session's identity map
#: (``Session.get``: no query while the session holds it, as it does a group while any
#: user in memory is a member, and a role while any user holds it).
_KNOWN_IDS: "weakref.WeakKeyDictionary[object, dict[tuple, int]]" = weakref.WeakKeyDictionary()


def _known(db, model, name: str):
    """The ``model`` (Group, Role) called ``name`` a launch found before, from the
    session, without its own relationships; None if not found before, or deleted or
    renamed since."""
    ident = _KNOWN_IDS.get(db.get_bind(), {}).get((model, name))
    found = None if ident is None else db.get(model, ident, options=[lazyload("*")])
    return found if found is not None and found.name == name else None


def _remember(db, found) -> None:
    _KNOWN_IDS.setdefault(db.get_bind(), {})[(type(found), found.name)] = found.id


def find_groups(db, names: set[str]) -> list:
    """The hub groups of ``names`` that exist, without their roles and shares (see
    stage_groups)."""
    found = [group for name in names if (group := _known(db, orm.Group, name)) is not None]
    missing = names - {group.name for group in found}
    if missing:
        # The groups' own roles and shares (``selectin`` in JupyterHub's model: two more
        # queries each time) are not needed for a membership: loaded when something
        # reads them (``lazyload``, SQLAlchemy's default), in the same session, as for
        # any relationship JupyterHub leaves at its default.
        queried = (
            db.query(orm.Group).options(lazyload("*")).filter(orm.Group.name.in_(missing)).all()
        )
        for group in queried:
            _remember(db, group)
        found.extend(queried)
    return found


def new_orm_user(db, name: str):
    """A new hub user as JupyterHub's ``user_from_username`` makes one, with its default
    server's row, in the session, for ONE commit (the caller's).

    JupyterHub makes it in two: the user with its default roles (``assign_default_roles``
    commits, after two role queries), then the default spawner's row (``User.__init__``).
    The same rows: the user, its ``user`` role (an account made here is never an admin:
    the login's ``auth_to_user`` grants ``admin`` from ``admin_users`` as for any user),
    and the spawner named "". ``tests/test_upstream_internals.py`` compares them with
    what the installed JupyterHub makes.
    """
    role = _known(db, orm.Role, "user")
    if role is None:
        role = orm.Role.find(db, "user")  # made by JupyterHub at every start
        _remember(db, role)
    orm_user = orm.User(name=name, roles=[role], groups=[])
    db.add(orm_user)
    db.add(orm.Spawner(name="", display_name="", user=orm_user))
    TOTAL_USERS.inc()
    return orm_user


def stage_groups(db, user, group_names: list[str]) -> None:
    """JupyterHub's ``User.sync_groups`` without its commit: ``user``'s groups become
    ``group_names`` (missing groups created) in the hub's database session, for the
    login's next commit (``auth_to_user`` always commits the auth_state)."""
    current = {g.name for g in user.orm_user.groups}
    wanted = set(group_names)
    if current == wanted:
        return
    groups = find_groups(db, wanted) if wanted else []
    for name in wanted - {g.name for g in groups}:
        group = orm.Group(name=name)
        db.add(group)
        groups.append(group)
    user.orm_user.groups = groups
    user.log.info(
        "user:%s groups: added %s, removed %s",
        user.name,
        ", ".join(sorted(wanted - current)) or "none",
        ", ".join(sorted(current - wanted)) or "none",
    )


@stream_request_body
class AnankeCallbackHandler(BoundedFormBody, LTI13CallbackHandler):
    """Authentication response: validate the id_token, log the user in (IMS SF 5.1.3)."""

    #: The nonce state a framed login's signed state names (None: a cookie-based login).
    _framed_nonce_state: str | None = None

    @property
    def _framed_nonce(self) -> str | None:
        """The nonce a framed login's id_token must carry (None: a cookie-based login)."""
        state = self._framed_nonce_state
        return None if state is None else get_nonce(state)

    async def post(self):
        self.read_form()
        try:
            id_token = await self.validate_launch()
        except InvalidAudienceError as exc:
            raise HTTPError(401, f"LTI launch refused: {exc}") from None
        except PlatformKeysUnavailable as exc:
            # The LMS, not the request, is at fault: 424 Failed Dependency.
            raise HTTPError(HTTPStatus.FAILED_DEPENDENCY, f"LTI launch failed: {exc}") from None
        except ValidationError as exc:
            raise HTTPError(400, f"LTI launch refused: {exc}") from None
        if self._framed_nonce is not None and self._deep_linking is None:
            # Only a content selection is started in a frame (see the login initiation).
            raise HTTPError(
                400,
                "LTI launch refused: this login was started for a content selection, but "
                "the LMS sent another kind of launch. Open the activity again.",
            )
        try:
            if self._framed_nonce is not None:
                # No login cookie from a frame's login (its state is no cookie either):
                # the user exists on the hub, the picker's ticket is the only credential.
                authenticated = await self.authenticate(id_token)
                user = await self.auth_to_user(authenticated) if authenticated else None
            else:
                user = await self.login_user(id_token)
        except LoginError as exc:
            raise HTTPError(400, f"LTI launch refused: {exc}") from None
        if user is None:
            raise HTTPError(403, "You are not allowed on this hub. Ask its administrators.")
        if self._deep_linking is not None:
            # Content selection: the instructor chooses on Kore's picker page, which
            # answers the LMS with Kore's signing key (see courses/deeplink.py). The
            # ticket goes in a form body: not in a URL, a log or the history.
            request_id, ticket = await self.authenticator.record_deep_linking(
                user.name, id_token, self._deep_linking
            )
            self.render_page(
                "deeplink_continue.html",
                action=f"{self.base_url}services/kore/deeplink/{request_id}",
                ticket=ticket,
            )
            return
        await self.redirect_to_next_url(user)

    def check_state(self):
        """A framed login's signed state (no cookie), else upstream's cookie check."""
        state = self.get_argument("state", "")
        self._framed_nonce_state = FramedState(self.settings["cookie_secret"]).nonce_state_of(state)
        if self._framed_nonce_state is None:
            super().check_state()

    def check_nonce(self, id_token: dict) -> None:
        if self._framed_nonce is None:
            super().check_nonce(id_token)
        elif id_token.get("nonce") != self._framed_nonce:
            raise HTTPError(400, "LTI launch refused: the nonce is not this login's")

    def find_user(self, name):
        # Every lookup of this login (the new or returning user, the grader account).
        return find_hub_user(self.db, self.users, name)

    #: The hub user of this login, looked up (and made, if new) while the launch's
    #: registry work ran (``hub_user_ahead``).
    _hub_user = None

    async def hub_user_ahead(self, name: str):
        """The hub user ``name``, made now if new, as JupyterHub's ``auth_to_user`` would
        make it next (``user_from_username``, then ``add_user``), in one commit
        (``new_orm_user``); ``auth_to_user`` takes it instead of looking the user up
        again."""
        user = self.find_user(name)
        if user is None:
            # JupyterHub's user_from_username looks the name up once more before it makes
            # the user: skipped, since nothing ran in this process in between (no await);
            # another writer could race its insert as it could JupyterHub's own lookup.
            orm_user = new_orm_user(self.db, name)
            self.db.commit()
            user = self._user_from_orm(orm_user)
            await maybe_future(self.authenticator.add_user(user))
        self._hub_user = user
        return user

    async def auth_to_user(self, authenticated, user=None):
        # JupyterHub looks the user up here; the authenticator's groups and roles are
        # trimmed to what the user does not hold yet with that same lookup (one hub
        # database query per login; see AnankeLTI13Authenticator.settle_access).
        if user is None:
            ahead = self._hub_user
            if ahead is not None and ahead.name == authenticated["name"]:
                user = ahead
            else:
                user = self.find_user(authenticated["name"])
            self.authenticator.settle_access(user, authenticated)
            groups = authenticated.get("groups")
            if groups is not None and self.authenticator.manage_groups:
                if user is None:  # what JupyterHub's auth_to_user does for a new user
                    user = self.user_from_username(authenticated["name"])
                    await maybe_future(self.authenticator.add_user(user))
                # Written by the commit JupyterHub makes for the auth_state below
                # rather than by a commit of sync_groups' own.
                stage_groups(self.db, user, groups)
                authenticated["groups"] = None
        return await super().auth_to_user(authenticated, user)

    async def validate_launch(self) -> dict:
        authenticator = self.authenticator
        validator = LTI13LaunchValidator(parent=self.app)
        args = convert_request_to_dict(self.request.arguments)
        validator.validate_auth_response(args)
        self.check_state()  # CSRF: state cookie equals state parameter

        encoded = args["id_token"]
        limit = authenticator.max_id_token_bytes
        if len(encoded) > limit:
            raise HTTPError(
                413,
                f"LTI launch refused: the id_token is {len(encoded)} bytes, more than the "
                f"{limit} this hub accepts (c.AnankeLTI13Authenticator.max_id_token_bytes).",
            )
        try:
            header = jwt.get_unverified_header(encoded)
        except jwt.PyJWTError as exc:
            raise TokenError(f"id_token is not a JWT ({exc})") from None
        try:
            unverified = jwt.decode(encoded, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError(f"id_token is not a JWT ({exc})") from None
        # Which registration: by the token's own iss and aud, then checked with its keys.
        registration = await authenticator.registration_of_token(
            unverified.get("iss", ""), unverified.get("aud")
        )
        #: The launch's registration (issuer, client ids, URLs) for what follows the
        #: validation, e.g. a Deep Linking response addressed to this platform.
        self.lti_registration = registration
        key = await authenticator.keys_at(registration.jwks_url).get_key(header.get("kid"))
        try:
            id_token = jwt.decode(
                encoded,
                key.key,
                algorithms=authenticator.jwks_algorithms,
                audience=list(registration.client_ids),
                issuer=registration.issuer,
                leeway=validator.time_leeway,
                options={"require": REQUIRED_JWT_CLAIMS},
            )
        except jwt.InvalidAudienceError as exc:
            raise InvalidAudienceError(f"{exc}: the id_token is not for this tool") from None
        except (jwt.ImmatureSignatureError, jwt.ExpiredSignatureError) as exc:
            # Most often two clocks that differ, which only their admins can fix.
            raise TokenError(
                f"id_token rejected: {exc} by this hub's clock ({_claim_times(unverified)}). "
                "If the launch was not minutes slow, the LMS's and the hub's clocks differ by "
                f"more than c.LTI13LaunchValidator.time_leeway ({validator.time_leeway} s): "
                "synchronise the clocks (NTP) and launch again."
            ) from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"id_token rejected: {exc}") from None

        self._deep_linking: DeepLinkingSettings | None = None
        if is_deep_linking_request(id_token):
            # Upstream asks a Deep Linking request for claims Moodle does not send and
            # refuses it with a riddle: ours checks the role and the settings claim.
            # Anyone but an instructor is refused here, before a hub user exists.
            try:
                self._deep_linking = check_deep_linking_request(id_token)
            except LaunchError as exc:
                raise HTTPError(exc.status, f"LTI launch refused: {exc}") from None
        else:
            validator.validate_id_token(id_token)
        validator.validate_azp_claim(id_token, set(registration.client_ids))
        authenticator.check_deployment(id_token, registration)
        self.check_nonce(id_token)  # nonce equals the hash of this browser's nonce cookie
        try:
            # In memory, no thread-pool trip (replay.py says why that is enough).
            nonce_state = self._framed_nonce_state or self._get_nonce_state_cookie()
            fresh = authenticator.nonces.use(id_token["nonce"], nonce_state)
        except NonceFromEarlierProcess:
            raise TokenError(
                "this launch was started before the hub restarted; launch again from your course"
            ) from None
        if not fresh:
            raise TokenError("this launch was already used (nonce seen before); launch again")
        return id_token


def _claim_times(claims: dict) -> str:
    """The token's iat and exp against this hub's clock, in seconds, for an error message."""
    now = time.time()
    parts = []
    for name in ("iat", "exp"):
        value = claims.get(name)
        if isinstance(value, int | float):
            parts.append(f"{name} {value - now:+.0f} s from now")
    return ", ".join(parts) or "no iat or exp"


__all__ = [
    "AnankeCallbackHandler",
    "AnankeLoginInitHandler",
    "LaunchRefused",
    "UnknownSigningKey",
]
