"""The statements of a launch's registry trip, built once per database dialect.

A launch's trip (``provision.read_or_record``) runs in the registry's thread while the
hub's event loop makes the user's hub account, and that thread shares the GIL with the
event loop: its Python work is the login's time. Building a statement at each call
(``insert(...).values(...)``, ``select(Course, Member)`` with ORM instances) cost about
ten times what running it on SQLite costs (~1.5 ms of CPU per first launch). These are
built once, take the launch's values as bind parameters, and run on a Core connection:
no ORM session, no instances, SQLAlchemy's compiled-statement cache hit every time.
"""

from functools import cache

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select

from .models import Course, Member

COURSES = Course.__table__
MEMBERS = Member.__table__

#: The course columns a launch sets from its claims, named as LaunchInfo's attributes
#: (``registry.launch_course_values``).
LAUNCH_COURSE_COLUMNS = (
    "context_id",
    "context_label",
    "context_title",
    "link_title",
    "title",
    "lineitems_url",
    "lineitem_url",
    "ags_scopes",
    "memberships_url",
)
#: What a launch reads of a course: the above, its state and provisioning version.
COURSE_VIEW_COLUMNS = ("id", "state", "provisioned", *LAUNCH_COURSE_COLUMNS)
#: A member's columns a launch sets from its claims.
MEMBER_PERSON_COLUMNS = ("role", "lms_user_id", "given_name", "family_name", "email", "active")
#: What a launch reads of a member row, to tell whether it changes anything.
MEMBER_VIEW_COLUMNS = (*MEMBER_PERSON_COLUMNS, "in_gradebook")
#: What a launch writes into its member row (``first_launch`` only when it has none).
MEMBER_LAUNCH_COLUMNS = (*MEMBER_PERSON_COLUMNS, "last_launch", "in_gradebook")


def _bind(table, name: str):
    return bindparam(name, type_=table.c[name].type)


class LaunchStatements:
    """A launch's reads and its member upsert, for one dialect (``for_dialect``)."""

    def __init__(self, dialect: str):
        #: The user's memberships with their courses (one row each: the course's view
        #: columns, then the member's), newest launch first; roster-added members, who
        #: never launched, last.
        self.memberships: Select = (
            select(
                *(COURSES.c[name] for name in COURSE_VIEW_COLUMNS),
                *(MEMBERS.c[name] for name in MEMBER_VIEW_COLUMNS),
            )
            .join_from(COURSES, MEMBERS, MEMBERS.c.course_id == COURSES.c.id)
            .where(MEMBERS.c.username == bindparam("username"))
            .order_by(MEMBERS.c.last_launch.desc().nulls_last())
        )
        #: One course's view columns.
        self.course: Select = select(*(COURSES.c[name] for name in COURSE_VIEW_COLUMNS)).where(
            COURSES.c.id == bindparam("course_id")
        )
        #: A course's state and provisioning version, read in the write's transaction.
        self.course_state: Select = select(COURSES.c.state, COURSES.c.provisioned).where(
            COURSES.c.id == bindparam("course_id")
        )
        #: The member row of the launch, read in the write's transaction.
        self.member: Select = select(*(MEMBERS.c[name] for name in MEMBER_VIEW_COLUMNS)).where(
            MEMBERS.c.course_id == bindparam("course_id"),
            MEMBERS.c.username == bindparam("username"),
        )
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        new_row = insert(MEMBERS).values(
            {
                name: _bind(MEMBERS, name)
                for name in ("course_id", "username", "first_launch", *MEMBER_LAUNCH_COLUMNS)
            }
        )

        def upsert(columns):
            updates = {name: new_row.excluded[name] for name in columns}
            # A member the roster added has no first launch yet: this is it.
            updates["first_launch"] = func.coalesce(
                MEMBERS.c.first_launch, new_row.excluded.first_launch
            )
            return new_row.on_conflict_do_update(
                index_elements=["course_id", "username"], set_=updates
            )

        #: The launch's member row, created or updated; its gradebook flag is reset
        #: (``in_gradebook`` false: new, or their data changed).
        self.upsert_member = upsert(MEMBER_LAUNCH_COLUMNS)
        #: The same for a member whose data did not change: the flag stays.
        self.upsert_member_in_gradebook = upsert(
            [name for name in MEMBER_LAUNCH_COLUMNS if name != "in_gradebook"]
        )


@cache
def for_dialect(dialect: str) -> LaunchStatements:
    """The statements for ``dialect`` ("sqlite", "postgresql"), built on first use."""
    return LaunchStatements(dialect)
