"""The LMS side of LTI Deep Linking 2.0 (https://www.imsglobal.org/spec/lti-dl/v2p0).

- ``POST /deeplink`` (the launch page's "Select content"): logs the chosen person in to
  the platform and starts a login at the tool whose ``lti_message_hint`` names a new
  content selection; ``/auth`` then posts an ``LtiDeepLinkingRequest`` instead of a
  resource link launch (``handlers/oidc.py``).
- ``POST /deeplink/return`` (the request's ``deep_link_return_url``): takes the tool's
  ``LtiDeepLinkingResponse`` (section 4.5): a JWT signed with a key of the tool's keyset,
  ``iss`` the client id, ``aud`` this platform, the registered deployment, a fresh
  nonce, the request's ``data`` echoed. Each ``ltiResourceLink`` becomes an activity of
  the course, with its custom parameters and, if it asks for one, its grade column
  (``lineItem``, section 3.1.4). Anything wrong: a 400 page and nothing is created.
"""

import jwt

from .. import constants as C
from .. import demo_data
from ..client_auth import KeysetError
from .base import PlatformError, PlatformHandler


class DeepLinkStartHandler(PlatformHandler):
    def post(self):
        user = demo_data.find_user(self.get_body_argument("user", ""))
        context = demo_data.CONTEXTS.get(self.get_body_argument("context", ""))
        if user is None or context is None:
            raise PlatformError("Unknown person or course: choose one on the launch page.")
        if context.roles_of(user.sub) is None:
            raise PlatformError(f"{user.name} is not enrolled in {context.title}.")
        multiple = self.get_body_argument("accept_multiple", "true") != "false"
        data = self.settings["platform_store"].open_deep_link(context.id, user.sub, multiple)
        self.set_session_user(user)
        self.log.info("deeplink: user:%s context:%s -> content selection", user.sub, context.id)
        self.render_autopost(
            self.platform.tool_login_url,
            self.login_initiation(user, self.content_selection_url, C.DEEP_LINK_HINT + data),
            title=f"Select content for {context.title}",
        )


class DeepLinkReturnHandler(PlatformHandler):
    def check_xsrf_cookie(self):
        # The tool's form post is cross-site by design; the signed JWT, its nonce and the
        # echoed `data` (which names one open request) are what bind it.
        pass

    async def post(self):
        store = self.settings["platform_store"]
        claims = await self.verified_response(self.get_body_argument("JWT", ""))
        data = claims.get(C.DL_DATA)
        request = store.deep_link_request(data) if isinstance(data, str) else None
        if request is None:
            raise PlatformError(
                "The response does not echo the `data` of an open content selection "
                f"({C.DL_DATA}): the tool must send back the request's data unchanged."
            )
        items = claims.get(C.DL_CONTENT_ITEMS, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise PlatformError(f"{C.DL_CONTENT_ITEMS} must be a list of content items.")
        if len(items) > 1 and not request.accept_multiple:
            raise PlatformError(
                f"The request accepted one item (accept_multiple false); the tool sent {len(items)}."
            )
        for item in items:
            self.check_item(item)
        # All checked: the request is answered, the activities made.
        del store.open_selections[data]
        course = store.course(request.context_id)
        added = [
            store.add_link(
                course.id,
                item.get("title") or "Jupyter",
                {k: str(v) for k, v in (item.get("custom") or {}).items()},
                item.get("lineItem"),
            )
            for item in items
        ]
        self.log.info(
            "deeplink: %d activity(ies) added to %s: %s",
            len(added),
            course.id,
            ", ".join(link.id for link in added),
        )
        self.render("deeplink_done.html", context=course.context, added=added)

    def check_item(self, item: dict) -> None:
        if item.get("type") != C.DL_RESOURCE_LINK:
            raise PlatformError(
                f"Content item type {item.get('type')!r} was not asked for (accept_types: "
                f"{C.DL_RESOURCE_LINK})."
            )
        custom = item.get("custom", {})
        if not isinstance(custom, dict) or not all(isinstance(v, str) for v in custom.values()):
            raise PlatformError("A content item's custom parameters must map names to strings.")
        line_item = item.get("lineItem")
        if line_item is None:
            return
        maximum = line_item.get("scoreMaximum") if isinstance(line_item, dict) else None
        if not isinstance(maximum, int | float) or isinstance(maximum, bool) or maximum <= 0:
            raise PlatformError("A lineItem needs a scoreMaximum above 0 (section 3.1.4).")
        if not isinstance(line_item.get("label", ""), str):
            raise PlatformError("A lineItem's label must be a string.")
        line_item.setdefault("label", item.get("title") or "Jupyter")

    async def verified_response(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise PlatformError("The response is not a JWT (form field JWT).") from None
        try:
            key = await self.settings["platform_tool_keyset"].key(header.get("kid") or "")
        except KeysetError as exc:
            raise PlatformError(str(exc)) from None
        if key is None:
            raise PlatformError(f"No key {header.get('kid')!r} in the tool's keyset.")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[C.SIGNING_ALGORITHM],
                audience=self.platform.issuer,
                issuer=self.platform.client_id,
                leeway=C.ASSERTION_LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "nonce"]},
            )
        except jwt.InvalidSignatureError:
            raise PlatformError("The response's signature does not verify.") from None
        except jwt.InvalidAudienceError:
            raise PlatformError(
                f"The response's aud must be this platform ({self.platform.issuer})."
            ) from None
        except jwt.InvalidIssuerError:
            raise PlatformError(
                f"The response's iss must be the client id {self.platform.client_id!r}."
            ) from None
        except jwt.PyJWTError as exc:
            raise PlatformError(f"The response is not valid: {exc}.") from None
        expected = {
            C.MESSAGE_TYPE: C.MESSAGE_TYPE_DEEP_LINKING_RESPONSE,
            C.VERSION: C.LTI_VERSION,
            C.DEPLOYMENT_ID: self.platform.deployment_id,
        }
        for claim, value in expected.items():
            if claims.get(claim) != value:
                raise PlatformError(f"The response's {claim} must be {value!r}.")
        if not self.settings["platform_replay_guard"].first_use(
            "dl-nonce:" + str(claims["nonce"]), float(claims["exp"])
        ):
            raise PlatformError("This response was sent before (same nonce).")
        return claims


ROUTES = [
    (r"/deeplink", DeepLinkStartHandler),
    (r"/deeplink/return", DeepLinkReturnHandler),
]
