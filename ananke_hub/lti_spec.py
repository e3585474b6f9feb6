"""The IMS LTI 1.3 / LTI Advantage vocabulary, as data, for the tool and the test platform.

Claim names, scopes and role URIs, each with the spec section that defines it, so that
no code scatters claim URIs as literals.
"""

# --- LTI 1.3 core message claims: https://www.imsglobal.org/spec/lti/v1p3/#required-message-claims
_LTI = "https://purl.imsglobal.org/spec/lti/claim/"
MESSAGE_TYPE = _LTI + "message_type"
VERSION = _LTI + "version"
DEPLOYMENT_ID = _LTI + "deployment_id"
TARGET_LINK_URI = _LTI + "target_link_uri"
RESOURCE_LINK = _LTI + "resource_link"
ROLES = _LTI + "roles"
# Optional claims: https://www.imsglobal.org/spec/lti/v1p3/#optional-message-claims
CONTEXT = _LTI + "context"
CUSTOM = _LTI + "custom"
LAUNCH_PRESENTATION = _LTI + "launch_presentation"
TOOL_PLATFORM = _LTI + "tool_platform"

MESSAGE_TYPE_RESOURCE_LINK = "LtiResourceLinkRequest"
LTI_VERSION = "1.3.0"

# --- Assignment and Grade Services 2.0: https://www.imsglobal.org/spec/lti-ags/v2p0/#assignment-and-grade-service-claim
AGS_ENDPOINT = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
_AGS_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/"
AGS_SCOPE_LINEITEM = _AGS_SCOPE + "lineitem"
AGS_SCOPE_LINEITEM_READONLY = _AGS_SCOPE + "lineitem.readonly"
AGS_SCOPE_RESULT_READONLY = _AGS_SCOPE + "result.readonly"
AGS_SCOPE_SCORE = _AGS_SCOPE + "score"
AGS_SCOPES = (AGS_SCOPE_LINEITEM, AGS_SCOPE_RESULT_READONLY, AGS_SCOPE_SCORE)
# Media types: https://www.imsglobal.org/spec/lti-ags/v2p0/#media-types-and-schemas
AGS_MEDIA_LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
AGS_MEDIA_LINEITEMS = "application/vnd.ims.lis.v2.lineitemcontainer+json"
AGS_MEDIA_SCORE = "application/vnd.ims.lis.v1.score+json"
AGS_MEDIA_RESULTS = "application/vnd.ims.lis.v2.resultcontainer+json"
#: Every AGS 2.0 scope, in the spec's order.
AGS_ALL_SCOPES = (
    AGS_SCOPE_LINEITEM,
    AGS_SCOPE_LINEITEM_READONLY,
    AGS_SCOPE_RESULT_READONLY,
    AGS_SCOPE_SCORE,
)
# Score values: https://www.imsglobal.org/spec/lti-ags/v2p0/#score-publish-service
ACTIVITY_PROGRESS = ("Initialized", "Started", "InProgress", "Submitted", "Completed")
GRADING_PROGRESS = ("FullyGraded", "Pending", "PendingManual", "Failed", "NotReady")
#: Only a FullyGraded score is final; Moodle drops the scoreGiven of any other.
GRADING_FULLY_GRADED = "FullyGraded"

# --- Names and Role Provisioning Services 2.0: https://www.imsglobal.org/spec/lti-nrps/v2p0/#lti-1-3-integration
NRPS = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
NRPS_SERVICE_VERSIONS = ("2.0",)
# https://www.imsglobal.org/spec/lti-nrps/v2p0/#membership-container-media-type
NRPS_MEDIA_MEMBERSHIPS = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
# A member's status: https://www.imsglobal.org/spec/lti-nrps/v2p0/#membership-container-media-type
MEMBER_ACTIVE = "Active"
MEMBER_INACTIVE = "Inactive"
MEMBER_DELETED = "Deleted"
MEMBER_STATUSES = (MEMBER_ACTIVE, MEMBER_INACTIVE, MEMBER_DELETED)

# --- Security Framework 1.0 client credentials with a JWT assertion (RFC 7523):
# https://www.imsglobal.org/spec/security/v1p0/#using-json-web-tokens-with-oauth-2-0-client-credentials-grant
CLIENT_CREDENTIALS_GRANT = "client_credentials"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The token request's body: form parameters (RFC 6749 section 4.4.2); Moodle reads no JSON.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# --- Role vocabularies: https://www.imsglobal.org/spec/lti/v1p3/#role-vocabularies
_LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
ROLE_INSTRUCTOR = _LIS + "membership#Instructor"
ROLE_LEARNER = _LIS + "membership#Learner"
# A context sub-role; by best practice the principal role (Instructor) is sent with it
# (LTI 1.3 A.2.3.1, https://www.imsglobal.org/spec/lti/v1p3/#context-sub-roles).
ROLE_TEACHING_ASSISTANT = _LIS + "membership/Instructor#TeachingAssistant"
# Moodle adds these two for site administrators (its LTI 1.1 sysrole/instrole
# Administrator, mapped to the LIS v2 URIs in LTI 1.3 launches).
ROLE_INSTITUTION_ADMINISTRATOR = _LIS + "institution/person#Administrator"
ROLE_SYSTEM_ADMINISTRATOR = _LIS + "system/person#Administrator"

# Context types: https://www.imsglobal.org/spec/lti/v1p3/#context-type-vocabulary
COURSE_OFFERING = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"

# --- Deep Linking 2.0: https://www.imsglobal.org/spec/lti-dl/v2p0
MESSAGE_TYPE_DEEP_LINKING = "LtiDeepLinkingRequest"
MESSAGE_TYPE_DEEP_LINKING_RESPONSE = "LtiDeepLinkingResponse"
_DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"
# Request: https://www.imsglobal.org/spec/lti-dl/v2p0#deep-linking-settings
DL_SETTINGS = _DL + "deep_linking_settings"
# Response: https://www.imsglobal.org/spec/lti-dl/v2p0#deep-linking-response-message
DL_CONTENT_ITEMS = _DL + "content_items"
DL_DATA = _DL + "data"
DL_MSG = _DL + "msg"
DL_ERRORMSG = _DL + "errormsg"
# Content item types: https://www.imsglobal.org/spec/lti-dl/v2p0#lti-resource-link
DL_RESOURCE_LINK = "ltiResourceLink"

# --- LTI Dynamic Registration 1.0: https://www.imsglobal.org/spec/lti-dr/v1p0
#: The platform's part of its OpenID configuration (section 3.6.2).
PLATFORM_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-platform-configuration"
#: The tool's part of its client registration (section 3.4.1).
TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"
MESSAGE_TYPE_DEEP_LINKING_REQUEST = MESSAGE_TYPE_DEEP_LINKING
#: The message types a hub registers; a platform that supports fewer cannot be registered.
REGISTERED_MESSAGE_TYPES = (MESSAGE_TYPE_RESOURCE_LINK, MESSAGE_TYPE_DEEP_LINKING_REQUEST)
#: The postMessage a tool sends its opener when registration ends (section 3.7).
REGISTRATION_CLOSE_SUBJECT = "org.imsglobal.lti.close"
