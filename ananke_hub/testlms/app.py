"""The test platform application: settings from the command line, a tornado server.

    python -m ananke_hub.testlms --port=9000 --state-dir=/tmp/lms \\
        --tool-login-url=http://127.0.0.1:8000/hub/lti13/oauth_login \\
        --tool-redirect-uri=http://127.0.0.1:8000/hub/lti13/oauth_callback \\
        --tool-target-link-uri=http://127.0.0.1:8000/hub/ \\
        --tool-jwks-url=http://127.0.0.1:8000/services/kore/jwks

LTI Advantage options: ``--ags-scopes=score`` (Moodle's grade sync without column
management), ``--roster-size=500`` (learners besides the launchable four),
``--test-api`` (fault injection and score tallies for tests and benchmarks).
"""

import asyncio
import logging
import signal
import ssl
from pathlib import Path
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate
from traitlets.config import Application

from .. import __version__, redact
from ..keys import KeyStore
from ..persist import read_or_create_secret
from . import constants as C
from .client_auth import ReplayGuard, ToolKeyset
from .controls import ServiceControls
from .demo_data import DEFAULT_EXTRA_LEARNERS
from .faults import Faults
from .handlers import (
    ags,
    deeplink,
    gradebook,
    jwks,
    launch,
    nrps,
    oidc,
    registration,
    testapi,
    token,
)
from .handlers.base import XSRF_COOKIE
from .load import MAX_PER_REQUEST, Load
from .persistence import StoreFile, StoreFileError
from .settings import PlatformSettings
from .store import PlatformStore

HOST = "127.0.0.1"
TEMPLATES = Path(__file__).parent / "templates"


def make_app(
    settings: PlatformSettings,
    keys: KeyStore,
    cookie_secret: str,
    log: logging.Logger,
    store: PlatformStore | None = None,
    store_file: StoreFile | None = None,
    load: Load | None = None,
) -> web.Application:
    def log_request(handler: web.RequestHandler) -> None:
        # The path only: queries carry nonces and hints that have no place in a log.
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "%d %s %s", status, handler.request.method, handler.request.path)

    routes = launch.ROUTES + deeplink.ROUTES + oidc.ROUTES + jwks.ROUTES
    routes += token.ROUTES + ags.ROUTES + nrps.ROUTES + gradebook.ROUTES
    routes += registration.ROUTES  # LTI Dynamic Registration
    # Browsers ask every page's host for one; an empty answer keeps the log clean.
    routes.append((r"/favicon\.ico", FaviconHandler))
    if settings.test_api:
        routes += testapi.ROUTES
    return web.Application(
        routes,
        log_function=log_request,
        platform=settings,
        platform_log=log,
        platform_keys=keys,
        platform_store=store or PlatformStore(settings.roster_size),
        platform_store_file=store_file,
        platform_faults=Faults(),
        platform_load=load or Load(),
        platform_controls=ServiceControls(),
        # Moodle fetches the tool's keyset while it answers each token request (a tool
        # that blocks while waiting for its token deadlocks); the lenient profile caches.
        platform_tool_keyset=ToolKeyset(settings.tool_jwks_url, max_age=0.0)
        if settings.moodle
        else ToolKeyset(settings.tool_jwks_url),
        platform_replay_guard=ReplayGuard(),
        # Dynamic registration: tokens handed out by /admin/tools (single use), and the
        # tools registered with them (in memory: a restart forgets them).
        platform_registration_tokens=set(),
        platform_registrations=[],
        # What a registration changed of the tool's settings (Moodle stores the
        # LtiDeepLinkingRequest's target_link_uri as the Content Selection URL).
        platform_tool_overrides={},
        cookie_secret=cookie_secret,
        template_path=str(TEMPLATES),
        xsrf_cookies=True,
        xsrf_cookie_name=XSRF_COOKIE,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
    )


class FaviconHandler(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", "max-age=86400")
        self.finish(FAVICON.read_bytes())


FAVICON = Path(__file__).parent / "static" / "favicon.svg"


class TestPlatform(Application):
    """An LTI 1.3 platform with demo data, standing in for an LMS in demos and tests."""

    __test__ = False  # not a pytest test class, despite the name

    name = "ananke-test-platform"
    version = __version__
    description = __doc__

    aliases = {
        "port": "TestPlatform.port",
        "issuer": "TestPlatform.issuer",
        "state-dir": "TestPlatform.state_dir",
        "client-id": "TestPlatform.client_id",
        "deployment-id": "TestPlatform.deployment_id",
        "tool-login-url": "TestPlatform.tool_login_url",
        "tool-redirect-uri": "TestPlatform.tool_redirect_uri",
        "tool-target-link-uri": "TestPlatform.tool_target_link_uri",
        "tool-content-selection-url": "TestPlatform.tool_content_selection_url",
        "launch-container": "TestPlatform.launch_container",
        "tool-jwks-url": "TestPlatform.tool_jwks_url",
        "jwks-delay": "TestPlatform.jwks_delay",
        "load-delay": "TestPlatform.load_delay",
        "load-limit": "TestPlatform.load_limit",
        "certfile": "TestPlatform.certfile",
        "keyfile": "TestPlatform.keyfile",
        "ags-scopes": "TestPlatform.ags_scopes",
        "roster-size": "TestPlatform.roster_size",
        "log-level": "Application.log_level",
    }
    flags = {
        **Application.flags,
        "test-api": (
            {"TestPlatform": {"test_api": True}},
            "Serve the test API (/_test/...: faults, roster changes, score tallies).",
        ),
        "persist": (
            {"TestPlatform": {"persist": True}},
            "Keep the gradebook (line items, scores, roster changes) in <state-dir>/store.json.",
        ),
        "lenient": (
            {"TestPlatform": {"lenient": True}},
            "Turn the Moodle profile off (see TestPlatform.lenient).",
        ),
    }

    port = Int(
        0,
        config=True,
        help="Port on 127.0.0.1 to listen on. 0 picks a free one; the start-up line says which.",
    )
    issuer = Unicode(
        "",
        config=True,
        help="""The platform's issuer identifier (`iss` of its id_tokens) and the base of
        its URLs. Empty means `http://127.0.0.1:<port>`.""",
    )
    state_dir = Unicode(
        "",
        config=True,
        help="""Directory for the platform's signing keys (`<dir>/keys`) and cookie secret.
        Created once and reused, so the keyset stays the same across restarts.""",
    )
    client_id = Unicode(
        "ananke-demo",
        config=True,
        help="The client id the platform assigned to the tool (the `aud` of id_tokens).",
    )
    deployment_id = Unicode(
        "1",
        config=True,
        help="The deployment id of the tool on this platform (the deployment_id claim).",
    )
    tool_login_url = Unicode(
        "",
        config=True,
        help="The tool's login initiation URL: the hub's `<hub>/hub/lti13/oauth_login`.",
    )
    tool_redirect_uri = Unicode(
        "",
        config=True,
        help="""The tool's registered redirect URI: the hub's `<hub>/hub/lti13/oauth_callback`.
        Authentication requests with any other redirect_uri are refused.""",
    )
    tool_target_link_uri = Unicode(
        "",
        config=True,
        help="Where the resource links point (target_link_uri): the hub's `<hub>/hub/`.",
    )
    tool_content_selection_url = Unicode(
        "",
        config=True,
        help="""Where content selections (Deep Linking requests) point: Moodle's "Content
        Selection URL" of the tool, the hub's `<hub>/hub/?ananke_lti=select-content`.
        Empty: the resource links' target (as Moodle falls back to the tool URL). A
        Dynamic Registration sets it from the tool's LtiDeepLinkingRequest message, as
        Moodle's registration_helper.php does.""",
    )
    launch_container = Enum(
        ["window", "embed"],
        "window",
        config=True,
        help="""How the platform opens a launch: `window` in its own page (Moodle's "New
        window" launch container), `embed` in an iframe of a course page (Moodle's
        "Embed", its default for dynamically registered tools).""",
    )
    tool_jwks_url = Unicode(
        "",
        config=True,
        help="""The tool's public keyset URL (Kore's `<hub>/services/kore/jwks`). The token
        endpoint verifies the tool's client assertions with it.""",
    )
    ags_scopes = Unicode(
        "lineitem,result.readonly,score",
        config=True,
        help=f"""Comma-separated AGS scopes that launches advertise and the token endpoint
        grants, by short name: {", ".join(C.AGS_SCOPE_NAMES)}. `score` alone plays
        Moodle's grade sync without column management: the tool can only post scores to
        the activity's own line item.""",
    )
    roster_size = Int(
        DEFAULT_EXTRA_LEARNERS,
        config=True,
        help="""How many learners the demo course has besides the four people on the
        launch page: they never launched the tool, but NRPS lists them and AGS takes their
        scores. One of them (id 107, if there are 8 or more) dropped the course (Inactive).""",
    )
    test_api = Bool(
        False,
        config=True,
        help="""Serve the test API under /_test/ (fault injection, roster changes, score
        tallies, reset). For tests and benchmarks only: anyone who can reach the platform
        can use it.""",
    )
    persist = Bool(
        False,
        config=True,
        help="""Keep the gradebook (line items, scores, roster changes) across restarts in
        `<state-dir>/store.json`, as an LMS does. Off: every start begins with the demo
        data and no scores (what most tests want).""",
    )
    lenient = Bool(
        False,
        config=True,
        help="""Turn off the Moodle profile. By default the platform is as strict as Moodle
        5.1 where tools get it wrong: launches leave `lineitem` out of the AGS claim once
        line items the tool made are bound to the resource link, the tool's keyset is
        fetched during every token request, a score not newer than the last is refused
        (409), people without a gradebook role are sent as Learner and their scores refused
        (400). Lenient: launches always carry `lineitem` and the keyset is cached.""",
    )
    jwks_delay = Float(
        0.0,
        config=True,
        help="""Seconds to wait before answering /jwks, to play a slow LMS. The wait does not
        block the platform.""",
    )

    load_delay = Float(
        0.0,
        config=True,
        help="""Seconds every token, AGS or NRPS request waits per request in flight
        (itself included) when it arrives: an LMS that slows down under load (with 0.002,
        the 40th request at once waits 80 ms). Adds to the test API's delay faults.""",
    )
    load_limit = Int(
        0,
        config=True,
        help="""Answer 429 (Retry-After: 1) to a token, AGS or NRPS request that arrives
        while this many are in flight, as an LMS whose workers are all busy. 0: never.""",
    )
    certfile = Unicode(
        "",
        config=True,
        help="""Serve https with this certificate (PEM, the chain after it), as a real LMS
        does; its URLs and issuer then begin with https://. A tool must trust the issuing
        CA (e.g. SSL_CERT_FILE). Goes with --keyfile.""",
    )
    keyfile = Unicode(
        "",
        config=True,
        help="The private key (PEM) of --certfile.",
    )

    @validate("load_delay")
    def _valid_load_delay(self, proposal):
        if not 0 <= proposal.value <= MAX_PER_REQUEST:
            raise TraitError(
                f"--load-delay must be 0 to {MAX_PER_REQUEST} seconds, got {proposal.value}."
            )
        return proposal.value

    @validate("load_limit")
    def _valid_load_limit(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"--load-limit must be 0 (none) or more, got {proposal.value}.")
        return proposal.value

    @validate(
        "issuer",
        "tool_login_url",
        "tool_redirect_uri",
        "tool_target_link_uri",
        "tool_content_selection_url",
        "tool_jwks_url",
    )
    def _valid_url(self, proposal):
        value = proposal.value
        parsed = urlparse(value)
        flag = "--" + proposal.trait.name.replace("_", "-")
        if value and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            raise TraitError(f"{flag} must be an http(s) URL with a host, got {value!r}.")
        if proposal.trait.name == "issuer" and (parsed.query or parsed.fragment):
            # Security Framework 1.0 section 5.1.2: the issuer has no query or fragment.
            raise TraitError(f"{flag} must not contain a query or fragment, got {value!r}.")
        return value

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO  # one line per request: paths only, no tokens

    @validate("ags_scopes")
    def _valid_scopes(self, proposal):
        names = [name.strip() for name in proposal.value.split(",") if name.strip()]
        unknown = [name for name in names if name not in C.AGS_SCOPE_NAMES]
        if unknown or not names:
            raise TraitError(
                f"--ags-scopes takes a comma-separated list of {', '.join(C.AGS_SCOPE_NAMES)}; "
                f"got {proposal.value!r}."
            )
        return ",".join(names)

    @validate("roster_size")
    def _valid_roster_size(self, proposal):
        if not 0 <= proposal.value <= 100_000:
            raise TraitError(f"--roster-size must be 0 to 100000, got {proposal.value}.")
        return proposal.value

    @validate("jwks_delay")
    def _valid_delay(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"--jwks-delay must be 0 or more seconds, got {proposal.value}.")
        return proposal.value

    def _missing(self) -> list[str]:
        needed = ("state_dir", "tool_login_url", "tool_redirect_uri", "tool_target_link_uri")
        return ["--" + name.replace("_", "-") for name in needed if not getattr(self, name)]

    def initialize(self, argv=None):
        redact.install()  # secrets out of its log lines, also at DEBUG
        super().initialize(argv)

    def start(self):
        missing = self._missing()
        if missing:
            self.log.critical("Missing settings: %s. See --help-all.", ", ".join(missing))
            self.exit(2)
        # File work before the event loop starts. The keys are re-read per request, so
        # `KeyStore(<state-dir>/keys).rotate()` takes effect without a restart (a test
        # can make the hub meet an unknown `kid`).
        state = Path(self.state_dir)
        keys = KeyStore(state / "keys")
        keys.ensure()
        cookie_secret = read_or_create_secret(state / "cookie_secret")
        tls = None
        if bool(self.certfile) != bool(self.keyfile):
            self.log.critical("--certfile and --keyfile go together: give both or neither.")
            self.exit(2)
        if self.certfile:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                tls.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                self.log.critical("Cannot serve https with %s: %s", self.certfile, exc)
                self.exit(2)
        sockets = bind_sockets(self.port, HOST)
        try:
            asyncio.run(self._serve(sockets, keys, cookie_secret, state, tls))
        except KeyboardInterrupt:
            pass
        except StoreFileError as exc:
            self.log.critical("%s", exc)
            self.exit(1)

    async def _serve(self, sockets, keys: KeyStore, cookie_secret: str, state: Path, tls=None):
        scheme = "https" if tls is not None else "http"
        local_url = f"{scheme}://{HOST}:{sockets[0].getsockname()[1]}"
        settings = PlatformSettings(
            issuer=self.issuer or local_url,
            client_id=self.client_id,
            deployment_id=self.deployment_id,
            tool_target_link_uri=self.tool_target_link_uri,
            tool_content_selection_url=self.tool_content_selection_url,
            launch_container=self.launch_container,
            tool_login_url=self.tool_login_url,
            tool_redirect_uri=self.tool_redirect_uri,
            tool_jwks_url=self.tool_jwks_url,
            jwks_delay=self.jwks_delay,
            ags_scopes=tuple(C.AGS_SCOPE_NAMES[name] for name in self.ags_scopes.split(",")),
            roster_size=self.roster_size,
            test_api=self.test_api,
            moodle=not self.lenient,
        )
        store = PlatformStore(settings.roster_size)
        store_file = None
        if self.persist:
            store_file = StoreFile(state, store, self.log)
            if store_file.load():
                self.log.info("Gradebook loaded from %s", store_file.path)
        load = Load(per_request=self.load_delay, limit=self.load_limit)
        app = make_app(settings, keys, cookie_secret, self.log, store, store_file, load)
        server = HTTPServer(app, ssl_options=tls)
        server.add_sockets(sockets)
        # One line with the URL: the demo launcher and the tests wait for it.
        print(
            f"Ananke test platform listening on {local_url} (issuer {settings.issuer})", flush=True
        )
        if settings.test_api:
            self.log.warning("The test API is on (/_test/): for tests and benchmarks only.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()
        if store_file is not None:
            store_file.save()  # what changed in the last moments before the stop


main = TestPlatform.launch_instance
