"""Course provisioning at launch: no hub restart, nothing blocking in the event loop.

Called by the authenticator after a launch passed every check (signature, allow and
block lists). One launch:

1. records the course and the member in the registry (one transaction);
2. makes sure the course exists on disk: the grader account's home as nbgrader's course
   directory with its gradebook, and the exchange directories. Each step is idempotent
   and the registry marks a course provisioned only after all of them, so a launch that
   failed half-way is finished by the next one;
3. enrols a learner in the gradebook (names and e-mail kept up to date);
4. returns the hub groups and roles of the user across ALL their courses (JupyterHub's
   managed groups and roles replace a user's set at login, so a second course must not
   drop the first): learners in ``nbgrader-<course>``, instructors and TAs in
   ``formgrade-<course>`` with a role that reaches the grader's server by leaf scopes
   (group shares give no browser access; see DESIGN.md).
"""

import asyncio
import importlib
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from traitlets import Float, Instance, TraitError, default, validate
from traitlets.config import LoggingConfigurable

from ..roles import Role
from .identity import LaunchInfo
from .layout import CourseLayout, course_of_grader, grader_username
from .models import COURSE_DELETING
from .registry import CourseBeingDeleted, CourseRegistry

NBGRADER_SETUP = "ananke_hub.courses.nbgrader_setup"

#: Bump when provisioning gains a step: courses below it are finished at their next launch.
PROVISION_VERSION = 1

STAFF_ROLES = {str(Role.INSTRUCTOR), str(Role.TEACHING_ASSISTANT)}


class ProvisioningError(RuntimeError):
    """A provisioning step failed; the launch is refused and the next one retries."""


def learner_group(course_id: str) -> str:
    return f"nbgrader-{course_id}"


def staff_group(course_id: str) -> str:
    return f"formgrade-{course_id}"


def staff_role(course_id: str) -> dict:
    """The managed role giving a course's instructors and TAs its grader's server."""
    server = f"{grader_username(course_id)}/"
    return {
        "name": f"staff-{course_id}",
        "description": "Instructors and teaching assistants of one course: its formgrader.",
        # Leaf scopes: OAuth tokens for the grader's server only carry expanded leaves.
        "scopes": [
            f"access:servers!server={server}",
            f"start:servers!server={server}",
            f"read:servers!server={server}",
        ],
    }


#: JupyterHub's OAuth client of a user's default server: ``jupyterhub-user-<quoted name>``
#: (jupyterhub/user.py); the grader's server of a course is such a client.
USER_SERVER_CLIENT_PREFIX = "jupyterhub-user-"


def grader_client_id(course_id: str) -> str:
    """The OAuth client id of the course's grader server, as JupyterHub names it."""
    return USER_SERVER_CLIENT_PREFIX + quote(grader_username(course_id))


def course_of_grader_client(client_id: str | None) -> str | None:
    """The course whose grader server ``client_id`` is, or None for any other client."""
    if not client_id or not client_id.startswith(USER_SERVER_CLIENT_PREFIX):
        return None
    return course_of_grader(unquote(client_id[len(USER_SERVER_CLIENT_PREFIX) :]))


def trust_graders(settings: dict, course_ids: list[str]) -> None:
    """Open these courses' grader servers without the hub's OAuth consent page.

    JupyterHub asks a user to confirm before another user's server learns who they are;
    for the formgrader of a course they teach, that page is a pointless extra click. The
    hub keeps the set of clients that need no confirmation in its tornado settings
    (services with ``oauth_no_confirm``); a grader server's client is added for its staff
    at each launch, so it holds again after a hub restart once they launch. This set is
    JupyterHub's internal: its public ``oauth_no_confirm`` is for services only, whose
    client ids must start with ``service-``, never a user server's;
    ``tests/test_upstream_internals.py`` fails when a release changes it.
    """
    no_confirm = settings.get("oauth_no_confirm_list")
    if isinstance(no_confirm, set):
        no_confirm.update(grader_client_id(cid) for cid in course_ids)


#: Hub user name -> the person's name from their latest launch, for the hub's pages
#: (``person_name_var``). Kept in memory: the hub's templates are rendered in its event
#: loop, where the registry must not be asked; filled at hub start and at each launch.
PERSON_NAMES: dict[str, str] = {}


def person_name_var(user) -> str:
    """``c.JupyterHub.template_vars["ananke_person_name"]``: the name the header shows."""
    return PERSON_NAMES.get(user.name, "") if user is not None else ""


@dataclass(frozen=True)
class Entitlements:
    """What a user gets on the hub from all their courses."""

    groups: list[str]
    roles: list[dict]
    #: The courses whose grader server the user may reach (instructor or TA).
    staff_courses: frozenset[str] = frozenset()


def entitlements(memberships: list[tuple[str, str]]) -> Entitlements:
    """Groups and roles from ``(course_id, role)`` pairs; always keeps the ``user`` role."""
    groups, roles, staff = set(), [{"name": "user"}], set()
    for course_id, role in memberships:
        if role in STAFF_ROLES:
            groups.add(staff_group(course_id))
            roles.append(staff_role(course_id))
            staff.add(course_id)
        elif role == str(Role.LEARNER):
            groups.add(learner_group(course_id))
    return Entitlements(sorted(groups), roles, frozenset(staff))


def current_memberships(registry: CourseRegistry, username: str) -> list[tuple[str, str]]:
    """``(course_id, role)`` of the user's active memberships in courses that are not
    being deleted (blocking: call through ``registry.run``)."""
    return [
        (course.id, role)
        for course, role in registry.memberships(username)
        if course.state != COURSE_DELETING
    ]


def read_or_record(registry: CourseRegistry, info: LaunchInfo, version: int):
    """A launch's registry work in one thread-pool call: ``(None, memberships)`` when it
    changes nothing (``LaunchView.unchanged``: one read), else ``(record, memberships)``,
    written with what that read saw (an unchanged course is not written again; the
    memberships follow from the read). Raises CourseBeingDeleted as record_launch does."""
    view = registry.launch_view(info)
    pairs = view.unchanged(info, version)
    if pairs is not None:
        return None, pairs
    record = registry.record_launch(info, seen=view.course)
    return record, view.memberships_after(record)


class GradebookEnrolments:
    """Learners' first launches of one course, enrolled together.

    When a class launches at once, each first launch would open the course's gradebook
    on its own (nbgrader_setup serialises them with a per-course lock). Here the
    launches that arrive while a course's enrolment is running wait and are enrolled
    in the next one: one gradebook transaction and one registry write for all of them.
    Each caller waits until its own student is committed to the gradebook.

    A batch starts ``window`` seconds after the first launch that waits for it (more
    launches arrive meanwhile: fewer, larger transactions, and no gradebook work
    competing with the launches that follow), or at once when a lab is about to start
    (``kick``): a lab never waits for the window.
    """

    def __init__(self, registry: CourseRegistry, window: float = 0):
        self.registry = registry
        self.window = window
        self._waiting: dict[str, list[tuple[object, asyncio.Future]]] = {}
        self._running: set[str] = set()
        self._kicks: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Future] = set()
        #: Batches enrolled (for tests and logs): list of their sizes.
        self.batches: list[int] = []

    async def enrol(self, nbgrader_setup, paths, student, now: bool = False) -> None:
        """Enrol ``student`` in the course's next batch; ``now``: without the window."""
        course_id = paths.course_id
        done = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(course_id, []).append((student, done))
        kick = self._kicks.setdefault(course_id, asyncio.Event())
        if now:
            kick.set()
        if course_id not in self._running:
            self._running.add(course_id)
            # Held here: the loop keeps only a weak reference to a task.
            self._tasks.add(task := asyncio.ensure_future(self._drain(nbgrader_setup, paths)))
            task.add_done_callback(self._tasks.discard)
        await done

    def kick(self, course_id: str) -> None:
        """Start the course's waiting batch now (a lab is about to start)."""
        if course_id in self._kicks:
            self._kicks[course_id].set()

    async def _drain(self, nbgrader_setup, paths) -> None:
        course_id = paths.course_id
        try:
            while course_id in self._waiting:
                kick = self._kicks[course_id]
                if self.window > 0 and not kick.is_set():
                    with suppress(TimeoutError):
                        await asyncio.wait_for(kick.wait(), self.window)
                kick.clear()
                batch = self._waiting.pop(course_id)
                try:
                    await self._write(nbgrader_setup, paths, [s for s, _ in batch])
                except Exception:
                    if len(batch) == 1:
                        _settle(batch[0][1], sys.exc_info()[1])
                        continue
                    # One bad record must not fail the others: each on its own.
                    for student, done in batch:
                        try:
                            await self._write(nbgrader_setup, paths, [student])
                        except Exception as exc:
                            _settle(done, exc)
                        else:
                            _settle(done, None)
                else:
                    for _, done in batch:
                        _settle(done, None)
        finally:
            self._running.discard(course_id)
            if course_id not in self._waiting:
                self._kicks.pop(course_id, None)

    async def _write(self, nbgrader_setup, paths, students) -> None:
        # The same person twice in a batch (two tabs): their latest data counts.
        latest = list({s.username: s for s in students}.values())
        self.batches.append(len(latest))
        await self.registry.run(nbgrader_setup.enrol_students, paths, latest)
        await self.registry.run(
            self.registry.mark_in_gradebook, paths.course_id, [s.username for s in latest]
        )


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():  # the launch was cancelled (client gone)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class CourseProvisioner(LoggingConfigurable):
    """Creates and updates courses when people launch them."""

    registry = Instance(CourseRegistry)
    layout = Instance(CourseLayout)

    enrolments = Instance(GradebookEnrolments)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: user name -> their gradebook enrolments started by launches, not finished
        #: (each with its course).
        self._pending: dict[str, dict[asyncio.Future, str]] = {}
        self._nbgrader = None
        #: Courses whose grader account this process made sure of (a course made anew,
        #: e.g. after its deletion, is made sure of again).
        self._graders_kept: set[str] = set()
        #: course id -> its course set-up in progress (shared by concurrent launches).
        self._setups: dict[str, asyncio.Future] = {}

    enrolment_batch_window = Float(
        1.0,
        config=True,
        help="""Seconds a new student's gradebook enrolment waits for more students of
        the same course before it runs (after their login answered): a class arriving
        together is enrolled in a few gradebook transactions instead of one each. A lab
        never waits for it: when a student's lab starts, their enrolment runs at once
        (and the lab starts after it). 0 enrols each student right after their login.""",
    )

    @validate("enrolment_batch_window")
    def _valid_window(self, proposal):
        if not 0 <= proposal.value <= 60:
            raise TraitError(
                "CourseProvisioner.enrolment_batch_window must be between 0 and 60 "
                f"seconds, not {proposal.value}."
            )
        return proposal.value

    @default("enrolments")
    def _default_enrolments(self):
        return GradebookEnrolments(self.registry, window=self.enrolment_batch_window)

    @default("registry")
    def _default_registry(self):
        return CourseRegistry(parent=self)

    @default("layout")
    def _default_layout(self):
        return CourseLayout(parent=self)

    def prepare(self) -> None:
        """At hub start, in the background: import nbgrader (seconds; the first launch
        should not wait for it) and create the exchange root, which must exist before
        any lab unit starts (systemd refuses a missing ReadWritePaths=)."""

        def work():
            nbgrader_setup = importlib.import_module(NBGRADER_SETUP)
            self._nbgrader = nbgrader_setup  # imported: launches need no thread hop for it
            try:
                nbgrader_setup.warm_up()
                nbgrader_setup.ensure_exchange_root(Path(self.layout.exchange_root))
            except OSError as exc:
                self.log.error(
                    "courses: cannot create the nbgrader exchange %s (%s): labs cannot "
                    "exchange assignments until it exists.",
                    self.layout.exchange_root,
                    exc,
                )
            try:
                PERSON_NAMES.update(self.registry.person_names())
            except Exception:
                # Only names in the header; each launch adds its person's name again.
                self.log.exception("courses: reading people's names from the registry failed")

        threading.Thread(target=work, name="courses-prepare", daemon=True).start()

    async def provision(self, handler, info: LaunchInfo, meanwhile=None) -> Entitlements:
        """The launch's registry work, course set-up and enrolment; the user's groups and
        roles. ``meanwhile``: a coroutine function the login runs while the registry's
        thread works (the new hub user's creation, see the authenticator)."""
        registry = self.registry
        # One thread-pool call: a returning member whose claims did not change is one
        # read, no write, no nbgrader; anything else is recorded in the same call.
        trip = registry.submit(read_or_record, registry, info, PROVISION_VERSION)
        if meanwhile is not None:
            try:
                await meanwhile()
            except BaseException:
                # The trip ends on its own; its outcome is of no use now (not logged twice).
                trip.add_done_callback(lambda f: f.cancelled() or f.exception())
                raise
        try:
            record, pairs = await trip
        except CourseBeingDeleted:
            self.log.info(
                "course:%s user:%s launch refused: the course is being deleted",
                info.course_id,
                info.username,
            )
            raise ProvisioningError(
                "This course is being deleted on the hub. Try again in a minute: once the "
                "deletion is done, launching from the LMS sets the course up anew."
            ) from None
        if record is not None:
            await self._provision_recorded(handler, info, record)
        elif info.course_id not in self._graders_kept:
            # The grader account exists since the course's first launch; this finds it and
            # keeps its group (courses made before the group existed get it here too),
            # once per course in this hub process: no hub database query per launch.
            self._ensure_grader(handler, info.course_id)
        trust_graders(handler.settings, [cid for cid, role in pairs if role in STAFF_ROLES])
        return entitlements(pairs)

    def _ensure_grader(self, handler, course_id: str) -> None:
        """The course's grader account (it owns the course directory and runs the
        formgrader), in its one group.

        nbgrader's JupyterHubAuthPlugin lists an account's courses from its hub groups
        (nbgrader-<c>, formgrade-<c>): without one, the formgrader's exchange listing
        drops the course, so it never sees a release ("draft" stays, no Collect). Kept at
        every launch so courses made before this get it too; a group carries no scopes
        here (roles are per user), so this grants nothing.
        """
        grader = handler.user_from_username(grader_username(course_id))
        grader.sync_groups([staff_group(course_id)])
        self._graders_kept.add(course_id)

    async def _provision_recorded(self, handler, info: LaunchInfo, record) -> None:
        """After a first launch, or one that changed something, was recorded: set the
        course up, enrol a learner (after the login answered)."""
        name = " ".join(part for part in (info.given_name, info.family_name) if part)
        if name:
            PERSON_NAMES[info.username] = name
        log_prefix = f"course:{info.course_id} user:{info.username}"
        if record.created:
            self.log.info("%s created course %r", log_prefix, record.title)

        if record.created or info.course_id not in self._graders_kept:
            # A course made anew (e.g. after its deletion) gets its grader account again.
            self._ensure_grader(handler, info.course_id)
        paths = self.layout.course(info.course_id)
        learner = record.role == str(Role.LEARNER)
        try:
            fresh = record.provisioned < PROVISION_VERSION
            if fresh and not learner:
                # Staff go on to the formgrader and Kore: the course is set up first. A
                # learner's login does not wait: their enrolment follows the set-up, and
                # their lab's start waits for both (ensure_enrolled).
                # nbgrader takes seconds to import: in a thread (preloaded at start).
                nbgrader_setup = await self._nbgrader_setup()
                await self._set_up_course(nbgrader_setup, paths, log_prefix)
            # The gradebook only changes when the student is new or their data changed.
            if learner and (record.member_changed or fresh):
                # Off the login's critical path (not even nbgrader's import, which a
                # hub just started may still be making): ensure_enrolled, before any
                # lab of the user starts, waits for it (or does it after a restart).
                self._enrol_later(paths, info, set_up=fresh)
        except Exception as exc:
            self.log.exception("%s provisioning failed", log_prefix)
            raise ProvisioningError(
                "Setting up this course on the hub failed. Please launch again in a "
                "minute; if it keeps failing, tell the hub's administrators."
            ) from exc

    async def _set_up_course(self, nbgrader_setup, paths, log_prefix: str) -> None:
        """The course's files, once for all the launches waiting for them: the first
        launches of a new course, arriving together, share one set-up."""
        course_id = paths.course_id
        task = self._setups.get(course_id)
        if task is None:
            task = self._setups[course_id] = asyncio.ensure_future(
                self._set_up_course_now(nbgrader_setup, paths, log_prefix)
            )
            task.add_done_callback(lambda _: self._setups.pop(course_id, None))
        # Shielded: one launch cancelled (client gone) does not cancel it for the others.
        await asyncio.shield(task)

    async def _set_up_course_now(self, nbgrader_setup, paths, log_prefix: str) -> None:
        registry = self.registry
        course = await registry.run(registry.get, paths.course_id)
        if course is None or course.provisioned >= PROVISION_VERSION:
            return  # set up meanwhile (by a set-up these launches did not see), or gone
        settings = nbgrader_setup.CourseSettings.from_dict(course.settings or {})
        await registry.run(nbgrader_setup.ensure_course_files, paths, paths.course_id, settings)
        await registry.run(registry.mark_provisioned, paths.course_id, PROVISION_VERSION)
        self.log.info("%s course files ready in %s", log_prefix, paths.home)

    async def _nbgrader_setup(self):
        """The nbgrader_setup module; imported in a thread (it takes seconds), once."""
        if self._nbgrader is None:
            self._nbgrader = await self.registry.run(importlib.import_module, NBGRADER_SETUP)
        return self._nbgrader

    async def _enrol(self, paths, info: LaunchInfo, set_up: bool) -> None:
        nbgrader_setup = await self._nbgrader_setup()
        if set_up:
            await self._set_up_course(nbgrader_setup, paths, f"course:{paths.course_id}")
        student = nbgrader_setup.StudentRecord(
            username=info.username,
            lms_user_id=info.lms_user_id,
            given_name=info.given_name,
            family_name=info.family_name,
            email=info.email,
        )
        await self.enrolments.enrol(nbgrader_setup, paths, student)

    def _enrol_later(self, paths, info: LaunchInfo, set_up: bool = False) -> None:
        """Start the launch's student's gradebook enrolment (after the course's set-up
        when ``set_up``) without waiting for it."""
        username = info.username
        task = asyncio.ensure_future(self._enrol(paths, info, set_up))
        self._pending.setdefault(username, {})[task] = paths.course_id

        def done(task):
            pending = self._pending.get(username)
            if pending is not None:
                pending.pop(task, None)
                if not pending:
                    del self._pending[username]
            if not task.cancelled() and task.exception() is not None:
                # Logged here; the lab's start tries again (ensure_enrolled) and says so.
                self.log.error(
                    "course:%s user:%s gradebook enrolment failed (tried again when their "
                    "lab starts): %s",
                    paths.course_id,
                    username,
                    task.exception(),
                )

        task.add_done_callback(done)

    async def ensure_enrolled(self, username: str) -> None:
        """Before a lab of ``username`` starts: they are in the gradebook of every course
        they launched as a learner (the authenticator's ``pre_spawn_start``).

        A launch enrols a new or changed student after its login answered. This waits
        for those enrolments of this hub process, then asks the registry for launched
        learner memberships still without ``in_gradebook`` (an enrolment that failed,
        or one a hub restart cut off) and enrols them now. Raises ProvisioningError when
        that fails: the lab does not start.
        """
        pending = dict(self._pending.get(username, {}))
        for course_id in set(pending.values()):
            self.enrolments.kick(course_id)  # the lab does not wait for a batch window
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        registry = self.registry
        missing = await registry.run(registry.unenrolled_launches, username)
        if not missing:
            return
        nbgrader_setup = await self._nbgrader_setup()
        try:
            # A course whose set-up a restart cut off, or that failed, is set up first.
            for course_id in sorted({member.course_id for member in missing}):
                await self.ensure_course_ready(course_id)
            await asyncio.gather(
                *(
                    self.enrolments.enrol(
                        nbgrader_setup,
                        self.layout.course(member.course_id),
                        nbgrader_setup.StudentRecord(
                            username=username,
                            lms_user_id=member.lms_user_id,
                            given_name=member.given_name,
                            family_name=member.family_name,
                            email=member.email,
                        ),
                        now=True,
                    )
                    for member in missing
                )
            )
        except Exception as exc:
            self.log.exception("user:%s gradebook enrolment before their lab failed", username)
            raise ProvisioningError(
                "Your lab cannot start yet: adding you to your course's gradebook failed. "
                "Try again in a minute; if it keeps failing, tell the hub's administrators."
            ) from exc
        self.log.info(
            "user:%s enrolled in %s before their lab started",
            username,
            ", ".join(m.course_id for m in missing),
        )

    async def ensure_course_ready(self, course_id: str) -> None:
        """The course's files are set up (its grader's lab, a learner's lab): waits for a
        set-up in progress, or makes one for a course not set up yet. Raises what the
        set-up raises."""
        task = self._setups.get(course_id)
        if task is not None:
            await asyncio.shield(task)
            return
        registry = self.registry
        course = await registry.run(registry.get, course_id)
        if course is None or course.state == COURSE_DELETING:
            return
        if course.provisioned < PROVISION_VERSION:
            nbgrader_setup = await self._nbgrader_setup()
            await self._set_up_course(
                nbgrader_setup, self.layout.course(course_id), f"course:{course_id}"
            )

    async def entitlements_of(self, username: str) -> Entitlements:
        """What the registry gives ``username`` now (for a refresh outside a launch)."""
        return entitlements(await self.registry.run(current_memberships, self.registry, username))
