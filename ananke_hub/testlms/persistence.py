"""The platform's gradebook across restarts: the store as a JSON file in its state dir.

An LMS keeps its gradebook; so does the demo's. With ``--persist`` the platform loads
``<state-dir>/store.json`` at start and writes it shortly after every request that may
have changed something (line items, scores, roster changes, a test reset), and once more
when it stops. Access tokens and the test API's tallies are not kept: a tool asks for a
new token after a restart, as it would after the token expired.

The file is data only, written to a temporary file and renamed over the old one, so a
crash leaves the last complete gradebook, never half of one.
"""

import json
import logging
import os
import secrets
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from tornado.ioloop import IOLoop

from . import demo_data
from .store import LineItem, PlatformStore, Score

#: Bumped when the layout changes; a file of another version is refused, not guessed at.
FORMAT = 1
FILE_NAME = "store.json"
#: Seconds between a change and the write: a grade sync posting hundreds of scores
#: writes the file a few times, not hundreds.
SAVE_DELAY = 0.5


class StoreFileError(Exception):
    """The gradebook file cannot be read; the message says which file and what to do."""


def dump(store: PlatformStore) -> dict:
    courses = {}
    for course in store.courses.values():
        courses[course.id] = {
            "enrolments": [
                {"sub": e.user.sub, "roles": list(e.roles), "status": e.status}
                for e in course.enrolments.values()
            ],
            "lineitems": [asdict(item) for item in course.lineitems.values()],
            # Activities a tool placed by Deep Linking (an older file has none).
            "added_links": [
                {"id": link.id, "title": link.title, "custom": dict(link.custom)}
                for link in course.added_links
            ],
            "scores": [
                {"item_id": item_id, **asdict(score), "timestamp": score.timestamp.isoformat()}
                for (item_id, _user), score in course.scores.items()
            ],
        }
    return {"format": FORMAT, "next_item_id": store._next_item_id, "courses": courses}


def _user(course_users: dict[str, demo_data.User], sub: str) -> demo_data.User:
    return course_users.get(sub) or demo_data.find_user(sub) or demo_data.extra_learner(sub)


def load(store: PlatformStore, data: dict) -> None:
    """Replace what ``store`` holds for each course in ``data``; courses the demo data
    no longer has are left out."""
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
    store._next_item_id = max(store._next_item_id, int(data["next_item_id"]))
    for context_id, saved in data["courses"].items():
        course = store.course(context_id)
        if course is None:
            continue
        users = {e.user.sub: e.user for e in course.enrolments.values()}
        course.enrolments = {
            e["sub"]: demo_data.Enrolment(_user(users, e["sub"]), tuple(e["roles"]), e["status"])
            for e in saved["enrolments"]
        }
        course.added_links = [
            demo_data.ResourceLink(
                link["id"], link["title"], tuple(sorted(link["custom"].items()))
            )
            for link in saved.get("added_links", [])
        ]
        course.lineitems = {}
        for item in saved["lineitems"]:
            course.lineitems[item["item_id"]] = LineItem(**item)
        course.scores = {}
        for entry in saved["scores"]:
            fields = dict(entry)
            item_id = fields.pop("item_id")
            fields["timestamp"] = datetime.fromisoformat(fields["timestamp"])
            score = Score(**fields)
            course.scores[(item_id, score.user_id)] = score


class StoreFile:
    """Keeps ``store`` in ``<state_dir>/store.json``: :meth:`load` once, then
    :meth:`changed` after each change (a write follows within :data:`SAVE_DELAY`)."""

    def __init__(self, state_dir: Path, store: PlatformStore, log: logging.Logger):
        self.path = Path(state_dir) / FILE_NAME
        self.store = store
        self.log = log
        self._pending = None

    def load(self) -> bool:
        """Load the file if there is one; True if it was there."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return False
        try:
            load(self.store, json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFileError(
                f"The platform's gradebook {self.path} cannot be read ({exc}). Move it "
                "aside to start with an empty gradebook, or restore it from a backup."
            ) from exc
        return True

    def changed(self) -> None:
        if self._pending is None:
            self._pending = IOLoop.current().call_later(SAVE_DELAY, self.save)

    def save(self) -> None:
        if self._pending is not None:
            IOLoop.current().remove_timeout(self._pending)
            self._pending = None
        data = json.dumps(dump(self.store), indent=1).encode()
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
