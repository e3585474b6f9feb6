"""The library's AGS and NRPS services, completed with our storage.

``lti1p3platform.service_connector`` checks the bearer token (signature, issuer, expiry,
scopes), the HTTP method, routes the request to an abstract storage method, builds
``next`` links and picks the answer's media type. What it leaves to the platform, and
what this module does:

- AGS 2.0 (https://www.imsglobal.org/spec/lti-ags/v2p0/): ``find_lineitems`` (filters
  and paging), ``find_lineitem``, ``create_lineitem``, ``update_lineitem``,
  ``delete_lineitem``, ``update_score`` (returns an ``UpdateScoreStatus``: created,
  success, or Moodle's 409 for an older timestamp; an unknown user is refused with the
  library's ``LtiServiceException``), ``get_results``.
- NRPS 2.0 (https://www.imsglobal.org/spec/lti-nrps/v2p0): ``get_member_data_page``,
  ``get_context_by_id``, ``is_resource_link_valid``.

The library hands every query parameter to these methods as keyword arguments, as text:
they take ``**unknown`` (a tool's extra parameter would otherwise be a TypeError) and
convert ``page`` and ``limit`` themselves.
"""

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lti1p3platform.exceptions import LtiServiceException
from lti1p3platform.membership import Context
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import (
    AssignmentsGradesService,
    NamesRoleProvisioningService,
    TPage,
)

from .people import Course, Link, Person
from .store import PlatformStore

#: AGS scopes by short name, as the built-in platform's --ags-scopes takes them.
AGS_SCOPE_NAMES = ("lineitem", "lineitem.readonly", "result.readonly", "score")


@dataclass(frozen=True)
class ServiceSettings:
    """What this platform lets the tool do, in the library's terms."""

    #: Short AGS scope names (:data:`AGS_SCOPE_NAMES`).
    ags_scopes: tuple[str, ...] = ("lineitem", "result.readonly", "score")
    #: Members per NRPS page when the tool asks for no ``limit``.
    nrps_page_size: int = 10

    @property
    def manage_lineitems(self) -> bool:
        return "lineitem" in self.ags_scopes

    @property
    def results(self) -> bool:
        return "result.readonly" in self.ags_scopes

    @property
    def scores(self) -> bool:
        return "score" in self.ags_scopes

    @property
    def container(self) -> bool:
        """Whether launches name the line items container. Without it the library
        advertises only the activity's own line item and (as far as its claim code
        gets) only the score scope: Moodle's "grade sync only"."""
        return "lineitem" in self.ags_scopes or "lineitem.readonly" in self.ags_scopes


def _count(value, name: str, default: int | None) -> int | None:
    """A positive whole number from the query (text) or the library (int)."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise LtiServiceException(f"{name} must be a whole number of at least 1.", 400)
    return number


def page_of(entries: list, page, limit) -> TPage:
    """One page of ``entries`` as the library's ``TPage`` (it adds the ``next`` link)."""
    page, limit = _count(page, "page", 1), _count(limit, "limit", None)
    if limit is None:
        return {"content": entries, "has_next": False}
    start = (page - 1) * limit
    return {"content": entries[start : start + limit], "has_next": start + limit < len(entries)}


def _results_url(lineitem_url: str, user_id: str) -> str:
    """A result's id: the line item's result service filtered to one user (AGS 3.3)."""
    parts = urlsplit(lineitem_url)
    query = urlencode([*parse_qsl(parts.query), ("user_id", user_id)])
    return urlunsplit(parts._replace(path=parts.path + "/results", query=query))


class AGSService(AssignmentsGradesService):
    """AGS for the one course, over :class:`PlatformStore`."""

    def __init__(
        self,
        request,
        conf,
        *,
        store: PlatformStore,
        settings: ServiceSettings,
        roster: dict[str, Person],
        lineitem_url: str | None = None,
    ):
        super().__init__(
            request,
            conf,
            store.urls.lineitems(store.course.id),
            # The library builds the results ``next`` link from this one URL.
            lineitem_url,
            allow_creating_lineitems=settings.manage_lineitems,
            results_service_enabled=settings.results,
            scores_service_enabled=settings.scores,
        )
        self.store = store
        self.roster = roster

    def find_lineitems(
        self,
        page=1,
        limit=None,
        line_item_id=None,
        resource_link_id=None,
        resource_id=None,
        tag=None,
        **unknown,
    ) -> TPage:
        # AGS 2.0 section 3.2.5: filters by resource_link_id, resource_id and tag.
        wanted = {"resourceLinkId": resource_link_id, "resourceId": resource_id, "tag": tag}
        items = [
            item.document()
            for item in self.store.live()
            if all(v is None or item.fields.get(k) == v for k, v in wanted.items())
            and (line_item_id is None or item.key == line_item_id)
        ]
        return page_of(items, page, limit)

    def find_lineitem(self, line_item_id: str):
        return self.store.find(line_item_id).document()

    def create_lineitem(self, creation_data):
        return self.store.create(creation_data).document()

    def update_lineitem(self, update_data):
        # The library has put the line item's key from the URL into ``id``.
        return self.store.update(update_data["id"], update_data).document()

    def delete_lineitem(self, line_item_id: str) -> None:
        self.store.delete(line_item_id)

    def update_score(self, line_item_id: str, score) -> UpdateScoreStatus:
        item = self.store.find(line_item_id)
        user_id = score.get("userId")
        user_id = str(user_id) if isinstance(user_id, str | int) else ""
        person = self.roster.get(user_id)
        if person is None:
            self.store.refuse(item, user_id, 404)
            raise LtiServiceException(
                f"User {user_id or '(none)'} is not a member of {self.store.course.title}; "
                "no score was recorded.",
                404,
            )
        if not self.store.is_newer(item, user_id, score):
            self.store.refuse(item, user_id, 409)
            return UpdateScoreStatus.OLD_TIMESTAMP
        first = self.store.accept(item, user_id, score)
        return UpdateScoreStatus.CREATED if first else UpdateScoreStatus.SUCCESS

    def get_results(self, line_item_id: str, page=1, limit=None, user_id=None, **unknown) -> TPage:
        item = self.store.find(line_item_id)
        results = []
        for member, scores in item.scores.items():
            last = scores[-1]
            if user_id is not None and member != user_id:
                continue
            result = {"id": _results_url(item.url, member), "userId": member, "scoreOf": item.url}
            if "scoreGiven" in last:
                result["resultScore"] = last["scoreGiven"]
                result["resultMaximum"] = last.get("scoreMaximum", 1)
            if last.get("comment"):
                result["comment"] = last["comment"]
            results.append(result)
        return page_of(results, page, limit)


class NRPSService(NamesRoleProvisioningService):
    """NRPS for the one course: everyone on the roster, with their status."""

    def __init__(
        self, request, conf, *, url: str, course: Course, roster: dict[str, Person], links
    ):
        super().__init__(request, conf, url)
        self.course = course
        self.roster = roster
        self.links: dict[str, Link] = links

    def get_member_data_page(self, page=1, limit=None, role=None, since=None, **unknown) -> TPage:
        # ``role`` filter (NRPS 2.0 section 2.4.1): a full URI or its short name. ``since``
        # (membership differences) is not offered: every call lists everyone.
        members = [
            p.member()
            for p in self.roster.values()
            if role is None or any(r == role or r.endswith("#" + role) for r in p.roles)
        ]
        return page_of(members, page, limit)

    def get_context_by_id(self) -> Context:
        return Context(id=self.course.id, label=self.course.label, title=self.course.title)

    def is_resource_link_valid(self, context_id: str, resource_link_id: str) -> bool:
        return context_id == self.course.id and resource_link_id in self.links
