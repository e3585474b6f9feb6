"""What a launch says about its course and its user, read once from the id_token.

A course is one LMS activity: the platform registration (issuer + client id), the
deployment and the resource link id together name it (LTI 1.3 section 5.3.5: a
resource link id is unique within a deployment). Its id is a hash of those, so it is
stable across launches, safe as a Unix user or group name and as an nbgrader course
id, and reveals nothing.

Titles and names are kept as data for display only; they never become identifiers,
paths or code.
"""

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field

from ..lti_spec import (
    AGS_ENDPOINT,
    CONTEXT,
    CUSTOM,
    DEPLOYMENT_ID,
    DL_SETTINGS,
    MESSAGE_TYPE,
    MESSAGE_TYPE_DEEP_LINKING,
    MESSAGE_TYPE_RESOURCE_LINK,
    NRPS,
    RESOURCE_LINK,
    ROLES,
)
from ..roles import LaunchRoles, parse_roles

COURSE_ID_PREFIX = "c-"
# 16 hex digits (64 bits): "grader-" + course id stays within the 31 characters of a
# system user name.
COURSE_ID_HEX = 16
COURSE_ID_RE = re.compile(rf"^{COURSE_ID_PREFIX}[0-9a-f]{{{COURSE_ID_HEX}}}$")

TITLE_MAX = 200
NAME_MAX = 200


class LaunchError(ValueError):
    """The launch cannot open a course; the message says why and what to do."""

    #: The HTTP status of the page the person sees.
    status = 400


class NotACourseLaunch(LaunchError):
    """A valid launch that must create nothing: not an activity launch, or by nobody
    who belongs to the course."""

    status = 403

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


DEEP_LINKING_REFUSAL = (
    "Your LMS asked this hub to choose content for a course (an LTI Deep Linking "
    "request), which opens no course: nothing was created. Teachers add Jupyter "
    "assignments with the LMS's Select content; to open "
    "Jupyter, open a Jupyter activity of the course."
)


def _role_names(claim) -> str:
    """The roles of a launch by their short names ("Mentor"), for a message."""
    if not isinstance(claim, list):
        return ""
    names = [str(r).rstrip("/#").rsplit("#", 1)[-1].rsplit("/", 1)[-1] for r in claim if r]
    return clean_text(", ".join(dict.fromkeys(names)), 200)


def check_course_launch(token: dict) -> None:
    """Refuse (:class:`NotACourseLaunch`) a launch that must not create a course.

    Only a resource link launch (LTI 1.3 section 5.1.1) by a member of the course opens
    it: a learner, a teaching assistant or an instructor, or an LMS administrator (who
    counts as an instructor). A Deep Linking request (content selection), a launch with
    no role, or only roles that grant nothing in a course (Mentor, ContentDeveloper,
    Member, Manager, Officer) creates nothing: no course, grader account or group.
    """
    message_type = token.get(MESSAGE_TYPE)
    if message_type != MESSAGE_TYPE_RESOURCE_LINK:
        if message_type == MESSAGE_TYPE_DEEP_LINKING:
            raise NotACourseLaunch(DEEP_LINKING_REFUSAL, status=400)
        raise NotACourseLaunch(
            f"This launch is a {clean_text(str(message_type), 60)!r} message, not the "
            "launch of an activity, so it opens no course: nothing was created. Open the "
            "Jupyter activity in your course."
        )
    roles = parse_roles(token.get(ROLES))
    if roles.course_role is None and not roles.is_administrator:
        held = _role_names(token.get(ROLES))
        raise NotACourseLaunch(
            f"Your role in this LMS course ({held or 'none'}) gives no access to its "
            "Jupyter activity: only students, teaching assistants and teachers can open "
            "it. Nothing was set up on the hub for you. If you should have access, ask the "
            "course's teacher to enrol you as a student or a teacher."
        )


def course_id_for(issuer: str, client_id: str, deployment_id: str, resource_link_id: str) -> str:
    key = json.dumps([issuer, client_id, deployment_id, resource_link_id])
    return COURSE_ID_PREFIX + hashlib.sha256(key.encode("utf8")).hexdigest()[:COURSE_ID_HEX]


def is_course_id(value: str) -> bool:
    return isinstance(value, str) and bool(COURSE_ID_RE.fullmatch(value))


def clean_text(value, limit: int) -> str:
    """A display string: no control characters, whitespace collapsed, at most ``limit``."""
    if not isinstance(value, str):
        return ""
    value = unicodedata.normalize("NFC", value)
    value = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in value)
    value = " ".join(value.split())
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


#: The claims of an id_token that Ananke reads (LaunchInfo.from_id_token), and of the
#: nested claims the members it reads. The user's auth_state keeps only these: the rest
#: of a token (nonce, expiry, launch presentation, platform details, anything a platform
#: adds) is never read again and would only grow the hub's database.
KEPT_CLAIMS = {
    "iss": None,
    "aud": None,
    "azp": None,
    "sub": None,
    "given_name": None,
    "family_name": None,
    "email": None,
    DEPLOYMENT_ID: None,
    # check_course_launch reads it again from auth_state in run_post_auth_hook.
    MESSAGE_TYPE: None,
    ROLES: None,
    CUSTOM: None,
    RESOURCE_LINK: ("id", "title"),
    CONTEXT: ("id", "label", "title"),
    AGS_ENDPOINT: ("lineitems", "lineitem", "scope"),
    NRPS: ("context_memberships_url", "service_versions"),
    # A content selection's settings: the hub checks them again in run_post_auth_hook.
    DL_SETTINGS: ("deep_link_return_url", "accept_types", "accept_multiple", "data"),
}


def kept_claims(token: dict) -> dict:
    """The part of a validated id_token stored as the user's auth_state (KEPT_CLAIMS)."""
    kept = {}
    for claim, members in KEPT_CLAIMS.items():
        if claim not in token:
            continue
        value = token[claim]
        if members is not None:
            value = {k: v for k, v in _dict(value).items() if k in members}
        kept[claim] = value
    return kept


@dataclass(frozen=True)
class LaunchInfo:
    """The course and person of one validated launch."""

    course_id: str
    issuer: str
    client_id: str
    deployment_id: str
    resource_link_id: str
    context_id: str
    context_label: str
    context_title: str
    link_title: str
    username: str
    lms_user_id: str
    given_name: str
    family_name: str
    email: str
    roles: LaunchRoles
    lineitems_url: str = ""
    lineitem_url: str = ""
    ags_scopes: tuple[str, ...] = ()
    memberships_url: str = ""
    custom: dict = field(default_factory=dict)
    #: A launch of an activity placed by Deep Linking (deeplink.py): the nbgrader
    #: assignment it stands for. Its course is the linked one, whose own activity's
    #: titles and service URLs the launch leaves as they are.
    linked_assignment: str = ""

    @property
    def title(self) -> str:
        """How the LMS shows the activity: "Data Science 101 - Homework"."""
        parts = [p for p in (self.context_title or self.context_label, self.link_title) if p]
        return " - ".join(parts) or f"Jupyter activity {self.resource_link_id[:40]}"

    @classmethod
    def from_id_token(cls, token: dict, username: str) -> "LaunchInfo":
        aud = token.get("aud")
        client_id = token.get("azp") or (aud[0] if isinstance(aud, list) and aud else aud)
        link = _dict(token.get(RESOURCE_LINK))
        link_id = link.get("id")
        if not isinstance(link_id, str) or not link_id.strip():
            raise LaunchError(
                "This launch names no activity (no resource link id), so it cannot open a "
                "course. Start from a Jupyter activity inside an LMS course."
            )
        deployment_id = token.get(DEPLOYMENT_ID)
        if not isinstance(deployment_id, str) or not isinstance(client_id, str):
            raise LaunchError("The launch has no deployment id or client id.")
        context = _dict(token.get(CONTEXT))
        ags = _dict(token.get(AGS_ENDPOINT))
        nrps = _dict(token.get(NRPS))
        scopes = ags.get("scope")
        return cls(
            course_id=course_id_for(token["iss"], client_id, deployment_id, link_id),
            issuer=token["iss"],
            client_id=client_id,
            deployment_id=deployment_id,
            resource_link_id=link_id,
            context_id=clean_text(context.get("id"), 255),
            context_label=clean_text(context.get("label"), TITLE_MAX),
            context_title=clean_text(context.get("title"), TITLE_MAX),
            link_title=clean_text(link.get("title"), TITLE_MAX),
            username=username,
            lms_user_id=str(token.get("sub", "")),
            given_name=clean_text(token.get("given_name"), NAME_MAX),
            family_name=clean_text(token.get("family_name"), NAME_MAX),
            email=clean_text(token.get("email"), 320),
            roles=parse_roles(token.get(ROLES)),
            lineitems_url=ags.get("lineitems") if isinstance(ags.get("lineitems"), str) else "",
            lineitem_url=ags.get("lineitem") if isinstance(ags.get("lineitem"), str) else "",
            ags_scopes=tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else (),
            memberships_url=(
                nrps.get("context_memberships_url")
                if isinstance(nrps.get("context_memberships_url"), str)
                else ""
            ),
            custom=_dict(token.get(CUSTOM)),
        )
