"""The external platform's course, activity and people, as data.

Deliberately not the built-in platform's demo data (other ids, other names), so a test
cannot pass by accident on values only our own platform sends.
"""

from dataclasses import dataclass

# LIS role vocabulary, LTI 1.3 appendix A.2 (https://www.imsglobal.org/spec/lti/v1p3/#role-vocabularies)
ROLE_LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
ROLE_INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
# Context type, LTI 1.3 appendix A.1 (https://www.imsglobal.org/spec/lti/v1p3/#context-type-vocabulary)
COURSE_OFFERING = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"


#: NRPS 2.0 member status, section 2.2 (https://www.imsglobal.org/spec/lti-nrps/v2p0#membership-container-media-type)
ACTIVE = "Active"
INACTIVE = "Inactive"


@dataclass(frozen=True)
class Person:
    sub: str
    name: str
    email: str
    username: str
    roles: tuple[str, ...]
    #: Their enrolment in the course, as the roster (NRPS) reports it.
    status: str = ACTIVE

    def member(self) -> dict:
        """This person as an NRPS member (section 2.2): the library adds nothing."""
        given, _, family = self.name.partition(" ")
        return {
            "user_id": self.sub,
            "roles": list(self.roles),
            "status": self.status,
            "name": self.name,
            "given_name": given,
            "family_name": family,
            "email": self.email,
        }


@dataclass(frozen=True)
class Link:
    """A resource link (LTI 1.3 section 5.2.1) in the one course."""

    id: str
    title: str


@dataclass(frozen=True)
class Course:
    id: str
    label: str
    title: str


COURSE = Course("ext-phys-201", "PHYS201", "Physics 201")
LINKS = {link.id: link for link in (Link("ext-lab-1", "Lab notebook 1"),)}
PEOPLE = {
    p.sub: p
    for p in (
        Person("101", "Lise Meitner", "lise@example.org", "lmeitner", (ROLE_LEARNER,)),
        Person("102", "Niels Bohr", "niels@example.org", "nbohr", (ROLE_INSTRUCTOR,)),
    )
}


def _extra_learner(n: int) -> Person:
    sub = str(200 + n)
    status = INACTIVE if n == EXTRA_LEARNERS else ACTIVE
    return Person(sub, f"Student {sub}", f"s{sub}@example.org", f"s{sub}", (ROLE_LEARNER,), status)


#: Learners who never launched: only the roster (NRPS) knows them. The last one dropped
#: the course (Inactive).
EXTRA_LEARNERS = 15
#: Everyone enrolled in the course, in roster order: the launch page's people first.
ROSTER = {
    p.sub: p for p in (*PEOPLE.values(), *(_extra_learner(n) for n in range(1, EXTRA_LEARNERS + 1)))
}
