"""The lti1p3platform classes, completed for tornado: registration, request, login, launch.

The library's abstract classes leave a few methods to the host framework; this module
fills them in and nothing more. What the library checks and builds is listed in the
package docstring, with its quirks.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request, TRequest
from tornado.httputil import HTTPServerRequest

from . import people
from .people import Person
from .services import ServiceSettings
from .urls import ServiceURLs


@dataclass(frozen=True)
class ToolSettings:
    """This platform's identity and what it knows about the one registered tool."""

    issuer: str
    client_id: str
    deployment_id: str
    login_url: str
    redirect_uri: str
    target_link_uri: str
    jwks_url: str

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path


class PlatformConf(LTI1P3PlatformConfAbstract):
    """The library's platform configuration: one registration, built once at start."""

    def init_platform_config(self, *, tool: ToolSettings, private_pem: str, public_pem: str):
        self._registration = (
            Registration()
            .set_iss(tool.issuer)
            .set_client_id(tool.client_id)
            .set_deployment_id(tool.deployment_id)
            .set_oidc_login_url(tool.login_url)
            # The library's "launch url" is the target_link_uri (LTI 1.3 section 4.4.1).
            .set_launch_url(tool.target_link_uri)
            .set_tool_key_set_url(tool.jwks_url)
            .set_platform_private_key(private_pem)
            .set_platform_public_key(public_pem)
        )

    def get_registration_by_params(self, **kwargs: Any) -> Registration:
        return self._registration


class TornadoRequest(Request):
    """A tornado request in the shape the library reads (``get_data``, ``form_data``)."""

    def build_metadata(self, request: HTTPServerRequest) -> TRequest:
        def last_values(arguments: dict[str, list[bytes]]) -> dict[str, str]:
            return {k: v[-1].decode("utf-8", "replace") for k, v in arguments.items() if v}

        return {
            "method": request.method,
            "form_data": last_values(request.body_arguments),
            "get_data": last_values(request.query_arguments),
            "headers": request.headers,
            "content_type": request.headers.get("Content-Type"),
            "path": request.path,
            # The service handlers put the parsed body here (they know its media type).
            "json": None,
        }


@dataclass(frozen=True)
class FormPost:
    """A page that POSTs ``fields`` to ``action`` at once (the browser's next request)."""

    action: str
    fields: dict[str, str]


class FormPostOIDCLogin(OIDCLoginAbstract):
    """Third-party initiated login (Security Framework 1.0 section 5.1.1).

    The library gives a GET URL; a POST of the same parameters is what Moodle sends and
    keeps login_hint out of the tool's access log.
    """

    def set_lti_message_hint(self, **kwargs: Any) -> None:
        # Opaque to the tool: it comes back unchanged in the authentication request.
        self._lti_message_hint = kwargs["link_id"]

    def get_redirect(self, url: str) -> FormPost:
        parts = urlsplit(url)
        action = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return FormPost(action, dict(parse_qsl(parts.query, keep_blank_values=True)))


class AuthRequestRefused(Exception):
    """The authentication request fails a check the library leaves to the platform."""


class MessageLaunch(LTIAdvantageMessageLaunchAbstract):
    """The authorization endpoint's work: check the request, build and sign the id_token."""

    def __init__(
        self,
        request: Request,
        conf: PlatformConf,
        *,
        tool: ToolSettings,
        services: ServiceSettings,
        session: Person | None,
    ):
        super().__init__(request, conf)
        self.tool = tool
        self.services = services
        self.session = session

    def prepare_launch(self, preflight_response: dict[str, Any]) -> None:
        # The library has checked nonce, state, redirect_uri and client_id. What its README
        # leaves to the platform: the registered redirect_uri (Security Framework 1.0
        # section 5.1.1.2), the logged-in user against login_hint, and lti_message_hint.
        redirect_uri = preflight_response.get("redirect_uri")
        if redirect_uri != self.tool.redirect_uri:
            raise AuthRequestRefused(
                f"redirect_uri {redirect_uri!r} is not the registered {self.tool.redirect_uri!r}."
            )
        if self.session is None:
            raise AuthRequestRefused(
                f"No one is logged in to this platform: start at {self.tool.url('/')}."
            )
        if preflight_response.get("login_hint") != self.session.sub:
            raise AuthRequestRefused(
                f"login_hint is not the person logged in here ({self.session.name})."
            )
        link = people.LINKS.get(preflight_response.get("lti_message_hint") or "")
        if link is None:
            raise AuthRequestRefused("lti_message_hint names no activity of this platform.")
        user = self.session
        course = people.COURSE
        self.set_user_data(user.sub, list(user.roles), user.name, user.email, user.username)
        self.set_resource_link_claim(link.id, title=link.title)
        self.set_launch_context_claim(
            course.id, [people.COURSE_OFFERING], course.title, course.label
        )
        self.set_custom_parameters_claim({"username": user.username})
        self.set_launch_presentation_claim("window", self.tool.url("/"))
        # The library computes the AGS claim's scopes from these switches (see the
        # package docstring for what it advertises); the services check tokens the same way.
        urls, ags = ServiceURLs(self.tool.issuer), self.services
        self.set_ags(
            urls.lineitems(course.id) if ags.container else None,
            urls.launch_lineitem(course.id, link.id),
            allow_creating_lineitems=ags.manage_lineitems,
            results_service_enabled=ags.results,
            scores_service_enabled=ags.scores,
        )
        self.set_nrps(urls.memberships(course.id))

    def render_launch_form(self, launch_data: dict[str, Any], **kwargs: Any) -> FormPost:
        # launch_url is the redirect_uri checked above; the handler renders the form.
        fields = {"id_token": launch_data["id_token"], "state": launch_data["state"]}
        return FormPost(launch_data["launch_url"], fields)
