"""Roster sync: the LMS's course members into the hub before they launch (LTI NRPS 2.0).

One job per request, for one course:

1. Read every member of the activity's context from the LMS (paged).
2. Map roles (full URIs and short names, :func:`ananke_hub.roles.parse_roles`) to
   learner, teaching assistant or instructor; people with none of these are skipped.
3. Write them to the course registry: new people are added with the hub user name a
   launch would give them (:class:`ananke_hub.usernames.UsernameRule`), known ones
   (matched by LMS user id) updated; members the roster no longer lists, or lists as
   Inactive/Deleted, become inactive. Nothing is deleted (grades and files stay).
4. Enrol new or changed learners in the course's nbgrader gradebook.
5. Give learners a hub user and put them in the hub group ``nbgrader-<course>``; take
   inactive learners out of it (:mod:`.hub_groups`).
6. The same for staff (instructors, teaching assistants) and ``formgrade-<course>``;
   then the hub applies the registry to every member who changed and to all staff
   (``ananke_hub/auth/access.py``): someone the LMS removed loses the course's groups,
   its role ``staff-<course>`` and their tokens for the course's grader server at once,
   not at their next login. Without a hub API token (the CLI outside the hub) steps 5
   and 6 are skipped with a warning; the hub's own refresh (``auth_refresh_age``)
   applies the registry at the user's next request.

Every person gets a result: added, updated, unchanged, deactivated, skipped or failed.
An empty roster deactivates nobody (more likely an LMS problem than an empty course).
"""

import asyncio
from functools import partial

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import Course
from ananke_hub.courses.provision import STAFF_ROLES, learner_group, staff_group
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.lti_spec import NRPS_SCOPE
from ananke_hub.roles import Role, parse_roles
from ananke_hub.usernames import UsernameRule
from kore.sync.store import ResultRecord, RosterChange, RosterEntry

from ..lti import LTIAdvantage, LTIClient, Membership, NRPSClient
from .hub_groups import HubAPIError, HubGroups
from .job import SyncFailed, SyncJob

KIND = "roster"
ITEM_KEY = "membership"


def course_role(member: Membership) -> str | None:
    roles = parse_roles(list(member.roles))
    role = roles.course_role
    if role is None and roles.is_administrator:
        role = Role.INSTRUCTOR  # as at a launch (registry.member_role)
    return str(role) if role else None


class RosterSyncJob(SyncJob):
    kind = KIND

    def __init__(
        self,
        course_id: str,
        *,
        registry: CourseRegistry,
        layout: CourseLayout,
        lti_client: LTIClient,
        hub: HubGroups | None = None,
        username_rule: UsernameRule | None = None,
        settings: LTIAdvantage | None = None,
        **kwargs,
    ):
        super().__init__(course_id, registry=registry, **kwargs)
        self.layout = layout
        self.lti_client = lti_client
        self.hub = hub
        self.rule = username_rule or UsernameRule()
        self.settings = settings or lti_client.settings

    async def work(self) -> None:
        course: Course | None = await self.registry.run(self.registry.get, self.course_id)
        if course is None:
            raise SyncFailed(f"There is no course {self.course_id} on this hub.")
        if not course.memberships_url:
            raise SyncFailed(
                "The LMS offers no roster for this activity (no Names and Role Provisioning "
                "service in its launch). In Moodle, set the tool's \"IMS LTI Names and Role "
                'Provisioning" to "Use this service to retrieve members\' information", '
                "launch the activity once, then sync again."
            )
        session = await self.lti_client.course_session(
            issuer=course.issuer, client_id=course.client_id, scopes={NRPS_SCOPE}
        )
        registration = await self.lti_client.registration_of(course.issuer, course.client_id)
        if registration is not None:
            # Names as the launches from that platform make them (its own prefix).
            self.rule = self.rule.for_prefix(registration.username_prefix)
        roster = await NRPSClient(session, max_pages=self.settings.max_pages).members(
            course.memberships_url
        )
        if roster.invalid:
            self.warn(f"{roster.invalid} roster entries without a user id were ignored.")
        if not roster.members:
            self.warn(
                "The LMS sent an empty roster: nobody was marked inactive. Check the "
                "course's participants in the LMS."
            )
        known = {
            m.lms_user_id: m.username
            for m in await self.registry.run(self.registry.members, self.course_id)
            if m.lms_user_id
        }
        entries, skipped = self.entries(roster.members, known)
        changes = await self.registry.run(
            partial(
                self.store.apply_roster,
                self.course_id,
                entries,
                deactivate_missing=bool(roster.members),
            )
        )
        self.set_total(len(changes) + len(skipped))
        for result in skipped:
            self.record(result)
        names = {e.username: e for e in entries}
        problems = await self.enrol(changes, names)
        _merge(problems, await self.update_hub_group(course))
        access_problems, notes = await self.update_staff_access(course, changes)
        _merge(problems, access_problems)
        for change in changes:
            problem = problems.get(change.username, "")
            status, message = change.status, change.message
            note = notes.get(change.username, "")
            if note:
                message = (message + " " if message else "") + note
            if problem:
                status, message = "failed", (message + " " if message else "") + problem
            self.record(
                ResultRecord(
                    username=change.username,
                    lms_user_id=change.lms_user_id,
                    item_key=ITEM_KEY,
                    item_label=change.role,
                    status=status,
                    message=message,
                )
            )

    def entries(
        self, members: list[Membership], known: dict[str, str]
    ) -> tuple[list[RosterEntry], list[ResultRecord]]:
        entries, skipped = [], []
        for member in members:
            role = course_role(member)
            username = known.get(member.user_id) or self.rule.username(member.user_id)
            problem = ""
            if role is None:
                problem = (
                    "Skipped: no learner, teaching assistant or instructor role in the LMS "
                    f"({', '.join(member.roles) or 'no roles'})."
                )
            elif username is None:
                problem = (
                    "Skipped: their hub user name comes from the launch's "
                    f"{self.rule.key!r} (c.AnankeLTI13Authenticator.username_key), which the "
                    "roster does not carry; their first launch adds them."
                )
            if problem:
                skipped.append(
                    ResultRecord(
                        username=username or "",
                        lms_user_id=member.user_id,
                        item_key=ITEM_KEY,
                        item_label=role or "",
                        status="skipped",
                        message=problem,
                    )
                )
                continue
            entries.append(
                RosterEntry(
                    username=username,
                    lms_user_id=member.user_id,
                    role=role,
                    active=member.active,
                    given_name=member.given_name,
                    family_name=member.family_name,
                    email=member.email,
                )
            )
        return entries, skipped

    async def enrol(self, changes: list[RosterChange], entries: dict) -> dict[str, str]:
        """Enrol new or changed learners in the gradebook; problems per user name."""
        learners = [c for c in changes if c.enrol]
        if not learners:
            return {}
        members = {
            m.username: m for m in await self.registry.run(self.registry.members, self.course_id)
        }
        students = [
            nbgrader_setup.StudentRecord(
                username=c.username,
                lms_user_id=c.lms_user_id,
                given_name=members[c.username].given_name if c.username in members else "",
                family_name=members[c.username].family_name if c.username in members else "",
                email=members[c.username].email if c.username in members else "",
            )
            for c in learners
        ]
        paths = self.layout.course(self.course_id)
        try:
            await asyncio.to_thread(nbgrader_setup.enrol_students, paths, students)
        except FileNotFoundError:
            problem = (
                "Not in the gradebook yet: the course's files are not created (an instructor "
                "launches the activity once), then sync the roster again."
            )
            self.warn(problem)
            return {s.username: problem for s in students}
        except Exception as exc:  # nbgrader, SQLite, file system: report, keep the rest
            self.log.exception("%s: enrolling in the gradebook failed", self.log_prefix)
            problem = (
                f"Not enrolled in the gradebook ({type(exc).__name__}); the hub admin finds "
                "why in Kore's log. Sync the roster again."
            )
            return {s.username: problem for s in students}
        await self.registry.run(
            self.registry.mark_in_gradebook, self.course_id, [s.username for s in students]
        )
        return {}

    async def update_hub_group(self, course: Course) -> dict[str, str]:
        """Active learners in ``nbgrader-<course>``, inactive ones out; problems per name."""
        members = await self.registry.run(self.registry.members, self.course_id)
        learners = {m.username for m in members if m.role == Role.LEARNER and m.active}
        former = {m.username for m in members if m.role == Role.LEARNER and not m.active}
        group = learner_group(course.id)
        if self.hub is None:
            if learners or former:
                self.warn(
                    f"The hub group {group} was not updated: no hub API token "
                    "(JUPYTERHUB_API_TOKEN and JUPYTERHUB_API_URL). Learners join it at "
                    "their first launch, or run the roster sync from Kore."
                )
            return {}
        try:
            result = await self.hub.sync_group(group, learners, former)
        except HubAPIError as exc:
            problem = f"Not in the hub group {group}: {exc}"
            self.warn(problem)
            return {name: problem for name in learners | former}
        return {
            name: f"Not in the hub group {group}: {problem}"
            for name, problem in result.items()
            if problem
        }

    async def update_staff_access(
        self, course: Course, changes: list[RosterChange]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Active staff in ``formgrade-<course>``, everyone else out; then the hub applies
        the registry to changed members and all staff. Problems and notes per name."""
        members = await self.registry.run(self.registry.members, self.course_id)
        staff = {m.username for m in members if m.role in STAFF_ROLES and m.active}
        others = {m.username for m in members} - staff
        ever_staff = {m.username for m in members if m.role in STAFF_ROLES}
        changed = {c.username for c in changes if c.status in ("added", "updated", "deactivated")}
        group = staff_group(course.id)
        if self.hub is None:
            if ever_staff or changed:
                self.warn(
                    f"The hub group {group} and hub roles were not updated: no hub API "
                    "token (JUPYTERHUB_API_TOKEN and JUPYTERHUB_API_URL). The hub applies "
                    "the roster at each user's next request (auth_refresh_age), or run the "
                    "roster sync from Kore."
                )
            return {}, {}
        problems: dict[str, str] = {}
        try:
            result = await self.hub.sync_group(group, staff, others)
        except HubAPIError as exc:
            problem = f"Not in the hub group {group}: {exc}"
            self.warn(problem)
            result = {}
            problems.update(dict.fromkeys(staff, problem))
        for name, problem in result.items():
            if problem:
                problems[name] = f"Hub group {group}: {problem}"
        notes: dict[str, str] = {}
        applied = await self.hub.apply_course_access(ever_staff | changed)
        for name, outcome in applied.items():
            if outcome.problem:
                problems[name] = _joined(
                    problems.get(name, ""), f"Hub access not updated: {outcome.problem}"
                )
            elif outcome.revoked_tokens:
                notes[name] = (
                    f"Access to the course's formgrader revoked ({outcome.revoked_tokens} "
                    "login token(s) deleted)."
                )
            elif outcome.changed:
                notes[name] = "Hub groups and roles updated."
        return problems, notes


def _joined(first: str, second: str) -> str:
    return f"{first} {second}" if first else second


def _merge(problems: dict[str, str], more: dict[str, str]) -> None:
    for name, problem in more.items():
        if problem:
            problems[name] = _joined(problems.get(name, ""), problem)


async def run_roster_sync(
    course_id: str,
    *,
    registry: CourseRegistry,
    layout: CourseLayout,
    lti_client: LTIClient,
    hub: HubGroups | None = None,
    username_rule: UsernameRule | None = None,
    progress=None,
    who: str = "",
    log=None,
) -> dict:
    """Run one roster sync of a course to its end; the run's final counters.

    ``hub``: the hub API client for the learner group (None skips that step with a
    warning). Raises :class:`~kore.sync.store.SyncAlreadyRunning` if one
    runs already.
    """
    job = RosterSyncJob(
        course_id,
        registry=registry,
        layout=layout,
        lti_client=lti_client,
        hub=hub,
        username_rule=username_rule,
        who=who,
        listener=progress,
        log=log,
    )
    await job.begin()
    return await job.run()
