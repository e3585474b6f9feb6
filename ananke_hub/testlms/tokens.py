"""Building and signing LTI 1.3 id_tokens.

The platform's /auth uses these two functions, and so can tests that craft their own
launches, good or bad:

    claims = launch_claims(settings, demo_data.ALAN, demo_data.HOMEWORK, nonce,
                           overrides={"aud": "someone-else", C.DEPLOYMENT_ID: None})
    id_token = sign_id_token(claims, other_key, headers={"kid": "unknown"})

``overrides`` replaces top-level claims, and a value of None removes the claim, so a
test can produce any wrong or missing field.
"""

import time
from collections.abc import Mapping
from typing import Any

import jwt

from ..keys import SigningKey
from . import constants as C
from . import demo_data
from .demo_data import Context, ResourceLink, User
from .settings import PlatformSettings


def launch_claims(
    settings: PlatformSettings,
    user: User,
    link: ResourceLink,
    nonce: str,
    *,
    context: Context | None = None,
    now: float | None = None,
    lifetime: int = C.ID_TOKEN_LIFETIME,
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """The claims of a resource link launch (LTI 1.3 section 5.3) of ``link`` by ``user``.

    ``context`` defaults to the demo course that holds ``link``. ``now`` (seconds since
    the epoch) sets `iat`; `exp` is `iat + lifetime`.
    """
    if context is None:
        found = demo_data.find_link(link.id)
        if found is None:
            raise LookupError(f"No demo course holds the resource link {link.id!r}; pass context=.")
        context = found[0]
    iat = int(time.time() if now is None else now)
    claims = {
        # OpenID Connect core claims (https://openid.net/specs/openid-connect-core-1_0.html#IDToken)
        "iss": settings.issuer,
        "aud": settings.client_id,
        "sub": user.sub,
        "iat": iat,
        "exp": iat + lifetime,
        "nonce": nonce,
        # OIDC standard claims for the person (LTI 1.3 section 5.3.6.1)
        "name": user.name,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "email": user.email,
        C.MESSAGE_TYPE: C.MESSAGE_TYPE_RESOURCE_LINK,
        C.VERSION: C.LTI_VERSION,
        C.DEPLOYMENT_ID: settings.deployment_id,
        C.TARGET_LINK_URI: settings.tool_target_link_uri,
        C.RESOURCE_LINK: {"id": link.id, "title": link.title},
        C.CONTEXT: {
            "id": context.id,
            "label": context.label,
            "title": context.title,
            "type": list(context.type),
        },
        C.ROLES: demo_data.launch_roles(user, context),
        # Moodle brings its username only as a custom parameter (`username=$User.username`).
        C.CUSTOM: {"username": user.username, **dict(link.custom)},
        C.LAUNCH_PRESENTATION: {
            "locale": "en",
            "document_target": "window",
            "return_url": settings.url("/"),
        },
        C.TOOL_PLATFORM: {
            "guid": settings.issuer,
            "name": "Ananke test platform",
            "product_family_code": "ananke-test-platform",
        },
        C.AGS_ENDPOINT: {
            "scope": list(settings.ags_scopes),
            "lineitems": settings.lineitems_url(context.id),
            "lineitem": settings.lineitem_url(context.id, link.id),
        },
        C.NRPS: {
            "context_memberships_url": settings.memberships_url(context.id),
            "service_versions": list(C.NRPS_SERVICE_VERSIONS),
        },
    }
    for name, value in (overrides or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign_id_token(
    claims: Mapping[str, Any],
    signing_key: SigningKey,
    *,
    headers: Mapping[str, Any] | None = None,
    algorithm: str = C.SIGNING_ALGORITHM,
) -> str:
    """A compact JWS of ``claims``, signed with ``signing_key`` and naming its `kid`.

    ``headers`` adds or replaces header fields; None removes one (e.g. ``{"kid": None}``).
    """
    header = {"kid": signing_key.kid}
    for name, value in (headers or {}).items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return jwt.encode(dict(claims), signing_key.private_key, algorithm=algorithm, headers=header)
