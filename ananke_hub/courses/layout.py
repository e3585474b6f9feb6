"""Every path of a course, derived from its id on the server.

No path ever comes from a request: routes and launches carry course ids, which are
checked against the id format before anything is joined to them.

A course's files live in the home of its grader account, ``grader-<course id>``: the
formgrader runs as that user with the home as nbgrader's course directory. Under
systemd the home is the dynamic user's StateDirectory (``/var/lib/private/<user>``);
with the local spawner it is ``<home_root>/<user>``. Students exchange assignments
through ``<exchange_root>/<course id>/``.
"""

from dataclasses import dataclass
from pathlib import Path

from traitlets import Unicode
from traitlets.config import Configurable

from .identity import is_course_id

GRADER_PREFIX = "grader-"


class InvalidCourseId(ValueError):
    pass


def check_course_id(course_id: str) -> str:
    if not is_course_id(course_id):
        raise InvalidCourseId(f"{course_id!r} is not a course id (c- and 16 hex digits)")
    return course_id


def grader_username(course_id: str) -> str:
    return GRADER_PREFIX + check_course_id(course_id)


def course_of_grader(username: str) -> str | None:
    """The course a grader account belongs to, or None for any other user name."""
    if username.startswith(GRADER_PREFIX):
        course_id = username[len(GRADER_PREFIX) :]
        if is_course_id(course_id):
            return course_id
    return None


@dataclass(frozen=True)
class CoursePaths:
    course_id: str
    home: Path  # the grader's home = nbgrader's course directory (CourseDirectory.root)
    exchange: Path  # <exchange_root>/<course id>

    @property
    def nbgrader_config(self) -> Path:
        # JSON, so settings are data (nbgrader loads nbgrader_config.json like .py).
        return self.home / "nbgrader_config.json"

    @property
    def gradebook(self) -> Path:
        return self.home / "gradebook.db"

    @property
    def gradebook_url(self) -> str:
        return f"sqlite:///{self.gradebook}"

    @property
    def source(self) -> Path:
        return self.home / "source"

    @property
    def inbound(self) -> Path:
        return self.exchange / "inbound"

    @property
    def outbound(self) -> Path:
        return self.exchange / "outbound"

    @property
    def feedback(self) -> Path:
        return self.exchange / "feedback"


class CourseLayout(Configurable):
    """Where homes and the exchange are; set by the shipped hub config per spawner."""

    homes_root = Unicode(
        "/var/lib/private",
        config=True,
        help="""Directory holding users' homes as the hub sees them: systemd's
        `/var/lib/private` for dynamic users, the local spawner's home_root otherwise.""",
    )

    exchange_root = Unicode(
        "/opt/nbgrader_exchange",
        config=True,
        help="nbgrader's exchange directory, shared by all courses (one subdirectory each).",
    )

    def home_of(self, username: str) -> Path:
        # Usernames are checked names (u<sub>, grader-<course id>); refuse anything else.
        if not username or "/" in username or username in (".", ".."):
            raise ValueError(f"{username!r} is not a user name")
        return Path(self.homes_root) / username

    def course(self, course_id: str) -> CoursePaths:
        return CoursePaths(
            course_id=check_course_id(course_id),
            home=self.home_of(grader_username(course_id)),
            exchange=Path(self.exchange_root) / course_id,
        )
