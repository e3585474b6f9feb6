"""Assignment and Grade Services 2.0: line items and scores.

https://www.imsglobal.org/spec/lti-ags/v2p0/ — line items (section 3.2), the line item
container and its filters and paging (3.2.4, 3.2.5), scores (3.4). URLs are the LMS's:
a line item URL may carry a query (Moodle: ``.../lineitem?type_id=1``), so the scores
URL is built with urllib: ``/scores`` is appended to the path, the query kept.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ananke_hub.lti_spec import (
    AGS_MEDIA_LINEITEM,
    AGS_MEDIA_LINEITEMS,
    AGS_MEDIA_RESULTS,
    AGS_MEDIA_SCORE,
)

from .client import ServiceSession
from .errors import BadLMSResponse

# activityProgress and gradingProgress values (AGS 2.0 section 3.4.6, 3.4.7).
ACTIVITY_INITIALIZED = "Initialized"
ACTIVITY_IN_PROGRESS = "InProgress"
ACTIVITY_SUBMITTED = "Submitted"
ACTIVITY_COMPLETED = "Completed"
GRADING_FULLY_GRADED = "FullyGraded"
GRADING_PENDING_MANUAL = "PendingManual"
GRADING_NOT_READY = "NotReady"

#: Line items asked for per page (the platform may send fewer).
PAGE_LIMIT = 100


def scores_url(lineitem_url: str, service: str = "scores") -> str:
    """The score service of a line item: its path + ``/scores``, query kept (AGS 3.4);
    ``service="results"`` for the result service (AGS 3.3)."""
    parts = urlsplit(lineitem_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + service, fragment=""))


def with_query(url: str, params: dict) -> str:
    """``url`` with ``params`` added to the query it already has."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = set(params)
    query = [(k, v) for k, v in query if k not in names]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def iso_timestamp(when: datetime | None = None) -> str:
    """ISO 8601 with milliseconds and the UTC offset, as AGS scores need."""
    return (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class LineItem:
    id: str
    label: str
    score_maximum: float
    resource_id: str = ""
    tag: str = ""
    resource_link_id: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data) -> "LineItem | None":
        """A line item from the LMS, or None if it lacks what the spec requires."""
        if not isinstance(data, dict):
            return None
        item_id, maximum = data.get("id"), _number(data.get("scoreMaximum"))
        if not isinstance(item_id, str) or not item_id or maximum is None:
            return None

        def text(name):
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            id=item_id,
            label=text("label"),
            score_maximum=maximum,
            resource_id=text("resourceId"),
            tag=text("tag"),
            resource_link_id=text("resourceLinkId"),
            extra=data,
        )

    def to_json(self) -> dict:
        data = {**self.extra, "label": self.label, "scoreMaximum": self.score_maximum}
        for key, value in (
            ("id", self.id),
            ("resourceId", self.resource_id),
            ("tag", self.tag),
            ("resourceLinkId", self.resource_link_id),
        ):
            if value:
                data[key] = value
        return data


@dataclass(frozen=True)
class Score:
    """One score of one user for one line item (AGS 2.0 section 3.4)."""

    user_id: str
    activity_progress: str
    grading_progress: str
    score_given: float | None = None
    score_maximum: float | None = None
    comment: str | None = None

    def to_json(self, timestamp: str | None = None) -> dict:
        data = {
            "userId": self.user_id,
            "activityProgress": self.activity_progress,
            "gradingProgress": self.grading_progress,
            "timestamp": timestamp or iso_timestamp(),
        }
        if self.score_given is not None:
            # scoreMaximum is required with scoreGiven (AGS 3.4.3).
            data["scoreGiven"] = self.score_given
            data["scoreMaximum"] = self.score_maximum
        if self.comment:
            data["comment"] = self.comment
        return data


class AGSClient:
    """The line item and score services, through one authorized session."""

    def __init__(self, session: ServiceSession, *, max_pages: int = 100):
        self.session = session
        self.max_pages = max_pages

    async def line_items(
        self,
        lineitems_url: str,
        *,
        resource_link_id: str | None = None,
        resource_id: str | None = None,
        tag: str | None = None,
    ) -> list[LineItem]:
        """All line items of the container (filtered by the platform if it can), paged."""
        url = with_query(
            lineitems_url,
            {
                "resource_link_id": resource_link_id,
                "resource_id": resource_id,
                "tag": tag,
                "limit": str(PAGE_LIMIT),
            },
        )
        items: list[LineItem] = []
        async for response in self.session.pages(
            lineitems_url,
            url,
            action="list the line items",
            accept=AGS_MEDIA_LINEITEMS,
            max_pages=self.max_pages,
            names=("line item list", "page of line items"),
        ):
            page = response.json("the line item list")
            if not isinstance(page, list):
                raise BadLMSResponse(
                    f"The LMS answered the line item list at {response.url} with a "
                    f"{type(page).__name__}, not a list of line items.",
                    status=response.status,
                )
            items.extend(item for item in map(LineItem.from_json, page) if item is not None)
        return items

    async def line_item(self, url: str) -> LineItem:
        response = await self.session.request(
            "GET", url, action="read the line item", accept=AGS_MEDIA_LINEITEM
        )
        return self._item(response, "the line item")

    async def create_line_item(
        self,
        lineitems_url: str,
        *,
        label: str,
        score_maximum: float,
        resource_id: str = "",
        tag: str = "",
        resource_link_id: str = "",
    ) -> LineItem:
        body = LineItem(
            id="",
            label=label,
            score_maximum=score_maximum,
            resource_id=resource_id,
            tag=tag,
            resource_link_id=resource_link_id,
        ).to_json()
        response = await self.session.request(
            "POST",
            lineitems_url,
            action=f"create the line item {label!r}",
            accept=AGS_MEDIA_LINEITEM,
            content_type=AGS_MEDIA_LINEITEM,
            content=json.dumps(body).encode(),
        )
        return self._item(response, "the new line item")

    async def update_line_item(self, item: LineItem, *, label: str, score_maximum: float):
        body = {**item.to_json(), "label": label, "scoreMaximum": score_maximum}
        response = await self.session.request(
            "PUT",
            item.id,
            action=f"update the line item {label!r}",
            accept=AGS_MEDIA_LINEITEM,
            content_type=AGS_MEDIA_LINEITEM,
            content=json.dumps(body).encode(),
        )
        if not response.body:
            return LineItem.from_json(body) or item
        return self._item(response, "the updated line item")

    async def post_score(self, lineitem_url: str, score: Score, *, timestamp: str | None = None):
        """Publish one score; raises :class:`LTIServiceError` when the LMS refuses it."""
        await self.session.request(
            "POST",
            scores_url(lineitem_url),
            action=f"send the score of LMS user {score.user_id}",
            accept="application/json",
            content_type=AGS_MEDIA_SCORE,
            content=json.dumps(score.to_json(timestamp)).encode(),
        )

    async def result_fraction(self, lineitem_url: str, user_id: str) -> float | None:
        """What the LMS holds for ``user_id`` on the line item, as a fraction of its
        maximum (``resultScore / resultMaximum``, AGS 2.0 section 3.3), or None if it
        holds no result. Needs the result.readonly scope."""
        url = with_query(scores_url(lineitem_url, "results"), {"user_id": user_id})
        response = await self.session.request(
            "GET", url, action=f"read the result of LMS user {user_id}", accept=AGS_MEDIA_RESULTS
        )
        page = response.json("the results")
        if not isinstance(page, list):
            raise BadLMSResponse(
                f"The LMS answered the results at {url} with a {type(page).__name__}, "
                "not a list of results.",
                status=response.status,
            )
        for result in page:
            if not isinstance(result, dict) or str(result.get("userId")) != user_id:
                continue
            score, maximum = _number(result.get("resultScore")), _number(result.get("resultMaximum"))
            if score is None:
                return None
            # resultMaximum defaults to 1 (AGS 2.0 section 3.3.4.5).
            return score / (maximum if maximum else 1.0)
        return None

    @staticmethod
    def _item(response, what: str) -> LineItem:
        item = LineItem.from_json(response.json(what))
        if item is None:
            raise BadLMSResponse(
                f"The LMS answered with {what} at {response.url} without an id or a "
                "numeric scoreMaximum.",
                status=response.status,
            )
        return item
