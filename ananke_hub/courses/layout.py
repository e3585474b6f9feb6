"""Every path of a course, derived from its id on the server.

No path ever comes from a request: routes and launches carry course ids, which are
checked against the id format before anything is joined to them.

A course's files live in the home of its grader account, ``grader-<course id>``: the
formgrader runs as that user with the home as nbgrader's course directory. Under
systemd the home is the dynamic user's StateDirectory (``/var/lib/private/<user>``);
with the local spawner it is ``<home_root>/<user>``. Students exchange assignments
through ``<exchange_root>/<course id>/``.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from traitlets import Unicode
from traitlets.config import Config, Configurable

from ..paths import COURSE_LAYOUT_ENV, StateLayout, systemd_is_pid1
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


# --- where the course files are: one resolution for the hub, Kore and the CLI ------------


def layout_defaults(state: StateLayout, systemd: bool) -> Config:
    """``c.CourseLayout`` before the fragments: with the local spawner (systemd is not
    PID 1) homes and the exchange are in the state directory; under systemd the traits'
    defaults (dynamic users' ``/var/lib/private``)."""
    cfg = Config()
    if not systemd:
        cfg.CourseLayout.homes_root = str(state.local_homes)
        cfg.CourseLayout.exchange_root = str(state.root / "exchange")
    return cfg


def layout_environment(layout: CourseLayout) -> dict[str, str]:
    """The layout the hub resolved, as the environment of the processes it starts (Kore)."""
    return {var: getattr(layout, trait) for var, trait in COURSE_LAYOUT_ENV.items()}


def layout_from_environment(environ: Mapping[str, str]) -> Config:
    """``c.CourseLayout`` from :func:`layout_environment`'s variables, where set."""
    cfg = Config()
    for var, trait in COURSE_LAYOUT_ENV.items():
        if environ.get(var):
            cfg.CourseLayout[trait] = environ[var]
    return cfg


def resolved_layout_config(
    fragments: Config,
    state: StateLayout,
    environ: Mapping[str, str] | None = None,
    *,
    systemd: bool | None = None,
) -> Config:
    """The fragments' config with ``c.CourseLayout`` resolved as the hub does it.

    The hub's defaults for its spawner, then the fragments (an admin's setting wins),
    then what the hub resolved and handed down in ``environ`` (Kore started by the hub;
    the hub itself passes ``{}``: it is the one that resolves).
    """
    cfg = layout_defaults(state, systemd_is_pid1() if systemd is None else systemd)
    cfg.merge(fragments)
    cfg.merge(layout_from_environment(os.environ if environ is None else environ))
    return cfg
