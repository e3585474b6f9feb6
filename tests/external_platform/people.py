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


@dataclass(frozen=True)
class Person:
    sub: str
    name: str
    email: str
    username: str
    roles: tuple[str, ...]


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
