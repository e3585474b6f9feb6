"""The platform's gradebook, for people and tests: what the tool's scores left behind.

`GET /gradebook`: one table per course, a row per learner (Inactive ones marked), a
column per line item (label and maximum), in each cell the latest score on the line
item's scale (rescaled as Moodle does when the tool sent another maximum, with what
was sent), and its timestamp. `GET /gradebook.json`: the same as data. No login: the
platform is a test double with made-up people.
"""

from ..documents import lineitem_json, member_json
from ..settings import PlatformSettings
from ..store import Course, PlatformStore
from .base import PlatformHandler


def number(value: float) -> str:
    """12.5 -> "12.5", 150.0 -> "150", 2/3 -> "0.67"."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def course_gradebook(settings: PlatformSettings, course: Course) -> dict:
    context = course.context
    scores = []
    for (item_id, user_id), score in course.scores.items():
        item = course.lineitems[item_id]
        scores.append(
            {
                "lineitem": settings.lineitem_url(course.id, item_id),
                "userId": user_id,
                "scoreGiven": score.score_given,
                "scoreMaximum": score.score_maximum,
                "resultScore": score.rescaled(item.score_maximum),
                "resultMaximum": item.score_maximum,
                "activityProgress": score.activity_progress,
                "gradingProgress": score.grading_progress,
                "timestamp": score.timestamp.isoformat(),
                "comment": score.comment,
            }
        )
    return {
        "id": context.id,
        "label": context.label,
        "title": context.title,
        "lineitems": [lineitem_json(settings, course.id, i) for i in course.lineitems.values()],
        "learners": [member_json(e) for e in course.learners()],
        "scores": scores,
    }


class GradebookHandler(PlatformHandler):
    @property
    def store(self) -> PlatformStore:
        return self.settings["platform_store"]

    def get(self):
        self.render(
            "gradebook.html",
            courses=self.store.courses.values(),
            number=number,
        )


class GradebookJSONHandler(GradebookHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(
            {"contexts": [course_gradebook(self.platform, c) for c in self.store.courses.values()]}
        )


ROUTES = [
    (r"/gradebook", GradebookHandler),
    (r"/gradebook\.json", GradebookJSONHandler),
]
