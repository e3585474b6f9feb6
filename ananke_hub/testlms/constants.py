"""The LTI 1.3 vocabulary the test platform speaks, as data.

The spec's claim names and role URIs live in ananke_hub/lti_spec.py (shared with the
tool); what is the platform's own choice (fixed parameters, token lifetime) is here.
"""

from ..lti_spec import (  # noqa: F401 (re-exported for the platform's modules)
    ACTIVITY_PROGRESS,
    AGS_ALL_SCOPES,
    AGS_ENDPOINT,
    AGS_MEDIA_LINEITEM,
    AGS_MEDIA_LINEITEMS,
    AGS_MEDIA_RESULTS,
    AGS_MEDIA_SCORE,
    AGS_SCOPE_LINEITEM,
    AGS_SCOPE_LINEITEM_READONLY,
    AGS_SCOPE_RESULT_READONLY,
    AGS_SCOPE_SCORE,
    AGS_SCOPES,
    CLIENT_ASSERTION_TYPE,
    CLIENT_CREDENTIALS_GRANT,
    CONTEXT,
    COURSE_OFFERING,
    CUSTOM,
    DEPLOYMENT_ID,
    DL_CONTENT_ITEMS,
    DL_DATA,
    DL_RESOURCE_LINK,
    DL_SETTINGS,
    FORM_CONTENT_TYPE,
    GRADING_FULLY_GRADED,
    GRADING_PROGRESS,
    LAUNCH_PRESENTATION,
    LTI_VERSION,
    MEMBER_ACTIVE,
    MEMBER_DELETED,
    MEMBER_INACTIVE,
    MEMBER_STATUSES,
    MESSAGE_TYPE,
    MESSAGE_TYPE_DEEP_LINKING,
    MESSAGE_TYPE_DEEP_LINKING_RESPONSE,
    MESSAGE_TYPE_RESOURCE_LINK,
    NRPS,
    NRPS_MEDIA_MEMBERSHIPS,
    NRPS_SCOPE,
    NRPS_SERVICE_VERSIONS,
    RESOURCE_LINK,
    ROLE_INSTITUTION_ADMINISTRATOR,
    ROLE_INSTRUCTOR,
    ROLE_LEARNER,
    ROLE_SYSTEM_ADMINISTRATOR,
    ROLE_TEACHING_ASSISTANT,
    ROLES,
    TARGET_LINK_URI,
    TOOL_PLATFORM,
    VERSION,
)

# --- Security Framework 1.0, OIDC authentication request:
# https://www.imsglobal.org/spec/security/v1p0/#step-2-authentication-request
# Parameters whose value is fixed by the spec, with the value it requires.
AUTH_REQUEST_FIXED = {
    "scope": "openid",
    "response_type": "id_token",
    "response_mode": "form_post",
    "prompt": "none",
}

#: Moodle's id_tokens live 60 seconds; the platform does the same so that a hub that
#: works here does not rely on a longer lifetime.
ID_TOKEN_LIFETIME = 60
#: Seconds a content selection (Deep Linking request) waits for the tool's answer.
DEEP_LINK_LIFETIME = 3600
#: How a login initiation's lti_message_hint names a content selection, not an activity.
DEEP_LINK_HINT = "deeplink:"
SIGNING_ALGORITHM = "RS256"

# --- LTI Advantage services (token endpoint, AGS, NRPS): the platform's own choices.

#: Seconds an access token lives (Moodle: LTI_ACCESS_TOKEN_LIFE, one hour).
ACCESS_TOKEN_LIFETIME = 3600
#: Seconds of clock skew allowed on a client assertion's `exp` and `iat`.
ASSERTION_LEEWAY = 5
#: Seconds the tool's keyset is trusted before it is fetched again. An unknown `kid`
#: makes the platform fetch it at once (the tool rotated its key).
TOOL_KEYSET_MAX_AGE = 300
#: Seconds to wait for the tool's keyset.
TOOL_KEYSET_TIMEOUT = 10

#: Entries per page of line items, results and memberships when the tool sends no
#: `limit`: small, so that a tool that does not follow `Link: rel="next"` misses some.
DEFAULT_PAGE_SIZE = 10
#: The largest page the platform sends, whatever `limit` asks for (NRPS 2.0 and AGS 2.0
#: let the platform return fewer entries than the limit).
MAX_PAGE_SIZE = 100
#: Largest JSON body the services read (a line item or a score is a few hundred bytes).
MAX_JSON_BODY = 64 * 1024

#: Moodle's line item URLs carry its tool type id as a query (`.../lineitem?type_id=1`);
#: so do ours, for the launch's own line item and for created ones.
TYPE_ID = "1"
#: The maximum of an activity's own line item (Moodle's default "Maximum grade").
LAUNCH_SCORE_MAXIMUM = 100.0

#: The short names `--ags-scopes` accepts, and the scope each stands for.
AGS_SCOPE_NAMES = {scope.rsplit("/", 1)[1]: scope for scope in AGS_ALL_SCOPES}
