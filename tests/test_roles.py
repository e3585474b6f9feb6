"""LTI roles claim parsing (LTI 1.3 core 5.3.7, LIS v2 vocabularies)."""

import pytest

from ananke_hub.roles import Role, parse_roles

M = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
INST = "http://purl.imsglobal.org/vocab/lis/v2/institution/person#"
SYS = "http://purl.imsglobal.org/vocab/lis/v2/system/person#"
TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"


@pytest.mark.parametrize(
    "claim, roles, course_role",
    [
        # Moodle student and teacher launches
        ([M + "Learner"], {Role.LEARNER}, Role.LEARNER),
        ([INST + "Student", M + "Learner"], {Role.LEARNER}, Role.LEARNER),
        ([INST + "Faculty", M + "Instructor"], {Role.INSTRUCTOR}, Role.INSTRUCTOR),
        # Moodle site admin: instructor in the course and administrator
        (
            [INST + "Administrator", M + "Instructor", SYS + "Administrator"],
            {Role.INSTRUCTOR, Role.ADMINISTRATOR},
            Role.INSTRUCTOR,
        ),
        # TA: principal role Instructor plus the sub-role -> TA only
        ([M + "Instructor", TA], {Role.TEACHING_ASSISTANT}, Role.TEACHING_ASSISTANT),
        ([TA], {Role.TEACHING_ASSISTANT}, Role.TEACHING_ASSISTANT),
        # short forms (LTI 1.1 names, NRPS answers)
        (["Learner"], {Role.LEARNER}, Role.LEARNER),
        (["Instructor"], {Role.INSTRUCTOR}, Role.INSTRUCTOR),
        (["TeachingAssistant"], {Role.TEACHING_ASSISTANT}, Role.TEACHING_ASSISTANT),
        # LTI 1.1 URNs
        (["urn:lti:role:ims/lis/Instructor"], {Role.INSTRUCTOR}, Role.INSTRUCTOR),
        (["urn:lti:role:ims/lis/Instructor/TeachingAssistant"], {Role.TEACHING_ASSISTANT}, Role.TEACHING_ASSISTANT),
        (["urn:lti:instrole:ims/lis/Student"], {Role.LEARNER}, Role.LEARNER),
        # institution roles count only without a context role
        ([INST + "Faculty"], {Role.INSTRUCTOR}, Role.INSTRUCTOR),
        ([INST + "Faculty", M + "Learner"], {Role.LEARNER}, Role.LEARNER),
        # sub-roles of Learner are learners
        ([M + "Learner", "http://purl.imsglobal.org/vocab/lis/v2/membership/Learner#NonCreditLearner"], {Role.LEARNER}, Role.LEARNER),
        # roles that grant nothing in a course
        ([M + "Mentor"], set(), None),
        ([M + "ContentDeveloper"], set(), None),
        ([], set(), None),
        (["http://example.com/made-up#Role"], set(), None),
        # malformed claims
        ("Instructor", set(), None),
        (None, set(), None),
        ([42, None, M + "Learner"], {Role.LEARNER}, Role.LEARNER),
    ],
)
def test_parse_roles(claim, roles, course_role):
    parsed = parse_roles(claim)
    assert parsed.roles == frozenset(roles)
    assert parsed.course_role == course_role


def test_predicates():
    parsed = parse_roles([M + "Instructor", SYS + "Administrator"])
    assert parsed.is_instructor and parsed.is_administrator
    assert not parsed.is_learner and not parsed.is_teaching_assistant
