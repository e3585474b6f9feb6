"""The test platform's course, activities and people, as data.

One course with two activities that point at the hub, and four people who can launch,
shaped like what Moodle sends: numeric user ids as `sub` (2 is Moodle's first admin),
full LIS role URIs, and the Moodle username as the `username` custom parameter.

The course roster (what NRPS lists and AGS accepts scores for) holds more: extra
learners (subs 100, 101, ...) who never launched the tool, one of whom dropped the
course (status Inactive). ``--roster-size`` sets how many.
"""

from dataclasses import dataclass

from . import constants as C


@dataclass(frozen=True)
class User:
    sub: str
    given_name: str
    family_name: str
    email: str
    username: str
    #: Roles outside any course (institution and system roles), sent with every launch.
    institution_roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"


@dataclass(frozen=True)
class ResourceLink:
    """An LMS activity that launches the tool (LTI 1.3 section 5.2.1)."""

    id: str
    title: str
    #: Custom parameters the LMS sends with every launch of it (an activity a tool
    #: placed by Deep Linking carries the tool's own).
    custom: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Member:
    sub: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Context:
    """A course (LTI 1.3 section 5.4.1) with its activities and enrolments."""

    id: str
    label: str
    title: str
    links: tuple[ResourceLink, ...]
    members: tuple[Member, ...]
    type: tuple[str, ...] = (C.COURSE_OFFERING,)

    def roles_of(self, sub: str) -> tuple[str, ...] | None:
        """The user's roles in this course, or None if not enrolled."""
        for member in self.members:
            if member.sub == sub:
                return member.roles
        return None


ADA = User(
    "2",
    "Ada",
    "Lovelace",
    "ada.lovelace@example.edu",
    "alovelace",
    # Moodle's admin: it adds these two and leaves out Learner.
    institution_roles=(C.ROLE_INSTITUTION_ADMINISTRATOR, C.ROLE_SYSTEM_ADMINISTRATOR),
)
ALAN = User("3", "Alan", "Turing", "alan.turing@example.edu", "aturing")
# Non-ASCII letters and a family name with a space: names are data, never identifiers.
EMILIE = User("4", "Émilie", "du Châtelet", "emilie.duchatelet@example.edu", "echatelet")
GRACE = User("5", "Grace", "Hopper", "grace.hopper@example.edu", "ghopper")

USERS: dict[str, User] = {user.sub: user for user in (ADA, GRACE, ALAN, EMILIE)}

HOMEWORK = ResourceLink("homework", "Homework")
EXAM = ResourceLink("exam", "Exam")

DS101 = Context(
    id="ds101",
    label="DS101",
    title="Data Science 101",
    links=(HOMEWORK, EXAM),
    members=(
        Member(ADA.sub, (C.ROLE_INSTRUCTOR,)),
        Member(GRACE.sub, (C.ROLE_INSTRUCTOR, C.ROLE_TEACHING_ASSISTANT)),
        Member(ALAN.sub, (C.ROLE_LEARNER,)),
        Member(EMILIE.sub, (C.ROLE_LEARNER,)),
    ),
)

CONTEXTS: dict[str, Context] = {DS101.id: DS101}


def find_user(sub: str) -> User | None:
    return USERS.get(sub)


def find_link(link_id: str) -> tuple[Context, ResourceLink] | None:
    """The course holding the activity ``link_id``, and the activity; None if unknown."""
    for context in CONTEXTS.values():
        for link in context.links:
            if link.id == link_id:
                return context, link
    return None


def launch_roles(user: User, context: Context) -> list[str]:
    """The roles claim of a launch: course roles first, then institution roles."""
    return [*(context.roles_of(user.sub) or ()), *user.institution_roles]


def short_role(uri: str) -> str:
    """A role URI for display: 'TeachingAssistant', 'institution Administrator'."""
    scope, _, name = uri.rpartition("#")
    if scope.endswith("/person"):  # institution/person, system/person
        return f"{scope.rsplit('/', 2)[-2]} {name}"
    return name


# --- The roster: the launchable members plus learners who never launched.


@dataclass(frozen=True)
class Enrolment:
    """A member of a course as NRPS 2.0 lists them (section 2.2, member status)."""

    user: User
    roles: tuple[str, ...]
    status: str = C.MEMBER_ACTIVE
    #: Moodle grades only people with a gradebook role: a non-editing teacher arrives
    #: as Learner (launch, NRPS) and their scores are refused with 400.
    gradable: bool = True

    @property
    def is_learner(self) -> bool:
        return C.ROLE_LEARNER in self.roles


#: How many learners the demo course has besides the four launchable people.
DEFAULT_EXTRA_LEARNERS = 25
#: The `sub` of the first extra learner; the others follow (101, 102, ...).
FIRST_EXTRA_SUB = 100
#: The extra learner who dropped the course: NRPS lists them as Inactive (Moodle keeps a
#: suspended enrolment in the roster, and still accepts scores for it).
DROPPED_SUB = "107"

# Names cycle through these lists; a few are non-ASCII, as names are data.
_GIVEN = ("Amara", "Bo", "Chiara", "Dmitri", "Élodie", "Farid", "Giulia", "Hiroshi", "Ines")
_FAMILY = ("Okafor", "Nguyen", "Rossi", "Ivanova", "Müller", "Haddad", "Sørensen", "Tanaka")


def extra_learner(sub: str) -> User:
    """A learner who never launched: a stable, made-up person for ``sub``."""
    n = int(sub) if sub.isdigit() else sum(map(ord, sub))
    given = _GIVEN[n % len(_GIVEN)]
    family = _FAMILY[n % len(_FAMILY)]  # lengths 9 and 8: 72 distinct names in a row
    username = f"learner{sub}"
    return User(sub, given, family, f"{username}@example.edu", username)


def roster(context: Context, extra_learners: int = DEFAULT_EXTRA_LEARNERS) -> list[Enrolment]:
    """Everyone enrolled in ``context``: its launchable members first, then the extra
    learners (only the demo course DS101 has extras)."""
    enrolments = [Enrolment(USERS[m.sub], m.roles) for m in context.members]
    if context.id != DS101.id:
        return enrolments
    for n in range(extra_learners):
        sub = str(FIRST_EXTRA_SUB + n)
        status = C.MEMBER_INACTIVE if sub == DROPPED_SUB else C.MEMBER_ACTIVE
        enrolments.append(Enrolment(extra_learner(sub), (C.ROLE_LEARNER,), status))
    return enrolments
