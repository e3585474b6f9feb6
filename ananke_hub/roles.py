"""LTI roles claim -> what a user is in the launching course.

The roles claim (LTI 1.3 section 5.3.7, https://www.imsglobal.org/spec/lti/v1p3/#roles-claim)
holds full LIS vocabulary URIs; platforms may also send the short context role names of
LTI 1.1 ("Instructor"), and Moodle's NRPS answers with short names. All are read here.
"""

from dataclasses import dataclass
from enum import StrEnum

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
CONTEXT_ROLE = LIS + "membership#"  # role in this course (context)
CONTEXT_SUB_ROLE = LIS + "membership/"  # e.g. membership/Instructor#TeachingAssistant
INSTITUTION_ROLE = LIS + "institution/person#"
SYSTEM_ROLE = LIS + "system/person#"
# LTI 1.1 URNs, still sent by some platforms and in some NRPS answers.
LEGACY_CONTEXT_ROLE = "urn:lti:role:ims/lis/"
LEGACY_INSTITUTION_ROLE = "urn:lti:instrole:ims/lis/"
LEGACY_SYSTEM_ROLE = "urn:lti:sysrole:ims/lis/"


class Role(StrEnum):
    LEARNER = "learner"
    INSTRUCTOR = "instructor"
    TEACHING_ASSISTANT = "teaching_assistant"
    ADMINISTRATOR = "administrator"


# Context role names (and sub-role names) -> our role. ContentDeveloper, Mentor, Member,
# Manager and Officer give no course role: they grant nothing in a course.
_CONTEXT = {
    "Learner": Role.LEARNER,
    "Instructor": Role.INSTRUCTOR,
    "TeachingAssistant": Role.TEACHING_ASSISTANT,
    "Administrator": Role.ADMINISTRATOR,
}
# Institution roles count only when the launch carries no context role at all.
_INSTITUTION = {
    "Student": Role.LEARNER,
    "Learner": Role.LEARNER,
    "Faculty": Role.INSTRUCTOR,
    "Instructor": Role.INSTRUCTOR,
    "Administrator": Role.ADMINISTRATOR,
}
_SYSTEM = {"Administrator": Role.ADMINISTRATOR, "SysAdmin": Role.ADMINISTRATOR}


@dataclass(frozen=True)
class LaunchRoles:
    """The roles of one launch, reduced to what Ananke acts on."""

    roles: frozenset[Role]

    @property
    def is_instructor(self) -> bool:
        return Role.INSTRUCTOR in self.roles

    @property
    def is_teaching_assistant(self) -> bool:
        return Role.TEACHING_ASSISTANT in self.roles

    @property
    def is_learner(self) -> bool:
        return Role.LEARNER in self.roles

    @property
    def is_administrator(self) -> bool:
        return Role.ADMINISTRATOR in self.roles

    @property
    def course_role(self) -> Role | None:
        """The one role that decides access to the course: instructor > TA > learner."""
        for role in (Role.INSTRUCTOR, Role.TEACHING_ASSISTANT, Role.LEARNER):
            if role in self.roles:
                return role
        return None


def _split(uri: str) -> tuple[str, str, str | None]:
    """Classify one role value as (scope, name, sub_role)."""
    for prefix, scope in (
        (CONTEXT_ROLE, "context"),
        (INSTITUTION_ROLE, "institution"),
        (SYSTEM_ROLE, "system"),
        (LEGACY_INSTITUTION_ROLE, "institution"),
        (LEGACY_SYSTEM_ROLE, "system"),
    ):
        if uri.startswith(prefix):
            return scope, uri[len(prefix) :], None
    if uri.startswith(CONTEXT_SUB_ROLE):
        principal, _, sub = uri[len(CONTEXT_SUB_ROLE) :].partition("#")
        return "context", principal, sub or None
    if uri.startswith(LEGACY_CONTEXT_ROLE):
        principal, _, sub = uri[len(LEGACY_CONTEXT_ROLE) :].partition("/")
        return "context", principal, sub or None
    if "/" not in uri and ":" not in uri:
        return "context", uri, None  # short form, e.g. "Instructor"
    return "unknown", uri, None


def parse_roles(claim) -> LaunchRoles:
    """Reduce an LTI roles claim (a list of URIs or short names) to :class:`LaunchRoles`.

    A teaching assistant arrives as the principal role Instructor plus the sub-role
    ``membership/Instructor#TeachingAssistant`` (LIS v2): such a user is a TA, not an
    instructor. Anything that is not a list of strings counts as no role.
    """
    if not isinstance(claim, list):
        return LaunchRoles(frozenset())
    context: set[Role] = set()
    institution: set[Role] = set()
    ta_sub_role = False
    for value in claim:
        if not isinstance(value, str):
            continue
        scope, name, sub = _split(value.strip())
        if scope == "context":
            if sub == "TeachingAssistant":
                ta_sub_role = True
            elif name in _CONTEXT:
                context.add(_CONTEXT[name])
        elif scope == "institution" and name in _INSTITUTION:
            institution.add(_INSTITUTION[name])
        elif scope == "system" and name in _SYSTEM:
            institution.add(_SYSTEM[name])
    if ta_sub_role:
        context.discard(Role.INSTRUCTOR)
        context.add(Role.TEACHING_ASSISTANT)
    roles = set(context)
    if Role.ADMINISTRATOR in institution:
        roles.add(Role.ADMINISTRATOR)
    if not context:
        roles |= institution
    return LaunchRoles(frozenset(roles))
