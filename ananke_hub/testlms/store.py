"""What the platform remembers while it runs: rosters, line items, scores, access tokens.

In memory: the platform is a test double that starts afresh with each demo or test
module. It runs on one event loop, so nothing here needs a lock. The rules that decide
what a tool may send live in :mod:`.documents`; the HTTP lives in ``handlers/``.
"""

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime

from . import constants as C
from . import demo_data
from .demo_data import Context, Enrolment, ResourceLink


@dataclass
class LineItem:
    """A gradebook column (AGS 2.0 section 3.2, https://www.imsglobal.org/spec/lti-ags/v2p0/#line-item-service)."""

    item_id: str
    label: str
    score_maximum: float
    resource_id: str = ""
    tag: str = ""
    resource_link_id: str = ""
    start_date_time: str | None = None
    end_date_time: str | None = None
    #: The activity's own line item, made with the resource link (Moodle's "coupled"
    #: grade item). The tool can post scores to it but not delete it.
    coupled: bool = False


@dataclass(frozen=True)
class Score:
    """The latest score of one learner on one line item (AGS 2.0 section 3.4)."""

    user_id: str
    score_given: float | None
    score_maximum: float | None
    activity_progress: str
    grading_progress: str
    timestamp: datetime
    comment: str | None = None

    def rescaled(self, maximum: float) -> float | None:
        """The score on the line item's scale, as Moodle stores it: a score of 15 out
        of 10 on a column with maximum 100 is 150."""
        if self.score_given is None:
            return None
        if self.score_maximum is None or self.score_maximum == maximum:
            return self.score_given
        return self.score_given * maximum / self.score_maximum


class ScoreConflict(Exception):
    """A score is not newer than the one stored (Moodle answers 409)."""

    def __init__(self, stored: Score):
        super().__init__(stored.timestamp.isoformat())
        self.stored = stored


@dataclass
class Tally:
    """How often a tool posted a score for one learner on one line item."""

    accepted: int = 0
    #: Refused posts by HTTP status (400, 409, ...).
    refused: dict[int, int] = field(default_factory=dict)
    #: Every post in order: ``{"status": 204, "score": <the document sent>}``.
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class DeepLinkRequest:
    """A content selection sent to the tool, waiting for its answer."""

    context_id: str
    user_sub: str
    accept_multiple: bool
    expires: float


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    scopes: tuple[str, ...]
    expires: float


class Course:
    """One context: its roster, its line items and the scores they hold."""

    def __init__(self, context: Context, enrolments: list[Enrolment]):
        self.context = context
        self.enrolments: dict[str, Enrolment] = {e.user.sub: e for e in enrolments}
        # Each activity comes with its own line item, keyed by the resource link id.
        self.lineitems: dict[str, LineItem] = {
            link.id: LineItem(
                item_id=link.id,
                label=link.title,
                score_maximum=C.LAUNCH_SCORE_MAXIMUM,
                resource_link_id=link.id,
                coupled=True,
            )
            for link in context.links
        }
        self.scores: dict[tuple[str, str], Score] = {}  # (item_id, user_id) -> latest
        #: Deleted line items the container still lists (test API: a list read just
        #: before a teacher deleted the column); their own URLs answer 404.
        self.stale_lineitems: dict[str, LineItem] = {}
        #: Activities a tool placed by Deep Linking, after the demo's own.
        self.added_links: list[ResourceLink] = []

    @property
    def id(self) -> str:
        return self.context.id

    @property
    def links(self) -> list[ResourceLink]:
        return [*self.context.links, *self.added_links]

    def link_ids(self) -> set[str]:
        return {link.id for link in self.links}

    def members(self) -> list[Enrolment]:
        """The roster in enrolment order."""
        return list(self.enrolments.values())

    def learners(self) -> list[Enrolment]:
        return [e for e in self.enrolments.values() if e.is_learner]

    def is_gradable(self, user_id: str) -> bool:
        """Moodle grades enrolled learners, suspended (Inactive) ones included."""
        enrolment = self.enrolments.get(user_id)
        return enrolment is not None and enrolment.is_learner and enrolment.gradable

    def find_lineitems(
        self,
        resource_link_id: str | None,
        resource_id: str | None,
        tag: str | None,
        *,
        stale: bool = False,
    ) -> list[LineItem]:
        """The line items matching every filter given (AGS 2.0 section 3.2.6); ``stale``:
        of the deleted ones the container still lists."""
        return [
            item
            for item in (self.stale_lineitems if stale else self.lineitems).values()
            if (resource_link_id is None or item.resource_link_id == resource_link_id)
            and (resource_id is None or item.resource_id == resource_id)
            and (tag is None or item.tag == tag)
        ]

    def delete_lineitem(self, item_id: str, *, stale: bool = False) -> None:
        """Remove the column and its scores, as deleting a grade item in an LMS does;
        ``stale``: the container keeps listing it."""
        item = self.lineitems.pop(item_id, None)
        if stale and item is not None:
            self.stale_lineitems[item_id] = item
        for key in [key for key in self.scores if key[0] == item_id]:
            del self.scores[key]

    def record_score(self, item_id: str, score: Score) -> None:
        """Keep ``score`` as the latest, unless the stored one is not older.

        Moodle keeps the time of a grade in whole seconds and refuses a score whose
        timestamp is not after it (``>=``, so two scores within one second conflict).
        """
        stored = self.scores.get((item_id, score.user_id))
        if stored and int(stored.timestamp.timestamp()) >= int(score.timestamp.timestamp()):
            raise ScoreConflict(stored)
        self.scores[(item_id, score.user_id)] = score

    def replace_roster(self, enrolments: list[Enrolment]) -> None:
        """The course's whole roster becomes ``enrolments`` (the test API's PUT)."""
        self.enrolments = {e.user.sub: e for e in enrolments}

    def set_status(
        self, user_id: str, status: str, *, gradable: bool | None = None
    ) -> Enrolment | None:
        """Change an enrolment's status; Deleted removes it (unenrolment). A new
        ``user_id`` is enrolled as a learner. ``gradable=False``: a non-editing teacher
        as Moodle shows them (Learner, scores refused)."""
        if status == C.MEMBER_DELETED:
            return self.enrolments.pop(user_id, None)
        current = self.enrolments.get(user_id)
        if current is None:
            current = Enrolment(demo_data.extra_learner(user_id), (C.ROLE_LEARNER,))
        self.enrolments[user_id] = Enrolment(
            current.user,
            current.roles,
            status,
            current.gradable if gradable is None else gradable,
        )
        return self.enrolments[user_id]


class PlatformStore:
    """Everything the services change, for every course of the demo data."""

    def __init__(self, extra_learners: int = demo_data.DEFAULT_EXTRA_LEARNERS):
        self.extra_learners = extra_learners
        self._tokens: dict[str, AccessToken] = {}
        # Ids of created line items keep counting across resets: an id a tool
        # remembers from before a reset never names a different column.
        self._next_item_id = 1001
        self.open_selections: dict[str, DeepLinkRequest] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the demo data: rosters as at start, launch line items only, no scores.
        Access tokens stay valid."""
        self.courses: dict[str, Course] = {
            ctx.id: Course(ctx, demo_data.roster(ctx, self.extra_learners))
            for ctx in demo_data.CONTEXTS.values()
        }
        self.tallies: dict[tuple[str, str, str], Tally] = {}

    def course(self, context_id: str) -> Course | None:
        return self.courses.get(context_id)

    def find_link(self, link_id: str) -> tuple[Context, ResourceLink] | None:
        """The course and activity ``link_id``: the demo's, or one placed by a tool."""
        for course in self.courses.values():
            for link in course.links:
                if link.id == link_id:
                    return course.context, link
        return None

    # --- Deep Linking 2.0 (https://www.imsglobal.org/spec/lti-dl/v2p0): requests the
    # platform sent, by their `data`, answered once.

    def open_deep_link(self, context_id: str, user_sub: str, accept_multiple: bool) -> str:
        now = time.time()
        for data in [d for d, r in self.open_selections.items() if r.expires <= now]:
            del self.open_selections[data]
        data = secrets.token_urlsafe(16)
        self.open_selections[data] = DeepLinkRequest(
            context_id, user_sub, accept_multiple, now + C.DEEP_LINK_LIFETIME
        )
        return data

    def deep_link_request(self, data: str) -> "DeepLinkRequest | None":
        request = self.open_selections.get(data)
        return request if request is not None and request.expires > time.time() else None

    def add_link(self, context_id: str, title: str, custom: dict, line_item: dict | None) -> ResourceLink:
        """A new activity (and its grade column, if the tool asked for one)."""
        course = self.courses[context_id]
        link = ResourceLink(
            f"placed-{self.new_lineitem_id()}", title, tuple(sorted(custom.items()))
        )
        course.added_links.append(link)
        if line_item is not None:
            # The column is bound to the new link; its id is the link's, as for the
            # demo's own activities, so the launch's `lineitem` names it.
            course.lineitems[link.id] = LineItem(
                item_id=link.id,
                label=line_item["label"],
                score_maximum=line_item["scoreMaximum"],
                resource_id=line_item.get("resourceId", ""),
                tag=line_item.get("tag", ""),
                resource_link_id=link.id,
            )
        return link

    def new_lineitem_id(self) -> str:
        item_id = str(self._next_item_id)
        self._next_item_id += 1
        return item_id

    def tally(self, context_id: str, item_id: str, user_id: str) -> Tally:
        return self.tallies.setdefault((context_id, item_id, user_id), Tally())

    # --- access tokens (Security Framework 1.0 section 4.1): opaque, random, in memory

    def issue_token(
        self, scopes: tuple[str, ...], lifetime: float = C.ACCESS_TOKEN_LIFETIME
    ) -> AccessToken:
        now = time.time()
        for value in [v for v, t in self._tokens.items() if t.expires <= now]:
            del self._tokens[value]
        token = AccessToken(secrets.token_urlsafe(32), scopes, now + lifetime)
        self._tokens[token.value] = token
        return token

    def revoke_tokens(self) -> int:
        """Forget every access token (the test API's revocation); how many there were."""
        count = len(self._tokens)
        self._tokens.clear()
        return count

    def find_token(self, value: str) -> AccessToken | None:
        token = self._tokens.get(value)
        if token is None or token.expires <= time.time():
            return None
        return token
