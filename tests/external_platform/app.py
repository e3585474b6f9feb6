"""Settings from the built-in platform's flags, the signing key, a tornado server."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import Bool, Int, TraitError, Unicode, default, validate
from traitlets.config import Application

from ananke_hub.keys import KeyStore
from ananke_hub.persist import read_or_create_secret

from . import people, service_handlers, testapi
from .handlers import ROUTES, XSRF_COOKIE
from .lti import PlatformConf, ToolSettings
from .services import AGS_SCOPE_NAMES, ServiceSettings
from .store import PlatformStore
from .urls import ServiceURLs

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
    tool: ToolSettings,
    conf: PlatformConf,
    cookie_secret: str,
    log: logging.Logger,
    services: ServiceSettings | None = None,
    test_api: bool = False,
) -> web.Application:
    def log_request(handler: web.RequestHandler) -> None:
        # The path only: queries carry nonces and hints.
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "%d %s %s", status, handler.request.method, handler.request.path)

    routes = ROUTES + service_handlers.ROUTES + (testapi.ROUTES if test_api else [])
    return web.Application(
        routes,
        log_function=log_request,
        tool=tool,
        lti_conf=conf,
        lti_services=services or ServiceSettings(),
        platform_store=PlatformStore(ServiceURLs(tool.issuer), people.COURSE, people.LINKS),
        token_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="token"),
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
        "tool-content-selection-url": "ExternalPlatform.tool_content_selection_url",
        "tool-jwks-url": "ExternalPlatform.tool_jwks_url",
        "ags-scopes": "ExternalPlatform.ags_scopes",
        "nrps-page-size": "ExternalPlatform.nrps_page_size",
        "log-level": "Application.log_level",
    }
    flags = {
        **Application.flags,
        "test-api": (
            {"ExternalPlatform": {"test_api": True}},
            "Serve /_test/scores.json and /_test/reset (tests only).",
        ),
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
    tool_content_selection_url = Unicode(
        "",
        config=True,
        help="Accepted as the built-in LMS's flag (DemoStack passes it); this platform "
        "sends no content selection (Deep Linking), so it is not used.",
    )
    tool_jwks_url = Unicode(
        "", config=True, help="The tool's public keyset URL (the token endpoint needs it)."
    )
    ags_scopes = Unicode(
        "lineitem,result.readonly,score",
        config=True,
        help=f"""Comma-separated AGS scopes, by short name ({", ".join(AGS_SCOPE_NAMES)}),
        turned into the library's switches: `lineitem` lets the tool create line items,
        `result.readonly` the result service, `score` scores; without `lineitem` and
        `lineitem.readonly` launches name only the activity's own line item (`score`
        alone: Moodle's grade sync only). The library computes the claim from these.""",
    )
    nrps_page_size = Int(
        10,
        config=True,
        help="Members per NRPS page when the tool sends no `limit` (the library pages by it).",
    )
    test_api = Bool(
        False,
        config=True,
        help="Serve /_test/scores.json and /_test/reset. Tests only: anyone may call them.",
    )

    @validate("ags_scopes")
    def _valid_scopes(self, proposal):
        names = [name.strip() for name in proposal.value.split(",") if name.strip()]
        unknown = [name for name in names if name not in AGS_SCOPE_NAMES]
        if unknown or not names:
            raise TraitError(
                f"--ags-scopes takes a comma-separated list of {', '.join(AGS_SCOPE_NAMES)}; "
                f"got {proposal.value!r}."
            )
        return ",".join(names)

    @validate("nrps_page_size")
    def _valid_page_size(self, proposal):
        if not 1 <= proposal.value <= 10_000:
            raise TraitError(f"--nrps-page-size must be 1 to 10000, got {proposal.value}.")
        return proposal.value

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
        services = ServiceSettings(
            ags_scopes=tuple(self.ags_scopes.split(",")), nrps_page_size=self.nrps_page_size
        )
        app = make_app(
            tool, library_conf(tool, keys), cookie_secret, self.log, services, self.test_api
        )
        try:
            asyncio.run(self._serve(app, sockets, local_url, tool.issuer))
        except KeyboardInterrupt:
            pass

    async def _serve(self, app, sockets, local_url: str, issuer: str):
        HTTPServer(app).add_sockets(sockets)
        print(f"External LTI platform listening on {local_url} (issuer {issuer})", flush=True)
        await asyncio.Event().wait()


main = ExternalPlatform.launch_instance
