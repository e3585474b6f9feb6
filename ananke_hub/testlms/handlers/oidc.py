"""The OIDC authorization endpoint: checks the tool's authentication request, answers
with a signed id_token.

Security Framework 1.0 section 5.1.1.2-5.1.1.3
(https://www.imsglobal.org/spec/security/v1p0/#step-2-authentication-request): the tool
redirects the browser here after login initiation; the platform checks the request
against the registration and its own session, then form-POSTs `id_token` and `state`
to the registered redirect URI.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from .. import constants as C
from .. import demo_data
from ..demo_data import Context, ResourceLink, User
from ..settings import PlatformSettings
from ..store import DeepLinkRequest, PlatformStore
from ..tokens import launch_claims, sign_id_token
from .base import PlatformError, PlatformHandler

SPEC = "IMS Security Framework 1.0 section 5.1.1.2"
AUTH_REQUEST_PARAMS = (
    *C.AUTH_REQUEST_FIXED,
    "client_id",
    "redirect_uri",
    "login_hint",
    "lti_message_hint",
    "nonce",
    "state",
)


class AuthRequestError(Exception):
    """The authentication request cannot be answered; the message says why."""


@dataclass(frozen=True)
class AuthRequest:
    user: User
    context: Context
    #: None for a content selection (Deep Linking request): it names no activity.
    link: ResourceLink | None
    nonce: str
    state: str | None
    #: The content selection's `data` (the key of the platform's open request).
    deep_link_data: str | None = None
    deep_link: DeepLinkRequest | None = None


def check_auth_request(
    params: Mapping[str, str | None],
    settings: PlatformSettings,
    session_user: User | None,
    store: PlatformStore | None = None,
) -> AuthRequest:
    """Validate the request parameters against the registration and the session."""
    for name, required in C.AUTH_REQUEST_FIXED.items():
        value = params.get(name)
        if value != required:
            got = "it is missing" if value is None else f"got {value!r}"
            raise AuthRequestError(f"{name} must be {required!r} ({SPEC}); {got}.")
    if params.get("client_id") != settings.client_id:
        raise AuthRequestError(
            f"Unknown client_id {params.get('client_id')!r}: this platform knows only "
            f"{settings.client_id!r}. Check the tool's client id setting."
        )
    # Exact match, no prefix or normalisation: the id_token must go nowhere else.
    if params.get("redirect_uri") != settings.tool_redirect_uri:
        raise AuthRequestError(
            f"redirect_uri {params.get('redirect_uri')!r} is not the registered one "
            f"({settings.tool_redirect_uri!r}). The tool must send exactly that URL."
        )
    login_hint = params.get("login_hint")
    if not login_hint:
        raise AuthRequestError("login_hint is missing: the tool must send back the one it got.")
    if session_user is None:
        raise AuthRequestError(
            "No one is logged in to the platform in this browser. "
            f"Start the launch from the platform's launch page {settings.url('/')}."
        )
    if login_hint != session_user.sub:
        raise AuthRequestError(
            f"login_hint {login_hint!r} is not the person logged in to the platform "
            f"({session_user.name}). Start the launch again from the launch page."
        )
    hint = params.get("lti_message_hint") or ""
    deep_link = data = None
    if hint.startswith(C.DEEP_LINK_HINT) and store is not None:
        data = hint[len(C.DEEP_LINK_HINT) :]
        deep_link = store.deep_link_request(data)
        if deep_link is None or deep_link.user_sub != session_user.sub:
            raise AuthRequestError(
                "lti_message_hint names no open content selection of this person: start "
                "again from the launch page (Select content)."
            )
        found = (demo_data.CONTEXTS[deep_link.context_id], None)
    else:
        found = store.find_link(hint) if store is not None else demo_data.find_link(hint)
    if found is None:
        raise AuthRequestError(
            f"lti_message_hint {params.get('lti_message_hint')!r} names no activity: "
            "the tool must send back the one it got."
        )
    context, link = found
    if context.roles_of(session_user.sub) is None:
        raise AuthRequestError(f"{session_user.name} is not enrolled in {context.title}.")
    nonce = params.get("nonce")
    if not nonce:
        raise AuthRequestError(f"nonce is missing ({SPEC}): the tool must send one.")
    return AuthRequest(session_user, context, link, nonce, params.get("state"), data, deep_link)


def moodle_sends_lineitem(course, link_id: str) -> bool:
    """Whether Moodle puts `lineitem` into a launch from ``link_id``.

    Moodle's gradebookservices (``get_launch_parameters``): with the activity's own
    ("coupled") grade item and no tool-made line item bound to the link, that one; with
    exactly one bound line item and no coupled item, that one; otherwise none ("if a link
    has more than one attached grade items, per spec we do not populate line item url";
    one bound item besides the coupled one counts as more than one).
    """
    if course is None:
        return True
    bound = [
        item
        for item in course.lineitems.values()
        if item.resource_link_id == link_id and not item.coupled
    ]
    coupled = any(item.coupled and item.item_id == link_id for item in course.lineitems.values())
    return (coupled and not bound) or (len(bound) == 1 and not coupled)


class AuthorizationHandler(PlatformHandler):
    def check_xsrf_cookie(self):
        # The tool's POST is cross-site by design; the request is bound to this browser
        # by the session cookie (login_hint) and to the tool's session by state and nonce.
        pass

    async def get(self):
        params = {name: self.get_argument(name, None, strip=False) for name in AUTH_REQUEST_PARAMS}
        try:
            request = check_auth_request(
                params, self.platform, self.session_user(), self.settings["platform_store"]
            )
        except AuthRequestError as e:
            raise PlatformError(str(e)) from None
        if request.deep_link is not None:
            self.post_deep_linking_request(request)
            return
        overrides = None
        if self.platform.moodle and not moodle_sends_lineitem(
            self.settings["platform_store"].course(request.context.id), request.link.id
        ):
            ags = dict(launch_claims(self.platform, request.user, request.link, "")[C.AGS_ENDPOINT])
            del ags["lineitem"]
            overrides = {C.AGS_ENDPOINT: ags}
        claims = launch_claims(
            self.platform,
            request.user,
            request.link,
            request.nonce,
            context=request.context,
            overrides=overrides,
        )
        id_token = sign_id_token(claims, self.keys.signing_key())
        fields = {"id_token": id_token}
        if request.state is not None:
            fields["state"] = request.state
        self.log.info(
            "auth: user:%s link:%s -> id_token posted to the tool",
            request.user.sub,
            request.link.id,
        )
        self.render_autopost(
            self.platform.tool_redirect_uri, fields, title="Signing in to the tool"
        )

    post = get

    def post_deep_linking_request(self, request: AuthRequest) -> None:
        """An LtiDeepLinkingRequest (Deep Linking 2.0 section 4.4) for the course."""
        any_link = demo_data.ResourceLink("", "")
        settings = {
            "deep_link_return_url": self.platform.url("/deeplink/return"),
            "accept_types": [C.DL_RESOURCE_LINK],
            "accept_presentation_document_targets": ["iframe", "window"],
            "accept_multiple": request.deep_link.accept_multiple,
            "auto_create": True,
            "title": "Jupyter",
            "data": request.deep_link_data,
        }
        claims = launch_claims(
            self.platform,
            request.user,
            any_link,
            request.nonce,
            context=request.context,
            overrides={
                C.MESSAGE_TYPE: C.MESSAGE_TYPE_DEEP_LINKING,
                C.RESOURCE_LINK: None,  # a content selection names no activity
                C.DL_SETTINGS: settings,
            },
        )
        claims[C.AGS_ENDPOINT] = {
            k: v for k, v in claims[C.AGS_ENDPOINT].items() if k != "lineitem"
        }
        fields = {"id_token": sign_id_token(claims, self.keys.signing_key())}
        if request.state is not None:
            fields["state"] = request.state
        self.log.info("auth: user:%s content selection -> id_token posted", request.user.sub)
        self.render_autopost(self.platform.tool_redirect_uri, fields, title="Select content")


ROUTES = [(r"/auth", AuthorizationHandler)]
