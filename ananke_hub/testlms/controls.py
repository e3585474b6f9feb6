"""What the test API changes of the token endpoint and the services (``--test-api`` only).

Each setting plays an LMS other than the default one, and `POST /_test/reset` puts
them all back:

- ``token_audience``: the `aud` the token endpoint requires of client assertions. By
  default the token URL (the spec's SHOULD); some platforms name another audience
  (Moodle checks none), which the tool's ``LMSRegistration.token_audience`` then names.
- ``scopes``: the scopes the token endpoint grants (short names as ``--ags-scopes``, or
  full URIs, NRPS's ``contextmembership.readonly`` included); an admin narrowing the
  tool's services while the tool runs. Launches keep advertising ``--ags-scopes``.
- ``token_lifetime``: seconds an access token lives (Moodle: 3600).
- ``page_size``: the most entries per page of line items, results and memberships,
  whatever `limit` the tool asks (AGS 2.0 section 3.2.7 and NRPS 2.0 section 2.4.2 let
  the platform send fewer), so that a few entries take several pages.

It also keeps the token requests it saw (``token_requests``), to show what a tool sent.
"""

from dataclasses import dataclass, field

from . import constants as C

#: Short scope names the test API accepts, and the scope each stands for.
SCOPE_NAMES = {**C.AGS_SCOPE_NAMES, C.NRPS_SCOPE.rsplit("/", 1)[1]: C.NRPS_SCOPE}
FIELDS = ("token_audience", "scopes", "token_lifetime", "page_size")


class ControlError(ValueError):
    """A setting the test API cannot use; the message says which field."""


@dataclass
class ServiceControls:
    token_audience: str | None = None
    scopes: tuple[str, ...] | None = None
    token_lifetime: int = C.ACCESS_TOKEN_LIFETIME
    page_size: int = C.MAX_PAGE_SIZE
    #: Each token request: its form, the assertion's header and claims when it was
    #: verified, and the status of the answer.
    token_requests: list[dict] = field(default_factory=list)

    def configure(self, doc: object) -> None:
        """Change the settings ``doc`` names; the others stay."""
        if not isinstance(doc, dict):
            raise ControlError('Send a JSON object, e.g. {"page_size": 2}.')
        unknown = sorted(set(doc) - set(FIELDS))
        if unknown:
            raise ControlError(f"Unknown fields {unknown}; send {', '.join(FIELDS)}.")
        if "token_audience" in doc:
            audience = doc["token_audience"]
            if audience is not None and (not isinstance(audience, str) or not audience):
                raise ControlError(f"token_audience must be a URL or null, got {audience!r}.")
            self.token_audience = audience
        if "scopes" in doc:
            self.scopes = _scopes(doc["scopes"])
        if "token_lifetime" in doc:
            self.token_lifetime = _whole(doc, "token_lifetime", 0, C.ACCESS_TOKEN_LIFETIME)
        if "page_size" in doc:
            self.page_size = _whole(doc, "page_size", 1, C.MAX_PAGE_SIZE)

    def to_json(self) -> dict:
        return {
            "token_audience": self.token_audience,
            "scopes": None if self.scopes is None else list(self.scopes),
            "token_lifetime": self.token_lifetime,
            "page_size": self.page_size,
        }


def _whole(doc: dict, name: str, minimum: int, maximum: int) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ControlError(f"{name} must be a whole number from {minimum} to {maximum}, got {value!r}.")
    return value


def _scopes(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError(f"scopes must be a list of scope names or null, got {value!r}.")
    scopes = []
    for name in value:
        scope = SCOPE_NAMES.get(name, name)
        if scope not in SCOPE_NAMES.values():
            raise ControlError(f"Unknown scope {name!r}; known: {', '.join(SCOPE_NAMES)}.")
        scopes.append(scope)
    return tuple(scopes)
