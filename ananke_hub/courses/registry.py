"""The course registry: courses and members in a real database, written transactionally.

SQLite by default (a file in the state directory), PostgreSQL with a URL setting. The
hub and Kore each open it; every write is one transaction made of upserts, so two
launches at the same moment neither lose nor duplicate a record. Calls are blocking:
async code goes through :meth:`CourseRegistry.run`, which uses a thread pool, so the
hub's and Kore's event loops never wait on the database.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import create_engine, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Row
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Int, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..paths import StateLayout
from ..persist import ensure_private_sqlite
from ..roles import Role
from . import launch_sql
from .identity import LaunchInfo
from .launch_sql import LaunchStatements
from .models import COURSE_DELETING, Course, Member, utcnow
from .schema import ensure_current


class CourseBeingDeleted(RuntimeError):
    """A launch of a course that Kore is deleting: refused until the deletion is done."""

    def __init__(self, course_id: str):
        super().__init__(f"course {course_id} is being deleted")
        self.course_id = course_id


@dataclass(frozen=True)
class LaunchRecord:
    """What a launch changed: the course (as stored now) and whether it is new."""

    course_id: str
    title: str
    created: bool
    provisioned: int
    role: str
    #: The gradebook must be told about the member: new, changed, or not written yet.
    member_changed: bool = True


@dataclass(frozen=True)
class LaunchView:
    """What the registry held when a launch arrived (``CourseRegistry.launch_view``)."""

    #: The user's memberships, newest launch first: one row each of the course's and
    #: the member's columns (``launch_sql.LaunchStatements.memberships``).
    rows: list
    #: The launched course's columns (``launch_sql.COURSE_VIEW_COLUMNS``; None: a new
    #: course).
    course: Row | None

    def unchanged(self, info: LaunchInfo, version: int) -> list[tuple[str, str]] | None:
        """The user's ``(course_id, role)`` memberships if this launch has nothing to write.

        A returning member's launch changes nothing when the course and member rows
        already hold everything the launch says, the course is provisioned (``version``)
        and not being deleted, a learner is in the gradebook, and this course is already
        the member's newest launch (``last_launch`` orders their courses, "current"
        first). Otherwise None: ``record_launch`` does the work. The rows are read each
        time rather than trusted from memory, because Kore (another process) changes
        them: roster syncs, course deletion.
        """
        role = member_role(info)
        rows = self.rows
        if not role or not rows or rows[0].id != info.course_id:
            return None  # not a member yet, or another course is their newest launch
        course = member = rows[0]  # the course's and the member's columns
        if course.state == COURSE_DELETING or course.provisioned < version:
            return None
        if (member.role, member.lms_user_id, member.given_name, member.family_name) != (
            role,
            info.lms_user_id,
            info.given_name,
            info.family_name,
        ) or (member.email, member.active) != (info.email, True):
            return None
        if role == str(Role.LEARNER) and not member.in_gradebook:
            return None
        if course_changes(course, info):
            return None
        return [(row.id, row.role) for row in rows if row.active and row.state != COURSE_DELETING]

    def memberships_after(self, record: LaunchRecord) -> list[tuple[str, str]]:
        """The user's ``(course_id, role)`` memberships once ``record`` (of this launch)
        is written: the launched course first (its newest launch), then the others as
        read, active and not being deleted (what ``memberships`` would read again)."""
        launched = [(record.course_id, record.role)] if record.role else []
        return launched + [
            (row.id, row.role)
            for row in self.rows
            if row.active
            and row.state != COURSE_DELETING
            and not (record.role and row.id == record.course_id)
        ]


#: Service URLs a launch never erases when it leaves them out (see record_launch).
KEPT_COURSE_URLS = ("lineitems_url", "lineitem_url", "memberships_url")


def launch_course_values(info: LaunchInfo) -> dict:
    """The course columns a launch sets (``launch_sql.LAUNCH_COURSE_COLUMNS``), from its
    claims: the launch's attributes of the same names (scopes stored as a JSON list)."""
    values = {name: getattr(info, name) for name in launch_sql.LAUNCH_COURSE_COLUMNS}
    values["ags_scopes"] = list(info.ags_scopes)
    return values


def course_changes(course, info: LaunchInfo) -> bool:
    """Whether the launch would change the stored ``course``'s titles or service URLs
    (``course``: a Course, or a row of its columns)."""
    if info.linked_assignment:
        return False  # a placed activity's launch leaves the course's own activity alone
    # A launch that leaves a service URL out keeps the stored one (record_launch).
    return any(
        getattr(course, key) != value and (value or key not in KEPT_COURSE_URLS)
        for key, value in launch_course_values(info).items()
    )


def member_role(info: LaunchInfo) -> str:
    """The course role stored for a launch; administrators count as instructors."""
    role = info.roles.course_role
    if role is None and info.roles.is_administrator:
        role = Role.INSTRUCTOR
    return str(role) if role else ""


class CourseRegistry(LoggingConfigurable):
    """Access to the course registry database."""

    url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the course registry, shared by the hub and Kore.

        Default: a SQLite file `courses.sqlite` in the state directory. For PostgreSQL:
        `postgresql+psycopg://user:password@host/dbname` (install the driver:
        `pip install "ananke[postgres]"`).""",
    )

    threads = Int(
        4,
        config=True,
        help="Threads that run database calls, so they never block the event loop.",
    )

    @validate("threads")
    def _at_least_one_thread(self, proposal):
        if proposal.value < 1:
            raise TraitError(f"CourseRegistry.threads must be at least 1, not {proposal.value}.")
        return proposal.value

    @default("url")
    def _default_url(self):
        return f"sqlite:///{StateLayout.from_env().root / 'courses.sqlite'}"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._engine: Engine | None = None
        self._sessions = None
        self._executor: ThreadPoolExecutor | None = None
        self._init_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._init_lock:  # first use may come from several pool threads at once
            if self._engine is None:
                engine = self._create_engine()
                # A new database is created at the newest schema; any other must be at
                # it (`ananke upgrade-db`): SchemaOutOfDate says so otherwise.
                try:
                    ensure_current(engine)
                except BaseException:
                    engine.dispose()
                    raise
                self._sessions = sessionmaker(engine, expire_on_commit=False)
                self._engine = engine
        return self._engine

    def _create_engine(self) -> Engine:
        if self.url.startswith("sqlite"):
            # Names, e-mails and every score sent: 0600 before SQLite creates it.
            ensure_private_sqlite(self.url)
            engine = create_engine(self.url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                # WAL: the hub and Kore read while the other writes; foreign keys for cascades.
                cursor.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL is crash-safe; a power loss may only lose the last
                # launches' records, which the next launch writes again.
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            return engine
        return create_engine(self.url, pool_pre_ping=True)

    def check_schema(self) -> None:
        """Open the database now (at start-up): create a new one, or raise
        SchemaOutOfDate (run `ananke upgrade-db`) for one at an older schema."""
        self.engine  # noqa: B018

    def session(self) -> Session:
        self.engine  # noqa: B018 (creates the schema on first use)
        return self._sessions()

    def _insert(self):
        return postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert

    def _launch_statements(self) -> LaunchStatements:
        return launch_sql.for_dialect(self.engine.dialect.name)

    async def run(self, func, *args):
        """Run a blocking registry call in the registry's thread pool."""
        return await self.submit(func, *args)

    def submit(self, func, *args) -> asyncio.Future:
        """Start a blocking registry call in the registry's thread pool now (``run`` starts
        it only when awaited): the caller does other work meanwhile, then awaits it."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="registry")
        return asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # --- writes -------------------------------------------------------------------

    def record_launch(self, info: LaunchInfo, seen=None) -> LaunchRecord:
        """Create or update the launch's course and member, in one transaction.

        ``seen``: the course's columns as a read just before found them
        (``LaunchView.course``). When they already hold what this launch says, the course
        is not written, only its state read in this transaction (a deletion may have
        begun since the read).
        """
        now = utcnow()
        role = member_role(info)
        statements = self._launch_statements()
        with self.engine.begin() as conn:
            current = None
            if seen is not None and not course_changes(seen, info):
                current = conn.execute(
                    statements.course_state, {"course_id": info.course_id}
                ).first()  # None: deleted since the read, made again below
            if current is not None:
                if current.state == COURSE_DELETING:
                    raise CourseBeingDeleted(info.course_id)
                created, provisioned = None, current.provisioned
            else:
                course_values = {**launch_course_values(info), "updated_at": now}
                created = self._write_course(conn, info, course_values, now)
            member_changed = self._write_member(conn, statements, info, role, now)
            if current is None:
                provisioned = (
                    conn.execute(statements.course_state, {"course_id": info.course_id})
                    .first()
                    .provisioned
                )
        return LaunchRecord(
            info.course_id, info.title, bool(created), provisioned, role, member_changed
        )

    def _write_course(self, conn, info: LaunchInfo, course_values: dict, now):
        """The launch's course: created, or its launch values updated (record_launch).
        Built at each call: a course is created or changed far less often than a
        member's row is written."""
        insert = self._insert()
        created = conn.execute(
            insert(Course)
            .values(
                id=info.course_id,
                issuer=info.issuer,
                client_id=info.client_id,
                deployment_id=info.deployment_id,
                resource_link_id=info.resource_link_id,
                settings={},
                provisioned=0,
                created_at=now,
                **course_values,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(Course.id)
        ).first()
        if not created:
            state = conn.scalar(select(Course.state).where(Course.id == info.course_id))
            if state == COURSE_DELETING:
                raise CourseBeingDeleted(info.course_id)
        # A placed activity's launch (Deep Linking) leaves the course's own activity
        # (titles, service URLs) as it is.
        if not created and not info.linked_assignment:
            # A launch never erases a service URL an earlier launch gave: Moodle leaves
            # `lineitem` out of every launch once tool-made line items are bound to
            # the link (AGS 2.0 section 3.1), which does not make the activity ungraded.
            conn.execute(
                update(Course)
                .where(Course.id == info.course_id)
                .values(
                    **{k: v for k, v in course_values.items() if v or k not in KEPT_COURSE_URLS}
                )
            )
        return created

    def _write_member(self, conn, statements, info: LaunchInfo, role: str, now) -> bool:
        """The launch's member row (none without a course role); whether the gradebook
        must be told about them (record_launch)."""
        if not role:
            return False
        values = {
            "course_id": info.course_id,
            "username": info.username,
            "role": role,
            "lms_user_id": info.lms_user_id,
            "given_name": info.given_name,
            "family_name": info.family_name,
            "email": info.email,
            "active": True,
            "last_launch": now,
            "first_launch": now,
            "in_gradebook": False,
        }
        known = conn.execute(
            statements.member, {"course_id": info.course_id, "username": info.username}
        ).first()
        member_changed = known is None or tuple(known) != (
            role,
            info.lms_user_id,
            info.given_name,
            info.family_name,
            info.email,
            True,
            True,
        )
        upsert = (
            statements.upsert_member if member_changed else statements.upsert_member_in_gradebook
        )
        conn.execute(upsert, values)
        return member_changed

    def mark_in_gradebook(self, course_id: str, usernames: list[str]) -> None:
        with self.session() as session, session.begin():
            session.execute(
                update(Member)
                .where(Member.course_id == course_id, Member.username.in_(usernames))
                .values(in_gradebook=True)
            )

    def mark_provisioned(self, course_id: str, version: int) -> None:
        with self.session() as session, session.begin():
            session.execute(
                update(Course)
                .where(Course.id == course_id, Course.provisioned < version)
                .values(provisioned=version)
            )

    def update_settings(self, course_id: str, changes: dict) -> dict:
        with self.session() as session, session.begin():
            course = session.get(Course, course_id, with_for_update=True)
            if course is None:
                raise KeyError(course_id)
            course.settings = {**(course.settings or {}), **changes}
            return dict(course.settings)

    # --- reads --------------------------------------------------------------------

    def launch_view(self, info: LaunchInfo) -> "LaunchView":
        """One read of what a launch needs: the user's memberships with their courses,
        newest launch first, and the launched course's row."""
        statements = self._launch_statements()
        with self.engine.connect() as conn:
            rows = conn.execute(statements.memberships, {"username": info.username}).all()
            course = next((row for row in rows if row.id == info.course_id), None)
            if course is None:
                course = conn.execute(statements.course, {"course_id": info.course_id}).first()
        return LaunchView(rows, course)

    def unchanged_launch(self, info: LaunchInfo, version: int) -> list[tuple[str, str]] | None:
        """The user's ``(course_id, role)`` memberships if this launch has nothing to
        write (``LaunchView.unchanged``), else None."""
        return self.launch_view(info).unchanged(info, version)

    def unenrolled_launches(self, username: str) -> list[Member]:
        """The user's launched learner memberships not yet in their course's gradebook.

        ``in_gradebook`` is set only after the gradebook commit (``mark_in_gradebook``
        after nbgrader's enrolment), and reset by a launch that changed the person's
        data; so these are exactly the courses whose gradebook a lab must wait for.
        Only active members of courses not being deleted; a course not set up yet
        (its set-up follows a learner's login, and a restart may cut it off) is among
        them: the caller sets it up first.
        """
        with self.session() as session:
            return list(
                session.scalars(
                    select(Member)
                    .join(Course, Member.course_id == Course.id)
                    .where(
                        Member.username == username,
                        Member.role == str(Role.LEARNER),
                        Member.active.is_(True),
                        Member.in_gradebook.is_(False),
                        Member.last_launch.is_not(None),
                        Course.state != COURSE_DELETING,
                    )
                    .order_by(Member.course_id)
                )
            )

    def get(self, course_id: str) -> Course | None:
        with self.session() as session:
            return session.get(Course, course_id)

    def members(self, course_id: str) -> list[Member]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(Member).where(Member.course_id == course_id).order_by(Member.username)
                )
            )

    def roster_course_ids(self) -> list[str]:
        """Active courses whose launches named a roster service (NRPS), oldest first."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Course.id)
                    .where(Course.memberships_url != "", Course.state != COURSE_DELETING)
                    .order_by(Course.created_at)
                )
            )

    def person_name(self, username: str) -> str:
        """The person's name as their latest launch or roster sync gave it ("" if none)."""
        with self.session() as session:
            row = session.execute(
                select(Member.given_name, Member.family_name)
                .where(Member.username == username)
                .order_by(Member.last_launch.desc().nulls_last())
                .limit(1)
            ).first()
        if row is None:
            return ""
        return " ".join(part for part in row if part).strip()

    def person_names(self) -> dict[str, str]:
        """Every member's name (``person_name``), by user name."""
        with self.session() as session:
            rows = session.execute(
                select(Member.username, Member.given_name, Member.family_name).order_by(
                    Member.last_launch.asc().nulls_first()
                )
            )
            names = {}
            for username, given, family in rows:  # the latest launch wins
                name = " ".join(part for part in (given, family) if part)
                if name:
                    names[username] = name
            return names

    def memberships(self, username: str) -> list[tuple[Course, str]]:
        """The courses of ``username`` with their role in each, newest launch first."""
        with self.session() as session:
            rows = session.execute(
                select(Course, Member.role)
                .join(Member, Member.course_id == Course.id)
                .where(Member.username == username, Member.active.is_(True))
                .order_by(Member.last_launch.desc())
            )
            return [(course, role) for course, role in rows]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._engine is not None:
            self._engine.dispose()
