"""The LMS registration: what the platform told us when the tool was registered.

Set once, in ``30_lms.py``, as ``c.LMSRegistration.<trait>``. The hub's authenticator
and Kore (which talks to the LMS for grades and rosters) both read it from there, so an
admin never writes the same URL twice.
"""

from urllib.parse import urlparse

from traitlets import List, TraitError, Unicode, Union, validate
from traitlets.config import Configurable


def _check_url(value: str, name: str) -> str:
    if not value:
        return value
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise TraitError(
            f"LMSRegistration.{name} must be an http(s) URL with a host, got {value!r}."
        )
    return value


class LMSRegistration(Configurable):
    """One LTI 1.3 platform registration (IMS LTI 1.3 section 3, Security Framework 1.0)."""

    issuer = Unicode(
        "",
        config=True,
        help="""The platform's issuer identifier, exactly as it appears in the `iss` claim.

        For Moodle this is the site URL, e.g. `https://moodle.example.edu`.
        """,
    )

    client_id = Union(
        [Unicode(), List(Unicode())],
        default_value=[],
        config=True,
        help="""The client id(s) the platform assigned to this tool.

        A single string or a list of strings: each is accepted as the `aud` of an id_token.
        Moodle shows it in the tool's configuration details.
        """,
    )

    deployment_ids = List(
        Unicode(),
        default_value=[],
        config=True,
        help="""Deployment ids of this tool on the platform that may launch into the hub.

        Launches with any other `deployment_id` are refused. Empty (the default) accepts any
        deployment of the registered client id; the hub logs a warning at start-up.
        """,
    )

    authorize_url = Unicode(
        "",
        config=True,
        help="""The platform's OIDC authentication request URL (Moodle: `<site>/mod/lti/auth.php`).""",
    )

    jwks_url = Unicode(
        "",
        config=True,
        help="""The platform's public keyset URL (Moodle: `<site>/mod/lti/certs.php`).""",
    )

    access_token_url = Unicode(
        "",
        config=True,
        help="""The platform's OAuth 2 token URL for LTI Advantage services
        (Moodle: `<site>/mod/lti/token.php`). Used by Kore for grades and rosters.""",
    )

    token_audience = Unicode(
        "",
        config=True,
        help="""The `aud` of client assertions sent to the token URL.

        Empty means the access token URL itself, which is what Moodle expects.
        """,
    )

    @validate("authorize_url", "jwks_url", "access_token_url")
    def _valid_url(self, proposal):
        return _check_url(proposal.value, proposal.trait.name)

    @validate("issuer")
    def _valid_issuer(self, proposal):
        value = proposal.value
        if value and (urlparse(value).query or urlparse(value).fragment):
            raise TraitError(
                "LMSRegistration.issuer must not contain a query or fragment "
                f"(IMS Security Framework 5.1.2), got {value!r}."
            )
        return value

    @property
    def client_ids(self) -> list[str]:
        """The configured client ids as a list, whether one string or several were given."""
        value = self.client_id
        if isinstance(value, str):
            return [value] if value else []
        return list(value)

    @property
    def is_configured(self) -> bool:
        return bool(self.issuer and self.client_ids and self.authorize_url and self.jwks_url)

    def missing(self) -> list[str]:
        """Names of the settings a launch needs that are still empty."""
        needed = {
            "issuer": self.issuer,
            "client_id": self.client_ids,
            "authorize_url": self.authorize_url,
            "jwks_url": self.jwks_url,
        }
        return [name for name, value in needed.items() if not value]
