"""The JSON documents of AGS 2.0 and NRPS 2.0: reading what a tool sends, writing answers.

Reading is strict where Moodle is strict (and says what is wrong): a tool that gets its
line items and scores past these checks also gets them past Moodle.

- Line item: https://www.imsglobal.org/spec/lti-ags/v2p0/#line-item-service
- Score: https://www.imsglobal.org/spec/lti-ags/v2p0/#score-publish-service
- Result: https://www.imsglobal.org/spec/lti-ags/v2p0/#result-service
- Membership: https://www.imsglobal.org/spec/lti-nrps/v2p0/#membership-container-media-type
"""

import json
import math
from datetime import datetime
from typing import Any
from urllib.parse import quote

from . import constants as C
from .demo_data import Enrolment
from .settings import PlatformSettings
from .store import Course, LineItem, Score

#: Moodle's grade item names and id numbers are at most 255 characters.
MAX_TEXT = 255


class DocumentError(ValueError):
    """The body is not an acceptable document; the message says which field and why."""


def parse_json(body: bytes) -> Any:
    def no_constants(name: str) -> None:
        raise DocumentError(f"{name} is not a number JSON allows.")

    try:
        return json.loads(body, parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError(f"The body is not JSON ({exc}).") from None


def _object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise DocumentError(f"The body must be a JSON object ({what}).")
    return body


def _number(doc: dict, name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DocumentError(f"{name} must be a number, got {value!r}.")
    return float(value)


def _text(doc: dict, name: str, *, required: bool = False) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise DocumentError(f"{name} is missing.")
        return None
    if not isinstance(value, str):
        raise DocumentError(f"{name} must be a string, got {value!r}.")
    if len(value) > MAX_TEXT:
        raise DocumentError(f"{name} is longer than {MAX_TEXT} characters.")
    return value


# --- line items


def read_lineitem(body: Any, course: Course, current: LineItem | None = None) -> dict:
    """The fields of a line item to create (POST) or to replace ``current`` with (PUT)."""
    doc = _object(body, "a line item")
    label = _text(doc, "label", required=True)
    if not label.strip():
        raise DocumentError("label must not be empty: it is the column's name in the gradebook.")
    maximum = _number(doc, "scoreMaximum")
    if maximum is None or maximum <= 0:
        raise DocumentError(
            f"scoreMaximum must be a number greater than 0, got {doc.get('scoreMaximum')!r}."
        )
    link_id = _text(doc, "resourceLinkId")
    if link_id is not None and link_id not in course.link_ids():
        raise DocumentError(
            f"resourceLinkId {link_id!r} is no activity of {course.context.title}; "
            f"known: {', '.join(sorted(course.link_ids()))}. Leave it out for a column "
            "of its own."
        )
    if current is not None and current.coupled:
        if link_id not in (None, current.resource_link_id):
            raise DocumentError("The activity's own line item stays with its activity.")
        link_id = current.resource_link_id
    return {
        "label": label,
        "score_maximum": maximum,
        "resource_id": _text(doc, "resourceId") or "",
        "tag": _text(doc, "tag") or "",
        "resource_link_id": link_id if link_id is not None else "",
        "start_date_time": _text(doc, "startDateTime"),
        "end_date_time": _text(doc, "endDateTime"),
    }


def lineitem_json(settings: PlatformSettings, context_id: str, item: LineItem) -> dict:
    doc = {
        "id": settings.lineitem_url(context_id, item.item_id),
        "label": item.label,
        "scoreMaximum": item.score_maximum,
        "resourceId": item.resource_id,
        "tag": item.tag,
    }
    if item.resource_link_id:
        doc["resourceLinkId"] = item.resource_link_id
    if item.start_date_time is not None:
        doc["startDateTime"] = item.start_date_time
    if item.end_date_time is not None:
        doc["endDateTime"] = item.end_date_time
    return doc


# --- scores and results


def score_user_id(body: Any) -> str | None:
    """The userId of a score body, if it has a usable one (to tally refusals)."""
    value = body.get("userId") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _timestamp(doc: dict) -> datetime:
    value = doc.get("timestamp")
    if not isinstance(value, str):
        raise DocumentError(
            "timestamp is missing: send when the score was set, ISO 8601 with "
            "milliseconds and offset, e.g. 2024-05-01T12:30:00.000+00:00."
        )
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise DocumentError(f"timestamp {value!r} is not an ISO 8601 date and time.") from None
    if when.tzinfo is None:
        raise DocumentError(f"timestamp {value!r} has no offset (add Z or +00:00).")
    return when


def _choice(doc: dict, name: str, allowed: tuple[str, ...]) -> str:
    value = doc.get(name)
    if value not in allowed:
        raise DocumentError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def read_score(body: Any, course: Course) -> Score:
    """A score for a learner of ``course`` (AGS 2.0 section 3.4.1)."""
    doc = _object(body, "a score")
    user_id = score_user_id(doc)
    if user_id is None:
        raise DocumentError(
            f"userId must be the learner's LTI user id (the `sub` of their launch) as a "
            f"string, got {doc.get('userId')!r}."
        )
    if not course.is_gradable(user_id):
        raise DocumentError(
            f"Incorrect score received: userId {user_id!r} is not gradable in "
            f"{course.context.title} ({course.id}): no such enrolment, not a Learner, or "
            "without a gradebook role (Moodle's non-editing teachers are listed as Learner "
            "and cannot be graded)."
        )
    activity = _choice(doc, "activityProgress", C.ACTIVITY_PROGRESS)
    grading = _choice(doc, "gradingProgress", C.GRADING_PROGRESS)
    given = _number(doc, "scoreGiven")
    maximum = _number(doc, "scoreMaximum")
    if given is not None and given < 0:
        raise DocumentError(f"scoreGiven must be 0 or more, got {given}.")
    if given is not None and maximum is None:
        raise DocumentError("scoreMaximum is missing: a score with scoreGiven needs it.")
    if maximum is not None and maximum <= 0:
        raise DocumentError(f"scoreMaximum must be greater than 0, got {maximum}.")
    if grading != C.GRADING_FULLY_GRADED:
        # Moodle records a grade only for FullyGraded scores and drops scoreGiven of the
        # others: the gradebook shows no grade for them, as here.
        given = None
    comment = doc.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise DocumentError(f"comment must be a string, got {comment!r}.")
    return Score(user_id, given, maximum, activity, grading, _timestamp(doc), comment)


def result_json(settings: PlatformSettings, context_id: str, item: LineItem, score: Score) -> dict:
    """A result (AGS 2.0 section 3.3.4): the score on the line item's own scale."""
    item_url = settings.lineitem_url(context_id, item.item_id)
    results_url = settings.lineitem_url(context_id, item.item_id, "results")
    doc = {
        "id": f"{results_url}&user_id={quote(score.user_id, safe='')}",
        "scoreOf": item_url,
        "userId": score.user_id,
        "resultScore": score.rescaled(item.score_maximum),
        "resultMaximum": item.score_maximum,
        "timestamp": score.timestamp.isoformat(),
    }
    if score.comment:
        doc["comment"] = score.comment
    return doc


# --- memberships


def short_role(uri: str) -> str:
    """Moodle's NRPS lists roles by short name ("Learner", "Instructor"). A sub-role
    (``membership/Instructor#TeachingAssistant``, which Moodle has none of) stays a
    URI: LTI 1.3 gives short names to context roles only, and "TeachingAssistant"
    alone would lose its principal role (LTI 1.3 appendix A.2.2)."""
    principal, _, name = uri.rpartition("#")
    return name if principal.endswith("/membership") else uri


def member_json(enrolment: Enrolment) -> dict:
    """A member (NRPS 2.0 section 2.2) as Moodle sends it; without the names or the
    e-mail the tool may not have (Moodle's privacy settings; test API: null)."""
    user = enrolment.user
    doc = {"status": enrolment.status}
    if user.given_name or user.family_name:
        doc.update(name=user.name, given_name=user.given_name, family_name=user.family_name)
    if user.email:
        doc["email"] = user.email
    doc.update(user_id=user.sub, roles=[short_role(role) for role in enrolment.roles])
    return doc
