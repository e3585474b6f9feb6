"""Settings from the built-in platform's flags, the signing key, a tornado server."""

import asyncio
import logging
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Int, Unicode, default
from traitlets.config import Application

from ananke_hub.keys import KeyStore
from ananke_hub.persist import read_or_create_secret

from .handlers import ROUTES, XSRF_COOKIE
from .lti import PlatformConf, ToolSettings

HOST = "127.0.0.1"
TEMPLATES = Path(__file__).parent / "templates"


def library_conf(tool: ToolSettings, keys: KeyStore) -> PlatformConf:
    """The library's configuration, holding the store's signing key as PEM strings."""
    key = keys.ensure()
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PlatformConf(
        tool=tool, private_pem=key.private_pem.decode(), public_pem=public_pem.decode()
    )


def make_app(
    tool: ToolSettings, conf: PlatformConf, cookie_secret: str, log: logging.Logger
) -> web.Application:
    def log_request(handler: web.RequestHandler) -> None:
        # The path only: queries carry nonces and hints.
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "%d %s %s", status, handler.request.method, handler.request.path)

    return web.Application(
        ROUTES,
        log_function=log_request,
        tool=tool,
        lti_conf=conf,
        platform_log=log,
        cookie_secret=cookie_secret,
        template_path=str(TEMPLATES),
        xsrf_cookies=True,
        xsrf_cookie_name=XSRF_COOKIE,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
    )


class ExternalPlatform(Application):
    """lti1p3platform as an LMS stand-in; takes the built-in test platform's flags."""

    name = "external-lti-platform"
    description = __doc__

    aliases = {
        "port": "ExternalPlatform.port",
        "issuer": "ExternalPlatform.issuer",
        "state-dir": "ExternalPlatform.state_dir",
        "client-id": "ExternalPlatform.client_id",
        "deployment-id": "ExternalPlatform.deployment_id",
        "tool-login-url": "ExternalPlatform.tool_login_url",
        "tool-redirect-uri": "ExternalPlatform.tool_redirect_uri",
        "tool-target-link-uri": "ExternalPlatform.tool_target_link_uri",
        "tool-jwks-url": "ExternalPlatform.tool_jwks_url",
        "log-level": "Application.log_level",
    }

    port = Int(0, config=True, help="Port on 127.0.0.1; 0 picks a free one.")
    issuer = Unicode(
        "", config=True, help="Issuer (`iss`) and base URL. Empty: http://127.0.0.1:<port>."
    )
    state_dir = Unicode(
        "", config=True, help="Directory for the signing key (<dir>/keys) and cookie secret."
    )
    client_id = Unicode("ananke-demo", config=True, help="The tool's client id (`aud`).")
    deployment_id = Unicode("1", config=True, help="The tool's deployment id on this platform.")
    tool_login_url = Unicode("", config=True, help="The tool's login initiation URL.")
    tool_redirect_uri = Unicode("", config=True, help="The tool's one registered redirect URI.")
    tool_target_link_uri = Unicode("", config=True, help="Where the resource link points.")
    tool_jwks_url = Unicode("", config=True, help="The tool's public keyset URL.")

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO

    def start(self):
        needed = ("state_dir", "tool_login_url", "tool_redirect_uri", "tool_target_link_uri")
        missing = ["--" + n.replace("_", "-") for n in needed if not getattr(self, n)]
        if missing:
            self.log.critical("Missing settings: %s. See --help-all.", ", ".join(missing))
            self.exit(2)
        state = Path(self.state_dir)
        keys = KeyStore(state / "keys")  # created once, 0600 (ananke_hub.persist)
        cookie_secret = read_or_create_secret(state / "cookie_secret")
        sockets = bind_sockets(self.port, HOST)
        local_url = f"http://{HOST}:{sockets[0].getsockname()[1]}"
        tool = ToolSettings(
            issuer=self.issuer or local_url,
            client_id=self.client_id,
            deployment_id=self.deployment_id,
            login_url=self.tool_login_url,
            redirect_uri=self.tool_redirect_uri,
            target_link_uri=self.tool_target_link_uri,
            jwks_url=self.tool_jwks_url,
        )
        app = make_app(tool, library_conf(tool, keys), cookie_secret, self.log)
        try:
            asyncio.run(self._serve(app, sockets, local_url, tool.issuer))
        except KeyboardInterrupt:
            pass

    async def _serve(self, app, sockets, local_url: str, issuer: str):
        HTTPServer(app).add_sockets(sockets)
        print(f"External LTI platform listening on {local_url} (issuer {issuer})", flush=True)
        await asyncio.Event().wait()


main = ExternalPlatform.launch_instance
