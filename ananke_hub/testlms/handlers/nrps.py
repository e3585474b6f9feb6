"""Names and Role Provisioning Services 2.0 (https://www.imsglobal.org/spec/lti-nrps/v2p0/).

`GET /nrps/<ctx>/memberships` (scope contextmembership.readonly): the course roster,
everyone enrolled, also those who never launched the tool, with their status (Active,
or Inactive for a suspended enrolment; unenrolled people are not listed). Paged with
`limit` and `from` and `Link: <...>; rel="next"` (section 2.4.2); filtered by `role`
(a full role URI or Moodle's short name, "Learner").
"""

from .. import constants as C
from ..documents import member_json, short_role
from .service import ServiceHandler


class MembershipsHandler(ServiceHandler):
    def get(self, context_id: str):
        self.bearer(C.NRPS_SCOPE)
        course = self.course(context_id)
        self.check_accept(C.NRPS_MEDIA_MEMBERSHIPS)
        members = course.members()
        role = self.get_query_argument("role", None)
        if role is not None:
            members = [m for m in members if any(role in (r, short_role(r)) for r in m.roles)]
        page = self.page(members)
        context = course.context
        self.send_json(
            {
                "id": self.platform.memberships_url(course.id),
                "context": {"id": context.id, "label": context.label, "title": context.title},
                "members": [member_json(m) for m in page],
            },
            C.NRPS_MEDIA_MEMBERSHIPS,
        )


ROUTES = [(r"/nrps/([^/]+)/memberships", MembershipsHandler)]
