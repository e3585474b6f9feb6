"""LTI Deep Linking 2.0 (https://www.imsglobal.org/spec/lti-dl/v2p0): what the hub and
Kore share about an instructor's content selection and the activities it placed.

1. The hub validates an ``LtiDeepLinkingRequest`` like any launch (signature, nonce,
   deployment), refuses anyone but an instructor (:func:`check_deep_linking_request`),
   logs the instructor in and records the request (:meth:`DeepLinkStore.record_request`,
   table ``deep_link_requests``); the browser goes on to Kore's picker page.
2. The hub hands the request to Kore's picker (``kore/handlers/deeplink.py``) as a
   ticket: a random secret posted in a form body, of which the table keeps only the
   SHA-256 (the row's id). The ticket alone opens the picker, so it works in the LMS's
   cross-site iframe where no cookie of the hub's is sent (``framing.py``); it is
   bound to the request's registration, LMS course, settings and instructor, expires,
   and answers the request once (:meth:`DeepLinkStore.take_request`): one
   ``ltiResourceLink`` per chosen nbgrader
   assignment, each recorded as a :class:`~.models.DeepLink` whose random id goes into
   the activity as the custom parameter :data:`LINK_PARAMETER`.
3. A launch of such an activity is a different resource link, so its own hash would
   make a new course. The hub looks the parameter up (:meth:`DeepLinkStore.resolve`)
   and opens the linked course instead, but only if the link exists and the launch
   comes from the same issuer, client id, deployment and LMS course it was placed in:
   a parameter an LMS user typed into another activity attaches nobody to a course.

Blocking calls, like the rest of the registry: async code goes through
:meth:`CourseRegistry.run`.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update

from ..lti_spec import (
    CONTEXT,
    DEPLOYMENT_ID,
    DL_RESOURCE_LINK,
    DL_SETTINGS,
    MESSAGE_TYPE,
    MESSAGE_TYPE_DEEP_LINKING,
    ROLES,
)
from ..roles import Role, parse_roles
from .identity import LaunchError, LaunchInfo, NotACourseLaunch, _role_names, clean_text
from .models import COURSE_ACTIVE, Course, DeepLink, DeepLinkRequest, Member, aware, utcnow
from .registry import CourseRegistry

#: The custom parameter of a placed activity: the id of its ``deep_links`` row.
LINK_PARAMETER = "ananke_link"
#: Seconds an instructor has to choose on the picker page (the ticket's lifetime).
REQUEST_LIFETIME = 1800
#: The ``tag`` of a placed activity's line item: with ``resourceId`` nbgrader:<name>
#: it tells Kore's grade sync which course's assignment the column is for.
LINK_TAG_PREFIX = "ananke-nbgrader@"

STUDENT_REFUSAL = (
    "Only teachers of this LMS course can add Jupyter assignments to it (your role in it: "
    "{roles}). Nothing was created. Ask a teacher of the course to add the activity."
)


def link_tag(course_id: str) -> str:
    return LINK_TAG_PREFIX + course_id


def ticket_id(ticket: str) -> str:
    """The id of the request a picker ticket opens: its SHA-256, hex."""
    return hashlib.sha256(ticket.encode()).hexdigest()


def ticket_matches(request_id: str, ticket: str) -> bool:
    return isinstance(ticket, str) and hmac.compare_digest(ticket_id(ticket), request_id)


def is_deep_linking_request(token: dict) -> bool:
    return token.get(MESSAGE_TYPE) == MESSAGE_TYPE_DEEP_LINKING


@dataclass(frozen=True)
class DeepLinkingSettings:
    """What the LMS asked for (Deep Linking 2.0 section 4.4.1)."""

    return_url: str
    accept_types: tuple[str, ...]
    accept_multiple: bool
    data: str | None

    @classmethod
    def from_token(cls, token: dict) -> "DeepLinkingSettings":
        claim = token.get(DL_SETTINGS)
        if not isinstance(claim, dict):
            raise LaunchError(
                "This content selection request carries no deep linking settings (claim "
                f"{DL_SETTINGS}), so the hub cannot answer it. Tell the LMS's administrator."
            )
        url = claim.get("deep_link_return_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise LaunchError(
                "This content selection request names no return URL "
                "(deep_link_return_url), so the hub cannot answer it."
            )
        types = claim.get("accept_types")
        types = tuple(t for t in types if isinstance(t, str)) if isinstance(types, list) else ()
        if DL_RESOURCE_LINK not in types:
            raise LaunchError(
                "The LMS accepts no LTI activities (ltiResourceLink) here, only "
                f"{', '.join(types) or 'nothing'}: this hub has nothing else to offer."
            )
        data = claim.get("data")
        return cls(
            return_url=url,
            accept_types=types,
            # Section 4.4.1: absent means the platform accepts several items.
            accept_multiple=claim.get("accept_multiple", True) is not False,
            data=data if isinstance(data, str) else None,
        )


def check_deep_linking_request(token: dict) -> DeepLinkingSettings:
    """Refuse a content selection by anyone but an instructor (or an LMS admin)."""
    roles = parse_roles(token.get(ROLES))
    if roles.course_role is not Role.INSTRUCTOR and not roles.is_administrator:
        raise NotACourseLaunch(
            STUDENT_REFUSAL.format(roles=_role_names(token.get(ROLES)) or "none")
        )
    return DeepLinkingSettings.from_token(token)


@dataclass(frozen=True)
class ResolvedLink:
    course_id: str
    assignment: str
    course_title: str


class DeepLinkStore:
    """The two Deep Linking tables of the course registry."""

    def __init__(self, registry: CourseRegistry):
        self.registry = registry

    # --- requests (hub writes, Kore answers once) ---------------------------------------

    def record_request(
        self, username: str, token: dict, settings: DeepLinkingSettings
    ) -> tuple[str, str]:
        """Keep a validated request; its id and the ticket that opens Kore's picker."""
        aud = token.get("aud")
        client_id = token.get("azp") or (aud[0] if isinstance(aud, list) and aud else aud)
        context = token.get(CONTEXT) if isinstance(token.get(CONTEXT), dict) else {}
        ticket = secrets.token_urlsafe(32)
        request_id = ticket_id(ticket)
        now = utcnow()
        with self.registry.session() as session, session.begin():
            # Expired requests are of no use to anyone: drop them as new ones come.
            session.execute(delete(DeepLinkRequest).where(DeepLinkRequest.expires_at < now))
            session.add(
                DeepLinkRequest(
                    id=request_id,
                    username=username,
                    issuer=token["iss"],
                    client_id=str(client_id),
                    deployment_id=str(token.get(DEPLOYMENT_ID)),
                    context_id=clean_text(context.get("id"), 255),
                    context_title=clean_text(context.get("title") or context.get("label"), 255),
                    return_url=settings.return_url,
                    data=settings.data,
                    accept_types=list(settings.accept_types),
                    accept_multiple=settings.accept_multiple,
                    expires_at=now + timedelta(seconds=REQUEST_LIFETIME),
                )
            )
        return request_id, ticket

    def open_request(self, request_id: str, ticket: str) -> DeepLinkRequest | None:
        """The unused, unexpired request this ticket opens; None for anything else."""
        if not ticket_matches(request_id, ticket):
            return None
        with self.registry.session() as session:
            found = session.get(DeepLinkRequest, request_id)
        if (
            found is None
            or found.used_at is not None
            or aware(found.expires_at) < utcnow()
        ):
            return None
        return found

    def take_request(self, request_id: str, ticket: str) -> bool:
        """Mark the request used; False if it was used (or expired) meanwhile."""
        if not ticket_matches(request_id, ticket):
            return False
        with self.registry.session() as session, session.begin():
            done = session.execute(
                update(DeepLinkRequest)
                .where(
                    DeepLinkRequest.id == request_id,
                    DeepLinkRequest.used_at.is_(None),
                    DeepLinkRequest.expires_at >= utcnow(),
                )
                .values(used_at=utcnow())
            )
            return done.rowcount == 1

    def courses_for(self, request: DeepLinkRequest) -> list[Course]:
        """The active courses of the request's LMS course (same registration and
        context) that its instructor teaches: what new activities may map to."""
        with self.registry.session() as session:
            return list(
                session.scalars(
                    select(Course)
                    .join(Member, Member.course_id == Course.id)
                    .where(
                        Course.issuer == request.issuer,
                        Course.client_id == request.client_id,
                        Course.deployment_id == request.deployment_id,
                        Course.context_id == request.context_id,
                        Course.state == COURSE_ACTIVE,
                        Member.username == request.username,
                        Member.role == str(Role.INSTRUCTOR),
                        Member.active.is_(True),
                    )
                    .order_by(Course.created_at)
                )
            )

    def record_links(self, request: DeepLinkRequest, chosen: list[tuple[str, str]]) -> list[str]:
        """One ``deep_links`` row per (course id, assignment); their ids, in order."""
        ids = [secrets.token_urlsafe(18) for _ in chosen]
        with self.registry.session() as session, session.begin():
            for link_id, (course_id, assignment) in zip(ids, chosen, strict=True):
                session.add(
                    DeepLink(
                        id=link_id,
                        course_id=course_id,
                        assignment=assignment,
                        issuer=request.issuer,
                        client_id=request.client_id,
                        deployment_id=request.deployment_id,
                        context_id=request.context_id,
                        created_by=request.username,
                    )
                )
        return ids

    def has_links(self, course_id: str) -> bool:
        """Whether Kore placed activities for this course (the grade sync then looks
        for their line items)."""
        with self.registry.session() as session:
            return (
                session.scalar(select(DeepLink.id).where(DeepLink.course_id == course_id).limit(1))
                is not None
            )

    # --- launches of placed activities (hub) --------------------------------------------

    def resolve(self, link_id: str, info: LaunchInfo) -> ResolvedLink:
        """The course and assignment of a placed activity's launch; LaunchError if the
        parameter names no link Kore issued for this registration and LMS course."""
        with self.registry.session() as session:
            link = session.get(DeepLink, link_id) if isinstance(link_id, str) else None
            course = session.get(Course, link.course_id) if link is not None else None
            title = course.title if course is not None else ""
            state = course.state if course is not None else None
        if link is None or (
            link.issuer,
            link.client_id,
            link.deployment_id,
            link.context_id,
        ) != (info.issuer, info.client_id, info.deployment_id, info.context_id):
            raise NotACourseLaunch(
                "This activity claims to be a Jupyter assignment placed by this hub "
                f"(custom parameter {LINK_PARAMETER}), but the hub placed no such activity in "
                "this LMS course. Nothing was set up. Ask the course's teacher to add the "
                "assignment again from the LMS's activity chooser (Select content)."
            )
        if state != COURSE_ACTIVE:
            raise NotACourseLaunch(
                "The Jupyter course this activity belongs to no longer exists on the hub. "
                "Nothing was set up. Ask the course's teacher."
            )
        return ResolvedLink(link.course_id, link.assignment, title)
