"""Grade sync: every student's nbgrader scores into the LMS gradebook (LTI AGS 2.0).

One job per request, for one course:

1. Read the course's gradebook (in a thread): assignments with their maximum, each
   student's score per assignment. Students are the gradebook's plus the course's
   learners in the registry, so someone who never submitted (or never launched, once a
   roster sync listed them) gets their 0 or "not submitted", as the instructor chose.
2. If the launch granted the line item scope ("grade sync and column management" in
   Moodle): find this course's line item of each assignment (``resourceId``
   ``nbgrader:<assignment>``, ``tag`` :data:`TAG`, the activity's resource link), or
   create it; then send each student's score per assignment, and the course total to
   the activity's own line item. With only the score scope ("grade sync only"): only
   the total, to the activity's own line item.
3. Up to ``c.LTIAdvantage.concurrency`` workers; how many requests are in flight is
   decided below that by the transport's adaptive limit (kore/lti/limiter.py, shared by
   all syncs), over kept-alive connections. Each request is retried on 429, 5xx and
   timeouts as kore/lti/retry.py allows. Every (student, item) gets a result in the
   registry: sent, unchanged, skipped or failed, with a message.

Idempotent: what the LMS accepted is remembered (per student and item: the line item
URL, the user id, score, maximum and progress), and a later sync sends only what
changed or has not arrived yet, unless ``resend`` is set. A retry after failures thus
sends only what failed or is missing.

Decisions worth knowing:

- Scores are nbgrader's (late penalty subtracted, never below 0). A submission that
  still needs manual grading goes out as ``Submitted``/``PendingManual`` with its score
  so far (Moodle shows no grade until it is ``FullyGraded``).
- A score above the maximum (nbgrader extra credit) is sent as it is and reported
  "sent" with a warning in its message: AGS allows it; some LMSs cap it.
- A 404 to a score: Kore reads the line item. Gone: it is created once more (one new
  line item per sync at most) and the score sent to it. Still there: the LMS does not
  know the student; the result fails with the LMS's words.
- After ``c.LTIAdvantage.abort_after`` scores in a row that failed because the LMS did
  not answer, or once the LMS refuses Kore's token, the rest is reported as not sent
  instead of hammering an LMS that is down.
"""

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum

from ananke_hub.courses.deeplink import DeepLinkStore, link_tag
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import Course
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.lti_spec import AGS_SCOPE_LINEITEM, AGS_SCOPE_RESULT_READONLY, AGS_SCOPE_SCORE
from ananke_hub.roles import Role
from kore.sync.store import DeliveryRecord, IntentRecord, ResultRecord

from ..lti import (
    AGSClient,
    LMSUnavailable,
    LTIAdvantage,
    LTIClient,
    LTIServiceError,
    OutcomeUnknown,
    Score,
    TokenRefused,
)
from ..lti import ags as agsv
from .gradebook import GradebookSnapshot, read_gradebook
from .job import SyncFailed, SyncJob

KIND = "grades"
#: The ``tag`` of the line items Kore creates; with ``resourceId`` it finds them again.
TAG = "ananke-nbgrader"
RESOURCE_PREFIX = "nbgrader:"
TOTAL_KEY = "total"
TOTAL_LABEL = "Course total"


#: Result statuses besides sent, unchanged, skipped and failed.
NOT_GRADABLE = "not_gradable"
UNKNOWN = "unknown"


def assignment_key(name: str) -> str:
    return "assignment:" + name


class Missing(StrEnum):
    """What a student who did not submit an assignment gets."""

    ZERO = "zero"
    NOT_SUBMITTED = "not_submitted"


@dataclass(frozen=True)
class GradeSyncOptions:
    missing: Missing = Missing.ZERO
    resend: bool = False

    @classmethod
    def from_json(cls, data: dict | None) -> "GradeSyncOptions":
        """Options from data in the form of the OpenAPI document's ``GradeSyncOptions``.

        Not checked again here: the route checked the body against the document
        (:mod:`kore.openapi`), the CLI's argparse offers only valid choices.
        """
        data = data or {}
        return cls(Missing(data.get("missing", Missing.ZERO.value)), data.get("resend", False))

    def to_json(self) -> dict:
        return {"missing": self.missing.value, "resend": self.resend}


@dataclass
class Target:
    """Where the scores of one item go: a line item of the LMS."""

    key: str
    label: str
    score_maximum: float
    url: str = ""
    #: Why nothing can be sent to it ("" if it can), and the status that gives.
    problem: str = ""
    problem_status: str = "failed"
    #: Set for line items Kore made (per assignment): it may make them again.
    resource_id: str = ""
    #: The activity's own line item, to be found in the container (the launch left
    #: ``lineitem`` out, as Moodle does once other line items are bound to the link).
    find_own: bool = False
    recreated: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Recipient:
    username: str
    lms_user_id: str
    problem: str = ""


@dataclass(frozen=True)
class Work:
    recipient: Recipient
    target: Target
    score: Score | None
    #: Why this score is not sent ("" if it is).
    problem: str = ""


def fingerprint(url: str, score: Score) -> str:
    data = [
        url,
        score.user_id,
        score.score_given,
        score.score_maximum,
        score.activity_progress,
        score.grading_progress,
    ]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


# --- what each student gets -------------------------------------------------------------------


def assignment_score(
    snapshot: GradebookSnapshot, user: Recipient, name: str, maximum: float, missing: Missing
) -> Score:
    sub = snapshot.submissions.get((user.username, name))
    if sub is not None:
        if sub.needs_manual_grade:
            return Score(
                user.lms_user_id,
                agsv.ACTIVITY_SUBMITTED,
                agsv.GRADING_PENDING_MANUAL,
                sub.score,
                maximum,
            )
        return Score(
            user.lms_user_id, agsv.ACTIVITY_COMPLETED, agsv.GRADING_FULLY_GRADED, sub.score, maximum
        )
    if missing is Missing.ZERO:
        return Score(
            user.lms_user_id, agsv.ACTIVITY_INITIALIZED, agsv.GRADING_FULLY_GRADED, 0.0, maximum
        )
    return Score(user.lms_user_id, agsv.ACTIVITY_INITIALIZED, agsv.GRADING_NOT_READY)


def total_score(
    snapshot: GradebookSnapshot, user: Recipient, names: list[str], maximum: float, missing: Missing
) -> Score:
    subs = [snapshot.submissions.get((user.username, name)) for name in names]
    submitted = [s for s in subs if s is not None]
    if not submitted:
        if missing is Missing.NOT_SUBMITTED:
            return Score(user.lms_user_id, agsv.ACTIVITY_INITIALIZED, agsv.GRADING_NOT_READY)
        return Score(
            user.lms_user_id, agsv.ACTIVITY_INITIALIZED, agsv.GRADING_FULLY_GRADED, 0.0, maximum
        )
    given = round(sum(s.score for s in submitted), 6)
    pending = any(s.needs_manual_grade for s in submitted)
    activity = (
        agsv.ACTIVITY_COMPLETED if len(submitted) == len(names) else agsv.ACTIVITY_IN_PROGRESS
    )
    grading = agsv.GRADING_PENDING_MANUAL if pending else agsv.GRADING_FULLY_GRADED
    return Score(user.lms_user_id, activity, grading, given, maximum)


def autograde_limit(
    snapshot: GradebookSnapshot, user: Recipient, target: Target, names: list[str]
) -> str:
    """Why ``user``'s score for ``target`` is not sent: the sandbox stopped the autograding
    of the assignment (or, for the total, of one of them); "" otherwise."""
    if target.key == TOTAL_KEY:
        stopped = [n for n in names if (user.username, n) in snapshot.autograde_limits]
        if stopped:
            return (
                f"Not sent: autograding of {', '.join(stopped)} was stopped at a limit of "
                "the sandbox, so the total would be incomplete. Raise the limit in the "
                "course settings and autograde the student again."
            )
        return ""
    name = target.key.removeprefix("assignment:")
    message = snapshot.autograde_limits.get((user.username, name))
    if not message:
        return ""
    return (
        f"Not sent: {message} Autograde the student again after raising the limit; the "
        "score is sent at the next sync."
    )


def recipients(snapshot: GradebookSnapshot, members) -> list[Recipient]:
    """The gradebook's students and the course's learners, each once, by user name."""
    by_name = {m.username: m for m in members}
    names = set(snapshot.students) | {m.username for m in members if m.role == Role.LEARNER}
    result = []
    for username in sorted(names):
        member = by_name.get(username)
        student = snapshot.students.get(username)
        lms_id = (member.lms_user_id if member else "") or (student.lms_user_id if student else "")
        problem = ""
        if member is not None and member.role != Role.LEARNER:
            problem = f"Not sent: {username} is {member.role.replace('_', ' ')} of this course."
        elif member is not None and not member.active:
            problem = (
                "Not sent: no longer in the LMS course (the roster sync marked them inactive)."
            )
        elif not lms_id:
            problem = (
                "Not sent: no LMS user id. The student never launched the activity and no "
                "roster sync listed them; run a roster sync, or let them launch once."
            )
        result.append(Recipient(username, lms_id, problem))
    return result


# --- the job ----------------------------------------------------------------------------------


class GradeSyncJob(SyncJob):
    kind = KIND

    def __init__(
        self,
        course_id: str,
        options: GradeSyncOptions,
        *,
        registry: CourseRegistry,
        layout: CourseLayout,
        lti_client: LTIClient,
        settings: LTIAdvantage | None = None,
        **kwargs,
    ):
        super().__init__(course_id, registry=registry, options=options.to_json(), **kwargs)
        self.grade_options = options
        self.layout = layout
        self.lti_client = lti_client
        self.settings = settings or lti_client.settings
        self.ags: AGSClient | None = None
        self.abort_reason = ""
        self._unavailable_streak = 0
        self.can_read_results = False
        #: Scores whose sending an earlier run began and never recorded (it was killed).
        self.intents: dict[tuple[str, str], IntentRecord] = {}

    # --- plan ---------------------------------------------------------------------------

    async def work(self) -> None:
        course: Course | None = await self.registry.run(self.registry.get, self.course_id)
        if course is None:
            raise SyncFailed(f"There is no course {self.course_id} on this hub.")
        snapshot = await asyncio.to_thread(read_gradebook, self.layout.course(self.course_id))
        if not snapshot.exists:
            self.warn(
                "The course has no nbgrader gradebook yet (the activity's first launch "
                "creates it): every learner counts as not having submitted."
            )
        members = await self.registry.run(self.registry.members, self.course_id)
        granted = set(course.ags_scopes or [])
        per_assignment = AGS_SCOPE_LINEITEM in granted and bool(course.lineitems_url)
        self.can_read_results = AGS_SCOPE_RESULT_READONLY in granted
        targets = self.plan_targets(course, snapshot, per_assignment)
        users = recipients(snapshot, members)
        names = [a.name for a in snapshot.assignments if a.max_score > 0]
        works = []
        missing = self.grade_options.missing
        for user in users:
            for target in targets:
                limited = autograde_limit(snapshot, user, target, names)
                if user.problem or target.problem or limited:
                    score = None
                elif target.key == TOTAL_KEY:
                    score = total_score(snapshot, user, names, target.score_maximum, missing)
                else:
                    name = target.key.removeprefix("assignment:")
                    score = assignment_score(snapshot, user, name, target.score_maximum, missing)
                works.append(Work(user, target, score, limited))
        self.set_total(len(works))
        if not users:
            self.warn("Nobody to send grades for: no students in the gradebook or the registry.")

        sendable = [t for t in targets if not t.problem]
        if sendable and any(w.score is not None for w in works):
            if AGS_SCOPE_SCORE not in granted:
                self.abort(
                    "The LMS did not allow this activity to send grades (no AGS score scope "
                    "in its launch). In Moodle, set the tool's \"IMS LTI Assignment and Grade "
                    'Services" to "Use this service for grade sync only" (or with column '
                    "management), then launch the activity once and sync again."
                )
            else:
                scopes = {AGS_SCOPE_SCORE} | ({AGS_SCOPE_LINEITEM} if per_assignment else set())
                if self.can_read_results:  # to check scores whose answer never came
                    scopes.add(AGS_SCOPE_RESULT_READONLY)
                await self.connect(course, scopes)
                if per_assignment and not self.abort_reason:
                    await self.resolve_line_items(
                        course, [t for t in sendable if t.resource_id or t.find_own]
                    )
        for target in targets:
            if target.find_own and not target.url and not target.problem:
                target.problem = "Not sent: the activity's own grade item was not looked up."
                target.problem_status = "skipped"
        await self.send_all(works)
        not_gradable = self.progress.counts.get(NOT_GRADABLE, 0)
        if not_gradable:
            self.warn(
                f"{not_gradable} score(s) were refused because the LMS does not grade that "
                "person in this course (status \"not gradable in the LMS\"). In Moodle these "
                "are people without a gradebook role, such as non-editing teachers, whom "
                "Moodle sends as Learner; give them the instructor role in the tool (see the "
                "admin guide, Connecting the hub to an LMS) so that they are not enrolled as "
                "students."
            )

    def plan_targets(
        self, course: Course, snapshot: GradebookSnapshot, per_assignment: bool
    ) -> list[Target]:
        targets = []
        if per_assignment:
            for assignment in snapshot.assignments:
                target = Target(
                    assignment_key(assignment.name),
                    assignment.name,
                    assignment.max_score,
                    resource_id=RESOURCE_PREFIX + assignment.name,
                )
                if assignment.max_score <= 0:
                    target.problem = (
                        f"Not sent: {assignment.name} has no points in nbgrader (maximum 0), "
                        "and an LMS grade item needs a maximum above 0."
                    )
                    target.problem_status = "skipped"
                targets.append(target)
        elif course.lineitem_url:
            self.warn(
                "The LMS allows grade sync only (no line item management in the launch): "
                "only the course total is sent, to the activity's own grade item."
            )
        maximum = round(sum(a.max_score for a in snapshot.assignments if a.max_score > 0), 6)
        total = Target(TOTAL_KEY, TOTAL_LABEL, maximum, url=course.lineitem_url)
        if not course.lineitem_url:
            if per_assignment:
                # No launch named the activity's own line item: look for it in the
                # container; if it is not there either, the run warns (resolve_line_items).
                total.find_own = maximum > 0
                if maximum <= 0:
                    total.problem = "Not sent: no assignment with points in the gradebook yet."
                    total.problem_status = "skipped"
            else:
                total.problem = (
                    "Not sent: the launch gave Kore neither a grade item of the activity nor "
                    "permission to create grade items. Make the activity graded in the LMS "
                    "(and allow LTI grade services for the tool), launch it once, sync again."
                )
        elif maximum <= 0:
            total.problem = "Not sent: no assignment with points in the gradebook yet."
            total.problem_status = "skipped"
        targets.append(total)
        return targets

    def abort(self, reason: str) -> None:
        if not self.abort_reason:
            self.abort_reason = reason
            self.warn(reason)

    async def connect(self, course: Course, scopes: set[str]) -> None:
        """An AGS client with a token for ``scopes``; on failure, the reason to abort."""
        try:
            session = await self.lti_client.course_session(
                issuer=course.issuer, client_id=course.client_id, scopes=scopes
            )
            await session.token()
        except LTIServiceError as exc:
            self.abort(exc.message)
            return
        self.ags = AGSClient(session, max_pages=self.settings.max_pages)

    async def resolve_line_items(self, course: Course, targets: list[Target]) -> None:
        """Find this course's line item of each assignment; create what is missing."""
        try:
            existing = await self.ags.line_items(
                course.lineitems_url, resource_link_id=course.resource_link_id or None
            )
        except LTIServiceError as exc:
            for target in targets:
                target.problem = f"Not sent: Kore could not look up the grade items. {exc.message}"
            return
        for target in targets:
            if target.find_own:
                self.find_own_line_item(course, target, existing)
        targets = [t for t in targets if t.resource_id]
        placed = await self.placed_line_items(course)
        ours: dict[str, list[agsv.LineItem]] = {}
        for item in existing:
            if item.tag not in ("", TAG):
                continue
            if item.resource_link_id not in ("", course.resource_link_id):
                continue
            ours.setdefault(item.resource_id, []).append(item)
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def resolve(target: Target):
            async with limit:
                # An activity placed by Deep Linking has its own column: the score goes
                # there, and Kore makes no column of its own for the assignment.
                found = placed.get(target.resource_id) or ours.get(target.resource_id, [])
                if len(found) > 1:
                    self.warn(
                        f"The LMS has {len(found)} grade items for {target.label}; Kore uses "
                        f"the first ({found[0].id}). Delete the others in the LMS."
                    )
                try:
                    if found:
                        target.url = found[0].id
                        await self.update_if_changed(found[0], target)
                    else:
                        target.url = (await self.create(course, target)).id
                except LTIServiceError as exc:
                    target.problem = f"Not sent: {exc.message}"

        await asyncio.gather(*(resolve(t) for t in targets))

    async def placed_line_items(self, course: Course) -> dict[str, list[agsv.LineItem]]:
        """The line items of the activities Kore placed for this course by Deep Linking
        (``tag`` ananke-nbgrader@<course id>, any resource link), by ``resourceId``."""
        store = DeepLinkStore(self.registry)
        if not await self.registry.run(store.has_links, course.id):
            return {}
        tag = link_tag(course.id)
        try:
            items = await self.ags.line_items(course.lineitems_url, tag=tag)
        except LTIServiceError as exc:
            self.warn(f"Kore could not look up the placed activities' grade items: {exc.message}")
            return {}
        placed: dict[str, list[agsv.LineItem]] = {}
        for item in items:
            if item.tag == tag and item.resource_id.startswith(RESOURCE_PREFIX):
                placed.setdefault(item.resource_id, []).append(item)
        return placed

    def find_own_line_item(
        self, course: Course, target: Target, existing: list[agsv.LineItem]
    ) -> None:
        """The activity's own line item among the link's: bound to the resource link and
        not made by Kore (Moodle's "coupled" grade item has no tag and no resourceId)."""
        candidates = [
            item
            for item in existing
            if item.resource_link_id == course.resource_link_id
            and item.tag != TAG
            and not item.resource_id.startswith(RESOURCE_PREFIX)
        ]
        if len(candidates) > 1:
            candidates = [i for i in candidates if not i.tag and not i.resource_id] or candidates
        if len(candidates) == 1:
            target.url = candidates[0].id
            return
        if candidates:
            why = (
                f"{len(candidates)} grade items of this activity that are not Kore's "
                f"({', '.join(i.label or i.id for i in candidates[:5])}) and Kore cannot tell "
                "which is the activity's own"
            )
        else:
            why = "no grade item of the activity besides the assignments' ones"
        text = (
            "The course total was not sent: the launches do not name the activity's own "
            "grade item (Moodle leaves it out once other grade items are bound to the "
            f"activity) and the LMS lists {why}. If the activity should be graded, set its "
            "grade type to Point in the LMS and sync again."
        )
        self.warn(text)
        target.problem = "Not sent: " + text
        target.problem_status = "skipped"

    async def create(self, course: Course, target: Target) -> agsv.LineItem:
        """Create the line item of ``target``; after an unknown outcome, look first."""
        for attempt in (1, 2):
            try:
                item = await self.ags.create_line_item(
                    course.lineitems_url,
                    label=target.label,
                    score_maximum=target.score_maximum,
                    resource_id=target.resource_id,
                    tag=TAG,
                    resource_link_id=course.resource_link_id,
                )
            except OutcomeUnknown:
                # The LMS may have made it without telling us: a second POST would make
                # a second column. Look for it by resourceId and tag first.
                found = await self.find_created(course, target)
                if found is not None:
                    self.log.info(
                        "%s line item %s for %s: created although the LMS did not answer",
                        self.log_prefix,
                        found.id,
                        target.label,
                    )
                    return found
                if attempt == 2:
                    raise
                continue
            self.log.info("%s created line item %s for %s", self.log_prefix, item.id, target.label)
            return item
        raise AssertionError("unreachable")

    async def find_created(self, course: Course, target: Target) -> agsv.LineItem | None:
        items = await self.ags.line_items(
            course.lineitems_url,
            resource_link_id=course.resource_link_id or None,
            resource_id=target.resource_id,
            tag=TAG,
        )
        for item in items:
            if (
                item.resource_id == target.resource_id
                and item.tag == TAG
                and item.resource_link_id in ("", course.resource_link_id)
            ):
                return item
        return None

    async def update_if_changed(self, item: agsv.LineItem, target: Target) -> None:
        if item.score_maximum == target.score_maximum and item.label == target.label:
            return
        try:
            await self.ags.update_line_item(
                item, label=target.label, score_maximum=target.score_maximum
            )
        except LTIServiceError as exc:
            # Scores carry their own maximum; the LMS's column keeps its old one.
            self.warn(f"The grade item of {target.label} keeps its old maximum: {exc.message}")

    # --- send ---------------------------------------------------------------------------

    async def send_all(self, works: list[Work]) -> None:
        delivered = await self.registry.run(self.store.deliveries, self.course_id)
        self.intents = await self.registry.run(self.store.intents, self.course_id)
        resend = self.grade_options.resend
        # Scores go out in chunks; each chunk's intents are written before any of its
        # requests leaves, so a process killed at any point leaves a trace of every
        # score whose outcome it did not record (checked at the LMS next time).
        chunk_size = max(32, 8 * self.settings.concurrency)

        def planned(work: Work) -> IntentRecord | None:
            target = work.target
            if work.score is None or work.recipient.problem or target.problem or not target.url:
                return None
            print_ = fingerprint(target.url, work.score)
            if not resend and delivered.get((work.recipient.username, target.key)) == print_:
                return None
            return IntentRecord(work.recipient.username, target.key, target.url, print_)

        for start in range(0, len(works), chunk_size):
            chunk = works[start : start + chunk_size]
            if not self.abort_reason:
                intents = [i for i in map(planned, chunk) if i is not None]
                await self.registry.run(
                    self.store.write_intents, self.course_id, self.run_id, intents
                )
            queue: asyncio.Queue[Work] = asyncio.Queue()
            for work in chunk:
                queue.put_nowait(work)
            count = max(1, min(self.settings.concurrency, len(chunk)))
            await asyncio.gather(*(self._worker(queue, delivered) for _ in range(count)))

    async def _worker(self, queue: asyncio.Queue, delivered: dict) -> None:
        while True:
            try:
                work = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await self.process(work, delivered)
            except Exception:  # a bug: this result fails, the others go on
                self.log.exception("%s: sending failed", self.log_prefix)
                # The intent stays: the next sync checks at the LMS before sending.
                self.record(
                    self.result(
                        work,
                        "failed",
                        "Kore failed to send this score; the hub admin finds why in "
                        "Kore's log. Sync again to retry it.",
                    )
                )

    def result(self, work: Work, status: str, message: str = "", url: str = "") -> ResultRecord:
        score = work.score
        return ResultRecord(
            username=work.recipient.username,
            lms_user_id=work.recipient.lms_user_id,
            item_key=work.target.key,
            item_label=work.target.label,
            lineitem_url=url or work.target.url,
            score_given=score.score_given if score else None,
            score_maximum=score.score_maximum if score else None,
            status=status,
            message=message,
        )

    def delivered(self, work: Work, url: str, message: str = "") -> None:
        """Record a score the LMS has (its intent goes in the same write)."""
        score, user = work.score, work.recipient
        if (
            score.score_given is not None
            and score.score_maximum is not None
            and score.score_given > score.score_maximum
        ):
            message = " ".join(
                filter(
                    None,
                    (
                        message,
                        f"Warning: the score {score.score_given:g} is above the maximum "
                        f"{score.score_maximum:g} (extra credit in nbgrader); sent as it is, "
                        "and some LMSs cap it.",
                    ),
                )
            )
        self.record(
            self.result(work, "sent", message, url),
            DeliveryRecord(
                user.username,
                work.target.key,
                url,
                fingerprint(url, score),
                score.score_given,
                score.score_maximum,
            ),
        )

    async def process(self, work: Work, delivered: dict) -> None:
        target, user = work.target, work.recipient
        if user.problem:
            self.record(self.result(work, "skipped", user.problem))
            return
        if target.problem:
            self.record(self.result(work, target.problem_status, target.problem))
            return
        if work.problem:
            self.record(self.result(work, "failed", work.problem))
            return
        if self.abort_reason:
            self.record(self.result(work, "failed", "Not sent: " + self.abort_reason), settled=True)
            return
        url = target.url
        key = (user.username, target.key)
        print_ = fingerprint(url, work.score)
        if not self.grade_options.resend and delivered.get(key) == print_:
            self.record(
                self.result(work, "unchanged", "The LMS has this score already."),
                settled=key in self.intents,
            )
            return
        intent = self.intents.get(key)
        if intent is not None and intent.fingerprint == print_:
            # An earlier run began sending this very score and never recorded how it
            # went (it was killed): ask the LMS before sending it a second time.
            if await self.lms_has(work, url):
                self.delivered(
                    work,
                    url,
                    "Confirmed at the LMS: an earlier sync sent it and stopped before "
                    "recording it; not sent again.",
                )
                return
        await self.attempt(work, url)

    async def attempt(self, work: Work, url: str, *, conflicted: bool = False) -> None:
        """Send the score and record the outcome, whatever it is."""
        user = work.recipient
        try:
            url = await self.send(work, url)
        except TokenRefused as exc:
            self.abort(exc.message)
            self.record(self.result(work, "failed", exc.message), settled=True)
            return
        except OutcomeUnknown as exc:
            await self.settle_unknown(work, url, exc)
            return
        except LMSUnavailable as exc:
            self._unavailable_streak += 1
            if self._unavailable_streak >= self.settings.abort_after:
                self.abort(
                    f"the LMS did not answer {self._unavailable_streak} scores in a row; "
                    "Kore stopped sending. Sync again later: only what is missing is sent."
                )
            self.record(self.result(work, "failed", exc.message), settled=True)
            return
        except LTIServiceError as exc:
            if exc.status == 409 and await self.lms_has(work, url):
                # Moodle's 409: a score not newer than the stored one. The stored one is
                # this score (an earlier, unrecorded send): it arrived.
                self.delivered(work, url, "The LMS had this score already (it answered 409).")
                return
            if exc.status == 409 and not conflicted:
                # Moodle keeps whole seconds: a score sent in the same second as the
                # last one for this person and item is "not newer". Once, a second later.
                await asyncio.sleep(1.1)
                await self.attempt(work, url, conflicted=True)
                return
            if exc.status == 401:
                self.abort(
                    "the LMS refuses Kore's access token even after a new one was issued: "
                    + exc.message
                )
            if exc.status == 400 and user.lms_user_id:
                self.record(
                    self.result(
                        work,
                        NOT_GRADABLE,
                        f"Not gradable in the LMS: it refused the score ({exc.message}) "
                        "In Moodle, people without a gradebook role (teachers, non-editing "
                        "teachers) cannot get grades; this is not a failure of the sync.",
                    ),
                    settled=True,
                )
                return
            self.record(self.result(work, "failed", self.explain(exc)), settled=True)
            return
        self._unavailable_streak = 0
        self.delivered(work, url)

    async def settle_unknown(self, work: Work, url: str, unknown: OutcomeUnknown) -> None:
        """No answer to a score: check the LMS's results; send again only if missing."""
        has = await self.lms_has(work, url)
        if has:
            self.delivered(
                work, url, "The LMS did not answer in time; Kore checked: it has this score."
            )
            return
        if has is None:
            # Cannot check (no result scope, or the results did not answer): the intent
            # stays, and the next sync sends the score again with a newer timestamp,
            # which an LMS that has it keeps as the same grade.
            self.record(
                self.result(
                    work,
                    UNKNOWN,
                    f"Unknown: {unknown.message} The next sync sends it again with a newer "
                    "timestamp (harmless if it arrived: the LMS keeps the newest).",
                )
            )
            return
        try:
            # A new timestamp: the first attempt never became the LMS's latest score.
            await self.ags.post_score(url, work.score)
        except OutcomeUnknown as exc:
            self.record(self.result(work, UNKNOWN, "Unknown, after a second attempt: " + exc.message))
            return
        except LTIServiceError as exc:
            self.record(self.result(work, "failed", self.explain(exc)), settled=True)
            return
        self.delivered(
            work, url, "Sent again after the LMS did not answer the first attempt and had no score."
        )

    async def lms_has(self, work: Work, url: str) -> bool | None:
        """Whether the LMS holds this score for the person (AGS results); None if Kore
        cannot tell (no result.readonly scope, or the results did not answer)."""
        if not self.can_read_results or self.ags is None:
            return None
        try:
            fraction = await self.ags.result_fraction(url, work.recipient.lms_user_id)
        except LTIServiceError as exc:
            self.log.info("%s: cannot read a result: %s", self.log_prefix, exc.message)
            return None
        score = work.score
        if score.score_given is None or not score.score_maximum:
            return fraction is None
        if fraction is None:
            return False
        return abs(fraction - score.score_given / score.score_maximum) <= 1e-6

    @staticmethod
    def explain(exc: LTIServiceError) -> str:
        said = exc.message if exc.message.endswith(".") else exc.message + "."
        if exc.status in (400, 404, 422):
            return said + (
                " The LMS may not know this student in the course (enrolment ended?), or "
                "refuses the score."
            )
        if exc.status == 403:
            return said + " The LMS does not let the tool change this grade."
        if exc.status == 409:
            return said + " The LMS has a newer score for this student (clock skew?)."
        return said

    async def send(self, work: Work, url: str) -> str:
        """Post the score; the URL it went to (a new line item if the old one was gone)."""
        try:
            await self.ags.post_score(url, work.score)
            return url
        except LTIServiceError as exc:
            if exc.status not in (404, 410) or isinstance(exc, LMSUnavailable):
                raise
            new_url = await self.replacement(work.target, url, exc)
        await self.ags.post_score(new_url, work.score)
        return new_url

    async def replacement(self, target: Target, url: str, not_found: LTIServiceError) -> str:
        """After a 404 to ``url``: the line item to send to instead, or re-raise."""
        async with target.lock:
            if target.url != url:
                return target.url  # another worker made a new one meanwhile
            if not target.resource_id or target.recreated:
                raise not_found
            try:
                await self.ags.line_item(url)
            except LTIServiceError as exc:
                if exc.status not in (404, 410):
                    raise not_found from None
            else:
                raise not_found  # the line item is there: the LMS does not know the student
            course = await self.registry.run(self.registry.get, self.course_id)
            item = await self.create(course, target)
            self.warn(
                f"The grade item of {target.label} was deleted in the LMS; Kore created it "
                "again and sends its scores there."
            )
            target.url = item.id
            target.recreated = True
            return item.id


async def run_grade_sync(
    course_id: str,
    options: GradeSyncOptions | dict | None = None,
    *,
    registry: CourseRegistry,
    layout: CourseLayout,
    lti_client: LTIClient,
    progress=None,
    who: str = "",
    log=None,
) -> dict:
    """Run one grade sync of a course to its end; the run's final counters.

    ``progress``: called with the job after every result (a progress bar). Raises
    :class:`~kore.sync.store.SyncAlreadyRunning` if one runs already.
    """
    if not isinstance(options, GradeSyncOptions):
        options = GradeSyncOptions.from_json(options)
    job = GradeSyncJob(
        course_id,
        options,
        registry=registry,
        layout=layout,
        lti_client=lti_client,
        who=who,
        listener=progress,
        log=log,
    )
    await job.begin()
    return await job.run()
