"""Names and Role Provisioning Services 2.0: the members of the course's context.

https://www.imsglobal.org/spec/lti-nrps/v2p0/#membership-container-media-type — a
container ``{"context": ..., "members": [...]}``, paged with ``Link: <...>; rel="next"``
(section 2.4.2). Members carry ``user_id`` (the same as ``sub`` in launches), ``roles``
(full URIs or short names: Moodle sends "Learner"), ``status`` (Active, Inactive,
Deleted; Active when missing) and, if the platform shares them, names and e-mail.
"""

from dataclasses import dataclass

from ananke_hub.lti_spec import (
    MEMBER_ACTIVE,
    MEMBER_DELETED,
    MEMBER_INACTIVE,
    MEMBER_STATUSES,
    NRPS_MEDIA_MEMBERSHIPS,
)

from .client import ServiceSession
from .errors import BadLMSResponse, clean

STATUS_ACTIVE, STATUS_INACTIVE, STATUS_DELETED = MEMBER_ACTIVE, MEMBER_INACTIVE, MEMBER_DELETED


@dataclass(frozen=True)
class Membership:
    user_id: str
    roles: tuple[str, ...]
    status: str = STATUS_ACTIVE
    name: str = ""
    given_name: str = ""
    family_name: str = ""
    email: str = ""

    @property
    def active(self) -> bool:
        return self.status == STATUS_ACTIVE

    @classmethod
    def from_json(cls, data) -> "Membership | None":
        if not isinstance(data, dict):
            return None
        user_id = data.get("user_id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id.strip():
            return None
        roles = data.get("roles")
        roles = tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
        status = data.get("status")

        def text(key, limit=255):
            return clean(data[key], limit) if isinstance(data.get(key), str) else ""

        return cls(
            user_id=user_id,
            roles=roles,
            status=status if status in MEMBER_STATUSES else STATUS_ACTIVE,
            name=text("name"),
            given_name=text("given_name"),
            family_name=text("family_name"),
            email=text("email", 320),
        )


@dataclass(frozen=True)
class Roster:
    members: list[Membership]
    #: Entries without a user id (or not objects): reported, not used.
    invalid: int = 0
    pages: int = 1


class NRPSClient:
    def __init__(self, session: ServiceSession, *, max_pages: int = 100):
        self.session = session
        self.max_pages = max_pages

    async def members(self, memberships_url: str) -> Roster:
        """Every member of the context, all pages read."""
        members: dict[str, Membership] = {}
        invalid = 0
        pages = 0
        async for response in self.session.pages(
            memberships_url,
            memberships_url,
            action="read the course roster",
            accept=NRPS_MEDIA_MEMBERSHIPS,
            max_pages=self.max_pages,
            names=("roster", "roster page"),
        ):
            pages += 1
            page = response.json("the roster")
            entries = page.get("members") if isinstance(page, dict) else None
            if not isinstance(entries, list):
                raise BadLMSResponse(
                    f"The LMS answered the roster request at {response.url} without a list "
                    "of members.",
                    status=response.status,
                )
            for entry in entries:
                member = Membership.from_json(entry)
                if member is None:
                    invalid += 1
                else:
                    # A person on two pages (the list changed while paging) counts once.
                    members[member.user_id] = member
        return Roster(list(members.values()), invalid, pages)
