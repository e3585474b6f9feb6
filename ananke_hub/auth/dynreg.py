"""LTI Dynamic Registration 1.0, the tool's side: ``/hub/lti13/register``.

https://www.imsglobal.org/spec/lti-dr/v1p0. An admin pastes a registration URL (made by
``ananke lms registration-url`` or Kore's LMS page; it carries a single-use, expiring
ticket) into the LMS. The LMS opens it with ``openid_configuration`` and
``registration_token``; the hub fetches the platform's configuration, shows what will be
registered, and on confirmation posts its tool configuration to the platform's
``registration_endpoint``, stores the client id and deployment id it gets back, and ends
with the ``org.imsglobal.lti.close`` message to the LMS's window.

Without a valid ticket both steps answer 403 and nothing is fetched or stored: the
ticket is what makes the request an admin's (the LMS's admin page is on another site,
so there is no hub login; the ticket is single-use and only its hash is stored).
"""

import ipaddress
import json
from pathlib import Path
from urllib.parse import urlparse

import jinja2
from jupyterhub.handlers import BaseHandler
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..framing import select_content_url
from ..lti_spec import (
    AGS_SCOPES,
    MESSAGE_TYPE_DEEP_LINKING_REQUEST,
    NRPS_SCOPE,
    PLATFORM_CONFIGURATION,
    REGISTERED_MESSAGE_TYPES,
    REGISTRATION_CLOSE_SUBJECT,
    TOOL_CONFIGURATION,
)
from ..registrations import NewRegistration, RegistrationError, TicketRefused, registration_url

ROUTE = r"/lti13/register"

#: The largest platform document (configuration, registration answer) the hub reads.
MAX_DOCUMENT_BYTES = 64 * 1024
#: Seconds the hub waits for the platform's configuration or registration answer.
FETCH_TIMEOUT = 10.0

#: The scopes the tool asks for, when the platform offers them.
WANTED_SCOPES = (*AGS_SCOPES, NRPS_SCOPE)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)


class RegistrationFailed(Exception):
    """The platform's side failed; the message says what, for the admin."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_platform_url(url: str, what: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname and _is_loopback(parsed.hostname):
        return  # a platform on the same machine (the demo, tests)
    raise RegistrationFailed(
        f"The platform's {what} {url!r} is not an https URL. The hub talks to an LMS over "
        "https only (http only on this machine's loopback address)."
    )


def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


async def _fetch_json(request: HTTPRequest, what: str) -> dict:
    """A JSON object from the platform, size- and time-limited; RegistrationFailed if not."""
    request.connect_timeout = request.request_timeout = FETCH_TIMEOUT
    request.follow_redirects = False
    # A client of its own: the shared one ignores max_body_size.
    client = AsyncHTTPClient(force_instance=True, max_body_size=MAX_DOCUMENT_BYTES)
    try:
        response = await client.fetch(request)
    except HTTPClientError as exc:
        if exc.code == 599:
            raise RegistrationFailed(
                f"The platform's {what} at {request.url} could not be read: it could not "
                f"be reached, did not answer within {FETCH_TIMEOUT:g} s, or sent more than "
                f"{MAX_DOCUMENT_BYTES // 1024} KB ({exc.message})."
            ) from None
        body = exc.response.body[:2000].decode("utf8", "replace") if exc.response else ""
        raise RegistrationFailed(
            f"The platform's {what} at {request.url} answered HTTP {exc.code}"
            + (f": {body}" if body else ".")
        ) from None
    except OSError as exc:
        raise RegistrationFailed(
            f"The platform's {what} at {request.url} could not be reached ({exc})."
        ) from None
    except ValueError as exc:
        raise RegistrationFailed(
            f"The platform's {what} at {request.url} cannot be read ({exc})."
        ) from None
    finally:
        client.close()
    try:
        document = json.loads(response.body)
    except ValueError:
        raise RegistrationFailed(f"The platform's {what} at {request.url} is not JSON.") from None
    if not isinstance(document, dict):
        raise RegistrationFailed(f"The platform's {what} at {request.url} is not a JSON object.")
    return document


async def fetch_platform_configuration(url: str) -> dict:
    """The platform's OpenID configuration, checked as section 3.5 asks."""
    if not url:
        raise RegistrationFailed(
            "The LMS did not send its configuration (openid_configuration). Paste the "
            "registration URL into the LMS's tool registration (Moodle: Site administration, "
            "Plugins, Activity modules, External tool, Manage tools, Tool URL), not into a "
            "browser."
        )
    check_platform_url(url, "configuration URL")
    config = await _fetch_json(
        HTTPRequest(url, headers={"Accept": "application/json"}), "configuration"
    )
    issuer = config.get("issuer")
    if not isinstance(issuer, str) or _origin(issuer) != _origin(url):
        # Section 3.5.1: the issuer must match the configuration URL's origin, or anyone
        # could register a configuration naming someone else's LMS.
        raise RegistrationFailed(
            f"The platform's configuration names the issuer {issuer!r}, which is not on the "
            f"site it was fetched from ({_origin(url)}). The hub does not register it: the "
            "issuer must match the configuration URL."
        )
    for name in ("authorization_endpoint", "jwks_uri", "registration_endpoint"):
        value = config.get(name)
        if not isinstance(value, str) or not value:
            raise RegistrationFailed(f"The platform's configuration has no {name}.")
        check_platform_url(value, name)
    if config.get("token_endpoint"):
        check_platform_url(config["token_endpoint"], "token_endpoint")
    platform = config.get(PLATFORM_CONFIGURATION)
    if not isinstance(platform, dict):
        raise RegistrationFailed(
            f"The platform's configuration has no LTI part ({PLATFORM_CONFIGURATION}): it "
            "does not look like an LTI 1.3 platform."
        )
    supported = {
        m.get("type") for m in platform.get("messages_supported") or [] if isinstance(m, dict)
    }
    missing = [t for t in REGISTERED_MESSAGE_TYPES if t not in supported]
    if missing:
        raise RegistrationFailed(
            f"The platform does not support the LTI message type(s) {', '.join(missing)}, "
            "which the hub needs (activity launches and content selection). Update the LMS, "
            "or register the hub by hand (docs/admin/lms.md)."
        )
    return config


def requested_scopes(config: dict) -> list[str]:
    offered = config.get("scopes_supported")
    if not isinstance(offered, list):
        return list(WANTED_SCOPES)
    return [s for s in WANTED_SCOPES if s in offered]


class DynamicRegistrationHandler(BaseHandler):
    """GET: the confirmation page; POST: register with the platform."""

    def check_xsrf_cookie(self):
        # The LMS's admin page opens this cross-site (in a frame or a new window), with no
        # hub cookie. The single-use ticket in the form authorizes the request; a forged
        # cross-site post would need it.
        return

    @property
    def store(self):
        return self.authenticator.registrations.store

    def tool_urls(self) -> dict:
        # As for the login routes' URLs: c.AnankeLTI13Authenticator.uri_scheme, or "auto".
        scheme = self.authenticator.get_uri_scheme(self.request)
        origin = f"{scheme}://{self.request.host}"
        base = origin + self.base_url  # JupyterHub's base_url, e.g. "/"
        return {
            "domain": self.request.host,
            "login": base + "hub/lti13/oauth_login",
            "callback": base + "hub/lti13/oauth_callback",
            "target": base + "hub/",
            "jwks": base + "services/kore/jwks",
        }

    def tool_configuration(self, config: dict) -> dict:
        """The client registration the hub sends (section 3.4)."""
        urls = self.tool_urls()
        return {
            "application_type": "web",
            "response_types": ["id_token"],
            "grant_types": ["implicit", "client_credentials"],
            "initiate_login_uri": urls["login"],
            "redirect_uris": [urls["callback"]],
            "client_name": "Jupyter",
            "jwks_uri": urls["jwks"],
            "token_endpoint_auth_method": "private_key_jwt",
            "scope": " ".join(requested_scopes(config)),
            TOOL_CONFIGURATION: {
                "domain": urls["domain"],
                "target_link_uri": urls["target"],
                # Moodle's username is no standard claim (docs/admin/lms.md).
                "custom_parameters": {"username": "$User.username"},
                "claims": ["iss", "sub", "name", "given_name", "family_name", "email"],
                # Content selections get a target of their own: the hub recognises them
                # at the login initiation and runs them in the LMS's frame without
                # cookies (framing.py); Moodle stores it as the "Content Selection URL".
                "messages": [
                    {"type": t, "target_link_uri": select_content_url(urls["target"])}
                    if t == MESSAGE_TYPE_DEEP_LINKING_REQUEST
                    else {"type": t}
                    for t in REGISTERED_MESSAGE_TYPES
                ],
            },
        }

    def render_page(self, template: str, status: int = 200, frame_origin: str = "", **ns):
        self.set_status(status)
        if frame_origin:
            # The LMS shows this page in a frame of its own admin page.
            self.set_header("Content-Security-Policy", f"frame-ancestors 'self' {frame_origin}")
        self.finish(_TEMPLATES.get_template(template).render(**ns))

    def refuse(self, status: int, message: str, frame_origin: str = "") -> None:
        self.render_page(
            "registration_error.html", status, frame_origin=frame_origin, message=message
        )

    def _args(self) -> tuple[str, str, str]:
        return (
            self.get_argument("ticket", ""),
            self.get_argument("openid_configuration", ""),
            self.get_argument("registration_token", ""),
        )

    async def get(self):
        secret, config_url, token = self._args()
        registry = self.store.registry
        try:
            ticket = await registry.run(self.store.check_ticket, secret)
        except TicketRefused as exc:
            return self.refuse(403, str(exc))
        frame_origin = _origin(config_url) if config_url else ""
        try:
            config = await fetch_platform_configuration(config_url)
        except RegistrationFailed as exc:
            return self.refuse(400, str(exc), frame_origin)
        platform = config[PLATFORM_CONFIGURATION]
        prefix = ticket.username_prefix or "chosen by the hub"
        existing = await registry.run(lambda: self.store.entries(include_removed=True))
        if not existing:
            prefix = f"{self.authenticator.username_prefix!r} (the hub's own: first platform)"
        self.render_page(
            "registration_confirm.html",
            frame_origin=frame_origin,
            issuer=config["issuer"],
            product=platform.get("product_family_code", ""),
            version=platform.get("version", ""),
            scopes=requested_scopes(config),
            messages=REGISTERED_MESSAGE_TYPES,
            tool=self.tool_urls(),
            prefix=prefix,
            fields={
                "ticket": secret,
                "openid_configuration": config_url,
                "registration_token": token,
            },
            action=self.request.path,
        )

    async def post(self):
        secret, config_url, token = self._args()
        registry = self.store.registry
        frame_origin = _origin(config_url) if config_url else ""
        try:
            await registry.run(self.store.claim_ticket, secret)
        except TicketRefused as exc:
            return self.refuse(403, str(exc), frame_origin)
        try:
            registration = await self.register(config_url, token, secret)
        except (RegistrationFailed, RegistrationError) as exc:
            await registry.run(self.store.release_ticket, secret)
            self.log.warning("lti: dynamic registration with %s failed: %s", config_url, exc)
            return self.refuse(400, str(exc), frame_origin)
        except BaseException:
            await registry.run(self.store.release_ticket, secret)
            raise
        await self.authenticator.registrations.refresh(force=True)
        self.log.info(
            "lti: registered platform %s (registration %s, client id %s)",
            registration.issuer,
            registration.id,
            registration.client_ids[0],
        )
        self.render_page(
            "registration_done.html",
            frame_origin=frame_origin,
            registration=registration,
            close_message=json.dumps({"subject": REGISTRATION_CLOSE_SUBJECT}),
        )

    async def register(self, config_url: str, token: str, secret: str):
        # Fetched again: the form's fields come through the browser.
        config = await fetch_platform_configuration(config_url)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        answer = await _fetch_json(
            HTTPRequest(
                config["registration_endpoint"],
                method="POST",
                headers=headers,
                body=json.dumps(self.tool_configuration(config)),
            ),
            "registration endpoint",
        )
        client_id = answer.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise RegistrationFailed(
                "The platform's registration endpoint accepted the tool but sent no client_id."
            )
        tool_part = answer.get(TOOL_CONFIGURATION)
        deployment_id = tool_part.get("deployment_id", "") if isinstance(tool_part, dict) else ""
        platform = config[PLATFORM_CONFIGURATION]
        new = NewRegistration(
            issuer=config["issuer"],
            client_id=client_id,
            deployment_id=str(deployment_id or ""),
            authorize_url=config["authorization_endpoint"],
            jwks_url=config["jwks_uri"],
            token_url=config.get("token_endpoint", ""),
            title=str(platform.get("product_family_code", ""))[:255],
            product_family=str(platform.get("product_family_code", ""))[:255],
            scopes=requested_scopes(config),
        )
        return await self.store.registry.run(
            lambda: self.store.add(new, secret=secret, actor="lms:" + config["issuer"][:70])
        )


__all__ = [
    "ROUTE",
    "DynamicRegistrationHandler",
    "RegistrationFailed",
    "fetch_platform_configuration",
    "registration_url",
]
