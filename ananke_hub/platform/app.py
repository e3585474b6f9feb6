"""The test platform application: settings from the command line, a tornado server.

    python -m ananke_hub.platform --port=9000 --state-dir=/tmp/lms \\
        --tool-login-url=http://127.0.0.1:8000/hub/lti13/oauth_login \\
        --tool-redirect-uri=http://127.0.0.1:8000/hub/lti13/oauth_callback \\
        --tool-target-link-uri=http://127.0.0.1:8000/hub/
"""

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Float, Int, TraitError, Unicode, default, validate
from traitlets.config import Application

from .. import __version__
from ..keys import KeyStore
from ..persist import read_or_create_secret
from .handlers import jwks, launch, oidc
from .handlers.base import XSRF_COOKIE
from .settings import PlatformSettings

HOST = "127.0.0.1"
TEMPLATES = Path(__file__).parent / "templates"


def make_app(
    settings: PlatformSettings, keys: KeyStore, cookie_secret: str, log: logging.Logger
) -> web.Application:
    def log_request(handler: web.RequestHandler) -> None:
        # The path only: queries carry nonces and hints that have no place in a log.
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "%d %s %s", status, handler.request.method, handler.request.path)

    return web.Application(
        launch.ROUTES + oidc.ROUTES + jwks.ROUTES,
        log_function=log_request,
        platform=settings,
        platform_log=log,
        platform_keys=keys,
        cookie_secret=cookie_secret,
        template_path=str(TEMPLATES),
        xsrf_cookies=True,
        xsrf_cookie_name=XSRF_COOKIE,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
    )


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
        "tool-jwks-url": "TestPlatform.tool_jwks_url",
        "jwks-delay": "TestPlatform.jwks_delay",
        "log-level": "Application.log_level",
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
    tool_jwks_url = Unicode(
        "",
        config=True,
        help="The tool's public keyset URL (Kore's `<hub>/services/kore/jwks`).",
    )
    jwks_delay = Float(
        0.0,
        config=True,
        help="""Seconds to wait before answering /jwks, to play a slow LMS. The wait does not
        block the platform.""",
    )

    @validate(
        "issuer", "tool_login_url", "tool_redirect_uri", "tool_target_link_uri", "tool_jwks_url"
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

    @validate("jwks_delay")
    def _valid_delay(self, proposal):
        if proposal.value < 0:
            raise TraitError(f"--jwks-delay must be 0 or more seconds, got {proposal.value}.")
        return proposal.value

    def _missing(self) -> list[str]:
        needed = ("state_dir", "tool_login_url", "tool_redirect_uri", "tool_target_link_uri")
        return ["--" + name.replace("_", "-") for name in needed if not getattr(self, name)]

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
        sockets = bind_sockets(self.port, HOST)
        try:
            asyncio.run(self._serve(sockets, keys, cookie_secret))
        except KeyboardInterrupt:
            pass

    async def _serve(self, sockets, keys: KeyStore, cookie_secret: str):
        local_url = f"http://{HOST}:{sockets[0].getsockname()[1]}"
        settings = PlatformSettings(
            issuer=self.issuer or local_url,
            client_id=self.client_id,
            deployment_id=self.deployment_id,
            tool_target_link_uri=self.tool_target_link_uri,
            tool_login_url=self.tool_login_url,
            tool_redirect_uri=self.tool_redirect_uri,
            tool_jwks_url=self.tool_jwks_url,
            jwks_delay=self.jwks_delay,
        )
        server = HTTPServer(make_app(settings, keys, cookie_secret, self.log))
        server.add_sockets(sockets)
        # One line with the URL: the demo launcher and the tests wait for it.
        print(
            f"Ananke test platform listening on {local_url} (issuer {settings.issuer})", flush=True
        )
        await asyncio.Event().wait()


main = TestPlatform.launch_instance
