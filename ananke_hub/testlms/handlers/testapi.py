"""The test API: only with `--test-api` (tests and benchmarks; the demo leaves it off).

It lets a test play the LMS's people and its failures, and see what arrived:

- `POST /_test/faults` (a rule, see :mod:`..faults`) -> 201 the rule with its id;
  `GET /_test/faults` -> the rules with `count` left and `served`;
  `DELETE /_test/faults` -> 204, no more faults.
- `POST /_test/load` (see :mod:`..load`) -> the load setting and its counters, zeroed;
  `GET /_test/load` -> them, with requests in flight, peak, 429s, TCP connections and
  the connection each request came on (`request_connections`).
- `POST /_test/delete_lineitem` `{"id": "<line item URL>"}` -> 204: a teacher deletes
  the column in the LMS (any line item, the activity's own included).
- `POST /_test/roster` `{"context": "ds101", "user_id": "107", "status": "Active"}`:
  change an enrolment (Active, Inactive; Deleted unenrols); an unknown user_id is
  enrolled as a new learner. `"gradable": false` makes them a non-editing teacher as
  Moodle has them: listed and launched as Learner, their scores refused with 400.
  -> 200 the member, or 204 after Deleted.
- `GET /_test/scores.json` -> `{"posts": [{"context", "lineitem", "userId", "accepted",
  "refused": {"409": 1}}]}`: how often each score was posted, also for line items
  deleted since (to prove nothing was sent twice).
- `POST /_test/reset` -> 204: demo data again (rosters, launch line items only, no
  scores, no tallies, no faults). Access tokens stay valid.
"""

from urllib.parse import urlsplit

from .. import constants as C
from ..documents import DocumentError, member_json, parse_json
from ..faults import FaultRuleError
from ..load import LoadSettingError
from .service import ServiceError, ServiceHandler


class TestAPIHandler(ServiceHandler):
    async def prepare(self):
        pass  # no injected faults here

    def body(self) -> dict:
        try:
            doc = parse_json(self.request.body)
        except DocumentError as exc:
            raise ServiceError(400, str(exc)) from None
        if not isinstance(doc, dict):
            raise ServiceError(400, "Send a JSON object.")
        return doc

    def no_content(self) -> None:
        self.set_status(204)
        self.finish()


class FaultsHandler(TestAPIHandler):
    def get(self):
        self.send_json({"rules": [rule.to_json() for rule in self.faults.rules]})

    def post(self):
        try:
            rule = self.faults.add(self.body())
        except FaultRuleError as exc:
            raise ServiceError(400, str(exc)) from None
        self.log.info("test api: fault rule %d added", rule.id)
        self.set_status(201)
        self.send_json(rule.to_json())

    def delete(self):
        self.faults.clear()
        self.no_content()


class LoadHandler(TestAPIHandler):
    def get(self):
        self.send_json(self.load.to_json())

    def post(self):
        try:
            self.load.configure(self.body())
        except LoadSettingError as exc:
            raise ServiceError(400, str(exc)) from None
        self.log.info("test api: load set: %s", self.load.to_json())
        self.send_json(self.load.to_json())


class DeleteLineItemHandler(TestAPIHandler):
    def post(self):
        url = self.body().get("id")
        if not isinstance(url, str):
            raise ServiceError(400, 'Send {"id": "<the line item URL>"}.')
        # /ags/<ctx>/lineitems/<item>/lineitem
        parts = urlsplit(url).path.split("/")
        if len(parts) != 6 or parts[1] != "ags" or parts[3] != "lineitems":
            raise ServiceError(400, f"{url!r} is not a line item URL of this platform.")
        course = self.course(parts[2])
        if parts[4] not in course.lineitems:
            raise ServiceError(404, f"No line item {parts[4]!r} in {course.context.title}.")
        course.delete_lineitem(parts[4])
        self.log.info("test api: course:%s line item %s deleted", course.id, parts[4])
        self.no_content()


class RosterHandler(TestAPIHandler):
    def post(self):
        doc = self.body()
        course = self.course(str(doc.get("context", "")))
        user_id, status = doc.get("user_id"), doc.get("status")
        if not isinstance(user_id, str) or not user_id:
            raise ServiceError(400, "user_id must be a non-empty string.")
        if status not in C.MEMBER_STATUSES:
            raise ServiceError(400, f"status must be one of {', '.join(C.MEMBER_STATUSES)}.")
        gradable = doc.get("gradable")
        if gradable is not None and not isinstance(gradable, bool):
            raise ServiceError(400, "gradable must be true or false.")
        enrolment = course.set_status(user_id, status, gradable=gradable)
        self.log.info("test api: course:%s user:%s -> %s", course.id, user_id, status)
        if status == C.MEMBER_DELETED:
            self.no_content()
        else:
            self.send_json(member_json(enrolment))


class ScoreTallyHandler(TestAPIHandler):
    def get(self):
        posts = [
            {
                "context": context_id,
                "lineitem": self.platform.lineitem_url(context_id, item_id),
                "userId": user_id,
                "accepted": tally.accepted,
                "refused": {str(status): n for status, n in tally.refused.items()},
            }
            for (context_id, item_id, user_id), tally in self.store.tallies.items()
        ]
        self.send_json({"posts": posts})


class ResetHandler(TestAPIHandler):
    def post(self):
        self.store.reset()
        self.faults.clear()
        self.log.info("test api: reset to the demo data")
        self.no_content()


ROUTES = [
    (r"/_test/faults", FaultsHandler),
    (r"/_test/load", LoadHandler),
    (r"/_test/delete_lineitem", DeleteLineItemHandler),
    (r"/_test/roster", RosterHandler),
    (r"/_test/scores\.json", ScoreTallyHandler),
    (r"/_test/reset", ResetHandler),
]
