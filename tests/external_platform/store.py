"""The platform's gradebook in memory: line items, the scores posted to them, a tally.

Storage only. The library's AGS service (``lti1p3platform.service_connector``) checks the
access token and routes each request to one of its abstract storage methods, which
``services.py`` implements with this store. The tally counts every score post that
reached the storage, accepted or refused, also for line items deleted since, so a test
can prove that nothing arrived twice.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from lti1p3platform.exceptions import LineItemNotFoundException

from .people import Course, Link
from .urls import ServiceURLs


@dataclass
class StoredLineItem:
    #: The line item's name in our URLs: the resource link id for an activity's own line
    #: item, a number for the ones a tool created.
    key: str
    url: str
    #: AGS 2.0 section 3.2 fields as the tool sent them (label, scoreMaximum, resourceId,
    #: tag, resourceLinkId, ...), without ``id``.
    fields: dict
    deleted: bool = False
    #: LMS user id -> the scores accepted for them, oldest first.
    scores: dict[str, list[dict]] = field(default_factory=dict)

    def document(self) -> dict:
        return {**self.fields, "id": self.url}


@dataclass
class ScoreTally:
    accepted: int = 0
    #: HTTP status -> how many posts got it.
    refused: Counter = field(default_factory=Counter)


def _moment(timestamp) -> datetime | None:
    """A score's ``timestamp`` (ISO 8601), or None when it is not one (nothing checks it)."""
    if not isinstance(timestamp, str):
        return None
    try:
        return datetime.fromisoformat(timestamp)
    except ValueError:
        return None


class PlatformStore:
    """Line items and scores of the one course."""

    def __init__(self, urls: ServiceURLs, course: Course, links: dict[str, Link]):
        self.urls = urls
        self.course = course
        self.links = links
        self.reset()

    def reset(self) -> None:
        """As after start: each activity's own line item, no scores, an empty tally."""
        self.items: dict[str, StoredLineItem] = {}
        self.tally: dict[tuple[str, str], ScoreTally] = {}
        self._next_key = 1
        for link in self.links.values():
            # Moodle makes a graded activity's line item with the activity (maximum 100).
            self.items[link.id] = StoredLineItem(
                link.id,
                self.urls.launch_lineitem(self.course.id, link.id),
                {"label": link.title, "scoreMaximum": 100, "resourceLinkId": link.id},
            )

    def live(self) -> list[StoredLineItem]:
        return [item for item in self.items.values() if not item.deleted]

    def find(self, key: str) -> StoredLineItem:
        item = self.items.get(key)
        if item is None or item.deleted:
            raise LineItemNotFoundException(f"No line item {key} in {self.course.id}.")
        return item

    def create(self, fields: dict) -> StoredLineItem:
        key = str(self._next_key)
        self._next_key += 1
        fields = {k: v for k, v in fields.items() if k != "id"}
        item = StoredLineItem(key, self.urls.lineitem(self.course.id, key), fields)
        self.items[key] = item
        return item

    def update(self, key: str, fields: dict) -> StoredLineItem:
        item = self.find(key)
        item.fields.update({k: v for k, v in fields.items() if k != "id"})
        return item

    def delete(self, key: str) -> None:
        self.find(key).deleted = True

    def count(self, item: StoredLineItem, user_id: str) -> ScoreTally:
        return self.tally.setdefault((item.url, user_id), ScoreTally())

    def is_newer(self, item: StoredLineItem, user_id: str, score: dict) -> bool:
        """False if the score is older than the last one accepted (Moodle answers 409)."""
        previous = item.scores.get(user_id)
        if not previous:
            return True
        old, new = _moment(previous[-1].get("timestamp")), _moment(score.get("timestamp"))
        if old is None or new is None:
            return True
        try:
            return new >= old
        except TypeError:  # one with an offset, one without
            return True

    def accept(self, item: StoredLineItem, user_id: str, score: dict) -> bool:
        """Store the score; True if it is the user's first for this line item."""
        first = user_id not in item.scores
        item.scores.setdefault(user_id, []).append(dict(score))
        self.count(item, user_id).accepted += 1
        return first

    def refuse(self, item: StoredLineItem, user_id: str, status: int) -> None:
        self.count(item, user_id).refused[str(status)] += 1

    def scores_document(self) -> dict:
        """What ``GET /_test/scores.json`` shows: every line item, every score post."""
        by_url = {item.url: item for item in self.items.values()}
        posts = []
        for (url, user_id), tally in sorted(self.tally.items()):
            item = by_url[url]
            last = item.scores.get(user_id, [None])[-1]
            posts.append(
                {
                    "lineitem": url,
                    "label": item.fields.get("label", ""),
                    "userId": user_id,
                    "accepted": tally.accepted,
                    "refused": dict(tally.refused),
                    "last": last,
                }
            )
        items = [{**item.document(), "deleted": item.deleted} for item in self.items.values()]
        return {"context": self.course.id, "lineitems": items, "posts": posts}
