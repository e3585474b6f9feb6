"""Assignment and Grade Services 2.0 (https://www.imsglobal.org/spec/lti-ags/v2p0/).

Per course (context):

- `GET|POST /ags/<ctx>/lineitems`: the line item container (section 3.2): list, with
  the filters `resource_link_id`, `resource_id`, `tag` and paging (`limit`, `from`,
  `Link` headers); create a line item (scope lineitem).
- `GET|PUT|DELETE /ags/<ctx>/lineitems/<item>/lineitem?type_id=1`: one line item.
- `POST /ags/<ctx>/lineitems/<item>/lineitem/scores?type_id=1`: publish a score (3.4).
- `GET /ags/<ctx>/lineitems/<item>/lineitem/results?type_id=1`: the results (3.3).

Like Moodle's, line item URLs carry the query `type_id=1`; `/scores` and `/results` go
into the path before it. Each activity has its own line item (item id = resource link
id, maximum 100) that the tool cannot delete; created ones get numeric ids.
"""

from .. import constants as C
from ..documents import (
    DocumentError,
    lineitem_json,
    read_lineitem,
    read_score,
    result_json,
    score_user_id,
)
from ..store import Course, LineItem, ScoreConflict
from .service import ServiceError, ServiceHandler

READ_LINEITEMS = (C.AGS_SCOPE_LINEITEM, C.AGS_SCOPE_LINEITEM_READONLY)


class AGSHandler(ServiceHandler):
    def lineitem(self, course: Course, item_id: str) -> LineItem:
        """The line item named by the URL, whose query must be Moodle's `type_id=1`."""
        type_id = self.get_query_argument("type_id", None)
        if type_id != C.TYPE_ID:
            raise ServiceError(
                400,
                f"This URL needs the query ?type_id={C.TYPE_ID} (got "
                f"{'none' if type_id is None else repr(type_id)}): use the line item's id "
                "exactly as the platform gave it, with /scores or /results added to the "
                "path before the query.",
            )
        item = course.lineitems.get(item_id)
        if item is None:
            raise ServiceError(
                404,
                f"No line item {item_id!r} in {course.context.title}: it was deleted or "
                "never existed. List the line items again.",
            )
        return item

    def document(self, media: str, course: Course, current: LineItem | None = None) -> dict:
        try:
            return read_lineitem(self.json_body(media), course, current)
        except DocumentError as exc:
            raise ServiceError(400, str(exc)) from None

    def send_lineitem(self, course: Course, item: LineItem) -> None:
        self.send_json(lineitem_json(self.platform, course.id, item), C.AGS_MEDIA_LINEITEM)


class LineItemsHandler(AGSHandler):
    def get(self, context_id: str):
        self.bearer(*READ_LINEITEMS)
        course = self.course(context_id)
        self.check_accept(C.AGS_MEDIA_LINEITEMS)
        items = course.find_lineitems(
            self.get_query_argument("resource_link_id", None),
            self.get_query_argument("resource_id", None),
            self.get_query_argument("tag", None),
        )
        if course.stale_lineitems:
            items += course.find_lineitems(
                self.get_query_argument("resource_link_id", None),
                self.get_query_argument("resource_id", None),
                self.get_query_argument("tag", None),
                stale=True,
            )
        page = self.page(items, moodle_links=self.platform.moodle)
        self.send_json(
            [lineitem_json(self.platform, course.id, item) for item in page],
            C.AGS_MEDIA_LINEITEMS,
        )

    def post(self, context_id: str):
        self.bearer(C.AGS_SCOPE_LINEITEM)
        course = self.course(context_id)
        fields = self.document(C.AGS_MEDIA_LINEITEM, course)
        item = LineItem(item_id=self.store.new_lineitem_id(), **fields)
        course.lineitems[item.item_id] = item
        self.log.info("ags: course:%s line item %s created", course.id, item.item_id)
        self.set_status(201)
        self.set_header("Location", self.platform.lineitem_url(course.id, item.item_id))
        self.send_lineitem(course, item)


class LineItemHandler(AGSHandler):
    def get(self, context_id: str, item_id: str):
        self.bearer(*READ_LINEITEMS)
        course = self.course(context_id)
        item = self.lineitem(course, item_id)
        self.check_accept(C.AGS_MEDIA_LINEITEM)
        self.send_lineitem(course, item)

    def put(self, context_id: str, item_id: str):
        self.bearer(C.AGS_SCOPE_LINEITEM)
        course = self.course(context_id)
        item = self.lineitem(course, item_id)
        fields = self.document(C.AGS_MEDIA_LINEITEM, course, current=item)
        # Stored scores keep their own maximum; shown on the new scale they keep their
        # percentage, as Moodle's rescaling does.
        for name, value in fields.items():
            setattr(item, name, value)
        self.send_lineitem(course, item)

    def delete(self, context_id: str, item_id: str):
        self.bearer(C.AGS_SCOPE_LINEITEM)
        course = self.course(context_id)
        item = self.lineitem(course, item_id)
        if item.coupled:
            raise ServiceError(
                403,
                f"{item.label!r} is the activity's own line item: it goes only with the "
                "activity (Moodle refuses this too).",
            )
        course.delete_lineitem(item.item_id)
        self.log.info("ags: course:%s line item %s deleted", course.id, item.item_id)
        self.set_status(204)
        self.finish()

    def post(self, context_id: str, item_id: str):
        raise ServiceError(
            405,
            "Scores go to the line item URL with /scores added to the path before the "
            f"query: .../lineitem/scores?type_id={C.TYPE_ID}, not .../lineitem?type_id=.../scores.",
            {"Allow": "GET, PUT, DELETE"},
        )


class ScoresHandler(AGSHandler):
    def post(self, context_id: str, item_id: str):
        self.bearer(C.AGS_SCOPE_SCORE)
        course = self.course(context_id)
        item = self.lineitem(course, item_id)
        body = self.json_body(C.AGS_MEDIA_SCORE)
        user_id = score_user_id(body)
        try:
            score = read_score(body, course)
            course.record_score(item.item_id, score)
        except DocumentError as exc:
            self._refused(course, item, user_id, 400, body)
            raise ServiceError(400, str(exc)) from None
        except ScoreConflict as exc:
            self._refused(course, item, user_id, 409, body)
            raise ServiceError(
                409,
                f"The score for user {user_id} on {item.label!r} is not newer than the one "
                f"stored (timestamp {exc.stored.timestamp.isoformat()}). Moodle compares "
                "whole seconds and keeps the newest: send the score with a later timestamp.",
            ) from None
        tally = self.store.tally(course.id, item.item_id, score.user_id)
        tally.accepted += 1
        tally.history.append({"status": 204, "score": body})
        self.set_status(204)
        self.finish()

    def _refused(
        self, course: Course, item: LineItem, user_id: str | None, status: int, body
    ) -> None:
        if user_id is not None:
            tally = self.store.tally(course.id, item.item_id, user_id)
            tally.refused[status] = tally.refused.get(status, 0) + 1
            tally.history.append({"status": status, "score": body})


class ResultsHandler(AGSHandler):
    def get(self, context_id: str, item_id: str):
        self.bearer(C.AGS_SCOPE_RESULT_READONLY)
        course = self.course(context_id)
        item = self.lineitem(course, item_id)
        self.check_accept(C.AGS_MEDIA_RESULTS)
        user_id = self.get_query_argument("user_id", None)
        scores = [
            score
            for (scored_item, scored_user), score in course.scores.items()
            if scored_item == item.item_id
            and score.score_given is not None
            and (user_id is None or scored_user == user_id)
        ]
        page = self.page(scores, moodle_links=self.platform.moodle)
        self.send_json(
            [result_json(self.platform, course.id, item, score) for score in page],
            C.AGS_MEDIA_RESULTS,
        )


_ITEM = r"/ags/([^/]+)/lineitems/([^/]+)/lineitem"
ROUTES = [
    (r"/ags/([^/]+)/lineitems", LineItemsHandler),
    (_ITEM, LineItemHandler),
    (_ITEM + r"/scores", ScoresHandler),
    (_ITEM + r"/results", ResultsHandler),
]
