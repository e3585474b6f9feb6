"""The LTI 1.3 vocabulary the test platform speaks, as data.

The spec's claim names and role URIs live in ananke_hub/lti_spec.py (shared with the
tool); what is the platform's own choice (fixed parameters, token lifetime) is here.
"""

from ..lti_spec import (  # noqa: F401 (re-exported for the platform's modules)
    AGS_ENDPOINT,
    AGS_SCOPE_LINEITEM,
    AGS_SCOPE_RESULT_READONLY,
    AGS_SCOPE_SCORE,
    AGS_SCOPES,
    CONTEXT,
    COURSE_OFFERING,
    CUSTOM,
    DEPLOYMENT_ID,
    LAUNCH_PRESENTATION,
    LTI_VERSION,
    MESSAGE_TYPE,
    MESSAGE_TYPE_RESOURCE_LINK,
    NRPS,
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
SIGNING_ALGORITHM = "RS256"
