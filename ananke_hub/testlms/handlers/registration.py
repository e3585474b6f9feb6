"""LTI Dynamic Registration 1.0, the platform's side (https://www.imsglobal.org/spec/lti-dr/v1p0).

- ``GET /.well-known/openid-configuration``: the platform's OpenID configuration with its
  LTI part (section 3.6), what a tool fetches first;
- ``GET /admin/tools``: Moodle's "Manage tools" in small: a Tool URL field; "Add" opens the
  pasted registration URL with ``openid_configuration`` and a fresh ``registration_token``
  (section 3.3), as Moodle does in its frame;
- ``POST /register``: the registration endpoint (section 3.5.2): checks the bearer
  token (single use) and the tool configuration, and answers with the client id and
  deployment id this platform was started with (``--client-id``, ``--deployment-id``).

The platform's tool URLs are fixed at its start (``--tool-login-url`` ...); a tool that
registers with other ones is refused with 400 and a message saying which, so a test
sees a tool that sends the wrong configuration.
"""

import json
import secrets
from urllib.parse import urlencode, urlparse, urlunparse

from ...lti_spec import (
    MESSAGE_TYPE_DEEP_LINKING_REQUEST,
    MESSAGE_TYPE_RESOURCE_LINK,
    PLATFORM_CONFIGURATION,
    TOOL_CONFIGURATION,
)
from .. import constants as C
from .base import PlatformError, PlatformHandler

#: The registration endpoint's path.
REGISTER_PATH = "/register"


def openid_configuration(platform) -> dict:
    return {
        "issuer": platform.issuer,
        "authorization_endpoint": platform.authorize_url,
        "token_endpoint": platform.access_token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "jwks_uri": platform.jwks_url,
        "registration_endpoint": platform.url(REGISTER_PATH),
        "scopes_supported": ["openid", *platform.grantable_scopes],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["iss", "aud", "sub", "name", "given_name", "family_name", "email"],
        PLATFORM_CONFIGURATION: {
            "product_family_code": "ananke-test-platform",
            "version": "1.0",
            "messages_supported": [
                {"type": MESSAGE_TYPE_RESOURCE_LINK},
                {"type": MESSAGE_TYPE_DEEP_LINKING_REQUEST},
            ],
            "variables": ["User.username"],
        },
    }


class OpenIDConfigurationHandler(PlatformHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(openid_configuration(self.platform)))


class ToolsPageHandler(PlatformHandler):
    """The admin's page: paste a tool's registration URL."""

    def get(self):
        url = self.get_argument("url", "").strip()
        if not url:
            registrations = self.settings["platform_registrations"]
            return self.render("tools.html", registrations=registrations)
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PlatformError(f"The Tool URL must be an http(s) URL, not {url!r}.")
        token = secrets.token_urlsafe(24)
        self.settings["platform_registration_tokens"].add(token)
        extra = urlencode(
            {
                "openid_configuration": self.platform.url("/.well-known/openid-configuration"),
                "registration_token": token,
            }
        )
        query = f"{parsed.query}&{extra}" if parsed.query else extra
        self.redirect(urlunparse(parsed._replace(query=query)))


class RegisterHandler(PlatformHandler):
    """The registration endpoint: a JSON POST with the registration token."""

    def check_xsrf_cookie(self):
        return  # a server-to-server call, authorized by the registration token

    def refuse(self, status: int, error: str, description: str) -> None:
        self.log.warning("register: refused (%s): %s", error, description)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error, "error_description": description}))

    def post(self):
        auth = self.request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        tokens = self.settings["platform_registration_tokens"]
        if token not in tokens:
            return self.refuse(401, "invalid_token", "The registration token is not valid.")
        try:
            tool = json.loads(self.request.body)
        except ValueError:
            return self.refuse(400, "invalid_client_metadata", "The body is not JSON.")
        problem = self.check(tool if isinstance(tool, dict) else {})
        if problem:
            return self.refuse(400, "invalid_client_metadata", problem)
        tokens.discard(token)  # single use
        for message in tool[TOOL_CONFIGURATION].get("messages") or []:
            if isinstance(message, dict) and message.get("type") == C.MESSAGE_TYPE_DEEP_LINKING:
                # registration_helper.php: lti_toolurl_ContentItemSelectionRequest.
                self.settings["platform_tool_overrides"]["content_selection_url"] = str(
                    message.get("target_link_uri") or ""
                )
        self.settings["platform_registrations"].append(
            {"client_name": tool.get("client_name", ""), "scope": tool.get("scope", "")}
        )
        answer = dict(tool)
        answer["client_id"] = self.platform.client_id
        answer[TOOL_CONFIGURATION] = {
            **tool[TOOL_CONFIGURATION],
            "deployment_id": self.platform.deployment_id,
        }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))

    def check(self, tool: dict) -> str:
        platform = self.platform
        if platform.moodle and (problem := moodle_registration_problem(tool)):
            return problem
        expected = {
            "initiate_login_uri": platform.tool_login_url,
            "jwks_uri": platform.tool_jwks_url,
        }
        for name, value in expected.items():
            if value and tool.get(name) != value:
                return f"{name} is {tool.get(name)!r}; this platform expects {value!r}."
        if platform.tool_redirect_uri and platform.tool_redirect_uri not in (
            tool.get("redirect_uris") or []
        ):
            return f"redirect_uris do not contain {platform.tool_redirect_uri!r}."
        part = tool.get(TOOL_CONFIGURATION)
        if not isinstance(part, dict):
            return f"The tool configuration has no {TOOL_CONFIGURATION}."
        types = {m.get("type") for m in part.get("messages") or [] if isinstance(m, dict)}
        if MESSAGE_TYPE_RESOURCE_LINK not in types:
            return f"The tool registers no {MESSAGE_TYPE_RESOURCE_LINK} message."
        unknown = [
            s
            for s in str(tool.get("scope", "")).split()
            if s not in (*C.AGS_ALL_SCOPES, C.NRPS_SCOPE)
        ]
        if unknown:
            return f"Unknown scopes: {', '.join(unknown)}."
        return ""


def _domain(url: str) -> str:
    """Host and port of a URL or a bare domain, without a leading "www." (as Moodle's
    lti_get_domain_from_url compares them)."""
    rest = url.split("://", 1)[-1].split("/", 1)[0].lower()
    return rest.removeprefix("www.")


def moodle_registration_problem(tool: dict) -> str:
    """What Moodle 5.1 refuses in a tool's registration (``registration_helper.php``,
    ``registration_to_config``), or ""."""
    for name in (
        "response_types",
        "initiate_login_uri",
        "redirect_uris",
        "client_name",
        "jwks_uri",
        "token_endpoint_auth_method",
    ):
        if not tool.get(name):
            return f"missing_{name}: Moodle requires {name}."
    part = tool.get(TOOL_CONFIGURATION)
    if not isinstance(part, dict):
        return f"missing_{TOOL_CONFIGURATION}"
    domain = part.get("domain")
    if not domain:
        return "missing_domain: Moodle requires the tool configuration's domain."
    target = part.get("target_link_uri") or f"https://{domain}"
    if _domain(domain) != _domain(target):
        return "domain_targetlinkuri_mismatch: the domain is not target_link_uri's."
    if "id_token" not in (tool.get("response_types") or []):
        return "invalid_response_types: Moodle requires id_token."
    if not isinstance(tool.get("redirect_uris"), list):
        return "invalid_redirect_uris: Moodle requires a list."
    if tool.get("token_endpoint_auth_method") != "private_key_jwt":
        return "invalid_token_endpoint_auth_method: Moodle requires private_key_jwt."
    if tool.get("application_type", "web") != "web":
        return "invalid_application_type: Moodle accepts web only."
    return ""


ROUTES = [
    (r"/\.well-known/openid-configuration", OpenIDConfigurationHandler),
    (r"/admin/tools", ToolsPageHandler),
    (REGISTER_PATH, RegisterHandler),
]
