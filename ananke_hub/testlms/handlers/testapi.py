"""The test API: only with `--test-api` (tests and benchmarks; the demo leaves it off).

It lets a test play the LMS's people and its failures, and see what arrived:

- `POST /_test/faults` (a rule, see :mod:`..faults`) -> 201 the rule with its id;
  `GET /_test/faults` -> the rules with `count` left and `served`;
  `DELETE /_test/faults` -> 204, no more faults.
- `POST /_test/load` (see :mod:`..load`) -> the load setting and its counters, zeroed;
  `GET /_test/load` -> them, with requests in flight, peak, 429s, TCP connections and
  the connection each request came on (`request_connections`).
- `POST /_test/delete_lineitem` `{"id": "<line item URL>"}` -> 204: a teacher deletes
  the column in the LMS (any line item, the activity's own included). With
  `"stale": true` the line item container still lists it (the tool read the list just
  before the teacher deleted it); its URL answers 404.
- `POST /_test/lineitems` `{"context": "ds101", "label": ..., "scoreMaximum": ...,
  "resourceId", "tag", "resourceLinkId"}` -> 201 the line item: a column a teacher (or
  another tool) made, checked as AGS checks a tool's.
- `POST /_test/roster` `{"context": "ds101", "user_id": "107", "status": "Active"}`:
  change an enrolment (Active, Inactive; Deleted unenrols); an unknown user_id is
  enrolled as a new learner. `"gradable": false` makes them a non-editing teacher as
  Moodle has them: listed and launched as Learner, their scores refused with 400.
  -> 200 the member, or 204 after Deleted.
- `PUT /_test/roster` `{"context": "ds101", "members": [{"user_id": "101", "roles":
  ["Learner"], "status": "Active", "given_name", "family_name", "email", "gradable"}]}`
  -> 200 the roster: the course's whole roster is replaced (roles as short names or
  URIs; names made up where left out; null: not shared, as Moodle's tool privacy
  settings "Share launcher's name/e-mail with the tool: Never" leave them out).
- `GET|POST /_test/settings` (see :mod:`..controls`): the token endpoint's audience,
  granted scopes and token lifetime, and the services' page size -> the settings.
- `GET /_test/token_requests` -> `{"requests": [{"form", "header", "claims", "status"}]}`:
  each token request's form, the assertion's header and claims once verified, and the
  answer's status. `DELETE /_test/tokens` -> 204: every access token is revoked.
- `GET /_test/scores.json` -> `{"posts": [{"context", "lineitem", "userId", "accepted",
  "refused": {"409": 1}, "history": [{"status": 204, "score": {...}}]}]}`: how often
  each score was posted, and each post as sent, also for line items deleted since (to
  prove nothing was sent twice).
- `POST /_test/reset` -> 204: demo data again (rosters, launch line items only, no
  scores, no tallies, no faults, the settings as at start, no token requests). Access
  tokens stay valid.
"""

from urllib.parse import urlsplit

from .. import constants as C
from .. import demo_data
from ..controls import ControlError, ServiceControls
from ..demo_data import Enrolment
from ..documents import DocumentError, lineitem_json, member_json, parse_json, read_lineitem
from ..faults import FaultRuleError
from ..load import LoadSettingError
from ..store import LineItem
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


class _SettingsResource(TestAPIHandler):
    """GET an object's settings as JSON; POST changes them (its error is a 400)."""

    what = ""
    error: type[Exception] = ValueError

    def target(self):
        raise NotImplementedError

    def get(self):
        self.send_json(self.target().to_json())

    def post(self):
        target = self.target()
        try:
            target.configure(self.body())
        except self.error as exc:
            raise ServiceError(400, str(exc)) from None
        self.log.info("test api: %s: %s", self.what, target.to_json())
        self.send_json(target.to_json())


class LoadHandler(_SettingsResource):
    what, error = "load set", LoadSettingError

    def target(self):
        return self.load


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
        stale = self.body().get("stale", False)
        if not isinstance(stale, bool):
            raise ServiceError(400, "stale must be true or false.")
        course.delete_lineitem(parts[4], stale=stale)
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


    def put(self):
        doc = self.body()
        course = self.course(str(doc.get("context", "")))
        members = doc.get("members")
        if not isinstance(members, list):
            raise ServiceError(400, 'Send {"context": ..., "members": [{"user_id": ...}, ...]}.')
        course.replace_roster([_enrolment(m) for m in members])
        self.log.info("test api: course:%s roster replaced (%d)", course.id, len(members))
        self.send_json({"members": [member_json(e) for e in course.members()]})


def _enrolment(doc: object) -> Enrolment:
    """A roster entry of `PUT /_test/roster`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("user_id"), str) or not doc["user_id"]:
        raise ServiceError(400, f"A member needs a non-empty user_id string, got {doc!r}.")
    known = {"user_id", "roles", "status", "given_name", "family_name", "email", "gradable"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ServiceError(400, f"Unknown member fields {unknown}; a member has {sorted(known)}.")
    made_up = demo_data.extra_learner(doc["user_id"])
    texts = {}
    for name, default in (
        ("given_name", made_up.given_name),
        ("family_name", made_up.family_name),
        ("email", made_up.email),
    ):
        value = doc.get(name, default)
        if value is None:
            value = ""  # not shared with the tool (Moodle's privacy settings)
        if not isinstance(value, str):
            raise ServiceError(400, f"{name} must be a string or null, got {value!r}.")
        texts[name] = value
    roles = doc.get("roles", ["Learner"])
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise ServiceError(400, f"roles must be a non-empty list of roles, got {roles!r}.")
    status = doc.get("status", C.MEMBER_ACTIVE)
    if status not in (C.MEMBER_ACTIVE, C.MEMBER_INACTIVE):
        raise ServiceError(400, f"status must be {C.MEMBER_ACTIVE} or {C.MEMBER_INACTIVE}.")
    gradable = doc.get("gradable", True)
    if not isinstance(gradable, bool):
        raise ServiceError(400, "gradable must be true or false.")
    user = demo_data.User(
        doc["user_id"],
        texts["given_name"],
        texts["family_name"],
        texts["email"],
        made_up.username,
    )
    return Enrolment(user, tuple(_role_uri(r) for r in roles), status, gradable)


def _role_uri(role: str) -> str:
    """Moodle's short names ("Learner") as the LIS membership role URIs."""
    return role if ":" in role else f"{C.ROLE_LEARNER.rpartition('#')[0]}#{role}"


class LineItemsHandler(TestAPIHandler):
    def post(self):
        doc = self.body()
        course = self.course(str(doc.pop("context", "")))
        try:
            fields = read_lineitem(doc, course)
        except DocumentError as exc:
            raise ServiceError(400, str(exc)) from None
        item = LineItem(item_id=self.store.new_lineitem_id(), **fields)
        course.lineitems[item.item_id] = item
        self.log.info("test api: course:%s line item %s made", course.id, item.item_id)
        self.set_status(201)
        self.send_json(lineitem_json(self.platform, course.id, item))


class SettingsHandler(_SettingsResource):
    what, error = "settings", ControlError

    def target(self):
        return self.controls


class TokenRequestsHandler(TestAPIHandler):
    def get(self):
        self.send_json({"requests": self.controls.token_requests})


class TokensHandler(TestAPIHandler):
    def delete(self):
        count = self.store.revoke_tokens()
        self.log.info("test api: %d access tokens revoked", count)
        self.no_content()


class ScoreTallyHandler(TestAPIHandler):
    def get(self):
        posts = [
            {
                "context": context_id,
                "lineitem": self.platform.lineitem_url(context_id, item_id),
                "userId": user_id,
                "accepted": tally.accepted,
                "refused": {str(status): n for status, n in tally.refused.items()},
                "history": tally.history,
            }
            for (context_id, item_id, user_id), tally in self.store.tallies.items()
        ]
        self.send_json({"posts": posts})


class ResetHandler(TestAPIHandler):
    def post(self):
        self.store.reset()
        self.faults.clear()
        self.settings["platform_controls"] = ServiceControls()
        self.log.info("test api: reset to the demo data")
        self.no_content()


ROUTES = [
    (r"/_test/faults", FaultsHandler),
    (r"/_test/load", LoadHandler),
    (r"/_test/delete_lineitem", DeleteLineItemHandler),
    (r"/_test/roster", RosterHandler),
    (r"/_test/scores\.json", ScoreTallyHandler),
    (r"/_test/reset", ResetHandler),
    (r"/_test/lineitems", LineItemsHandler),
    (r"/_test/settings", SettingsHandler),
    (r"/_test/token_requests", TokenRequestsHandler),
    (r"/_test/tokens", TokensHandler),
]
