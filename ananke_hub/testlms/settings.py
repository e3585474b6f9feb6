"""What the test platform knows about itself and about the one tool registered with it.

The same object drives the running platform and the tests that craft their own
launches with :mod:`ananke_hub.testlms.tokens`. Every URL the platform publishes is
derived here from the issuer, so a later service (token, AGS, NRPS) adds a method,
not a setting.
"""

from dataclasses import dataclass

from . import constants as C
from .demo_data import DEFAULT_EXTRA_LEARNERS


@dataclass(frozen=True)
class PlatformSettings:
    #: The platform's issuer identifier (the `iss` claim) and the base of its URLs.
    issuer: str
    #: The client id the platform assigned to the tool (the `aud` of id_tokens).
    client_id: str
    #: The deployment of the tool on this platform (LTI 1.3 section 3.1.3).
    deployment_id: str
    #: Where a resource link points: the hub's page after login.
    tool_target_link_uri: str
    #: Where content selections point (Moodle's "Content Selection URL"); "" = the
    #: resource links' target.
    tool_content_selection_url: str = ""
    #: "window" or "embed" (an iframe of a course page, Moodle's "Embed").
    launch_container: str = "window"
    #: The tool's third-party login initiation URL (Security Framework 5.1.1).
    tool_login_url: str = ""
    #: The one redirect URI registered for the tool; /auth accepts only this one.
    tool_redirect_uri: str = ""
    #: The tool's public keyset: the token endpoint verifies client assertions with it.
    tool_jwks_url: str = ""
    #: Seconds /jwks waits before answering (to show a slow LMS does not block the hub).
    jwks_delay: float = 0.0
    #: The AGS scopes launches advertise and the token endpoint grants.
    ags_scopes: tuple[str, ...] = C.AGS_SCOPES
    #: Learners in the demo course besides the four launchable people (NRPS, AGS).
    roster_size: int = DEFAULT_EXTRA_LEARNERS
    #: Whether the test API (/_test/...: faults, roster changes, score tallies) is on.
    test_api: bool = False
    #: Moodle's strictness (docs/developer/testing.md, "The Moodle profile"): launches
    #: leave `lineitem` out once tool-made line items are bound to the link, the tool's
    #: keyset is fetched during every token request. False: the lenient platform.
    moodle: bool = True

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    # What an admin enters as LMSRegistration.* for this platform:
    @property
    def authorize_url(self) -> str:
        return self.url("/auth")

    @property
    def jwks_url(self) -> str:
        return self.url("/jwks")

    @property
    def access_token_url(self) -> str:
        """The OAuth 2 token endpoint (Security Framework 1.0 section 4.1); also the
        `aud` client assertions must name."""
        return self.url("/token")

    @property
    def grantable_scopes(self) -> tuple[str, ...]:
        """Every scope the token endpoint grants: the AGS scopes and NRPS."""
        return (*self.ags_scopes, C.NRPS_SCOPE)

    @property
    def gradebook_url(self) -> str:
        return self.url("/gradebook")

    # LTI Advantage service endpoints, advertised in launches:
    def lineitems_url(self, context_id: str) -> str:
        return self.url(f"/ags/{context_id}/lineitems")

    def lineitem_url(self, context_id: str, item_id: str, service: str = "") -> str:
        """A line item's URL (its `id`); ``service`` "scores" or "results" for those.

        The launch's own line item has the resource link's id as ``item_id``. Moodle's
        line item URLs carry a query (`.../lineitem?type_id=1`); ours do too, so that a
        tool that appends `/scores` to the whole URL fails here, not in Moodle.
        """
        path = f"{self.lineitems_url(context_id)}/{item_id}/lineitem"
        if service:
            path += "/" + service
        return f"{path}?type_id={C.TYPE_ID}"

    def memberships_url(self, context_id: str) -> str:
        return self.url(f"/nrps/{context_id}/memberships")
