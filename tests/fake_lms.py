"""A small fake LMS for Kore's LTI Advantage client and sync jobs (tests only).

Tornado handlers for a token endpoint (checks the client assertion with the tool's
public keys, its aud/iss/sub/exp and jti replay), AGS line items and scores, and NRPS
memberships, both paged with ``Link: rel="next"``. Faults are injected per request with
:meth:`FakeLMS.fail`. It runs on the test's own event loop (:meth:`FakeLMS.start`) or
in a thread of its own for tests that drive a Kore subprocess (:class:`ThreadedLMS`).
"""

import asyncio
import json
import re
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from tornado import httpserver, web

SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/"
LINEITEM = SCOPE + "lineitem"
LINEITEM_READONLY = SCOPE + "lineitem.readonly"
SCORE = SCOPE + "score"
RESULT_READONLY = SCOPE + "result.readonly"
NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
LINEITEM_TYPE = "application/vnd.ims.lis.v2.lineitem+json"


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    user: str | None = None  # only score posts of this LMS user
    #: "late": carry the request out, then answer after ``delay``; "drop": carry it
    #: out, then close the connection without an answer.
    after: str = ""


@dataclass
class Item:
    id: int
    label: str
    score_maximum: float
    resource_id: str = ""
    tag: str = ""
    resource_link_id: str = ""
    query: str = ""
    scores: dict = field(default_factory=dict)  # user id -> list of score dicts


class FakeLMS:
    def __init__(self, *, jwks, client_id="tool-client", context="ctx1", link="link1", tls=None):
        self.jwks = jwks  # callable -> {"keys": [...]} of the tool
        self.client_id = client_id
        self.context = context
        self.link = link
        self.port = free_port()
        #: An ananke_hub.testlms.tls.ServerTLS: serve https with its certificate.
        self.tls = tls
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        #: Per request (as self.requests): the number of the TCP connection it came on.
        self.request_connections: list[int] = []
        self.connections = 0
        #: Requests being handled now, and the most at once.
        self.in_flight = 0
        self.peak_in_flight = 0
        #: Seconds every request waits before it is handled (requests overlap).
        self.delay = 0.0
        self.expected_aud: str | None = None  # default: the token URL
        self.token_lifetime = 3600
        self.grant: set[str] | None = None  # scopes the token endpoint grants (None: all asked)
        self.page_size = 2
        self.users: set[str] = set()  # LMS user ids known in the context
        self.members: list[dict] = []
        self.items: dict[int, Item] = {}
        self.next_item = 1
        self.tokens: dict[str, tuple[set, float]] = {}
        self.assertions: list[dict] = []
        self.token_forms: list[dict] = []
        self.jtis: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.ghosts: list[dict] = []  # listed line items that no longer exist (stale list)
        self.server = None
        # The activity's own line item, with a query as Moodle's.
        self.launch_item = self.add_item("Activity", 100, query="type_id=1")

    # --- set-up ---------------------------------------------------------------------------

    def add_item(self, label, maximum, *, resource_id="", tag="", link="", query="") -> Item:
        item = Item(self.next_item, label, maximum, resource_id, tag, link, query)
        self.items[item.id] = item
        self.next_item += 1
        return item

    def item_url(self, item: Item) -> str:
        url = f"{self.base}/ags/{self.context}/lineitems/{item.id}/lineitem"
        return url + (f"?{item.query}" if item.query else "")

    @property
    def token_url(self) -> str:
        return self.base + "/token"

    @property
    def lineitems_url(self) -> str:
        return f"{self.base}/ags/{self.context}/lineitems"

    @property
    def lineitem_url(self) -> str:
        return self.item_url(self.launch_item)

    @property
    def memberships_url(self) -> str:
        return f"{self.base}/nrps/{self.context}/memberships"

    def fail(
        self, method, path_regex, status, *, times=1, body=b"", headers=None, delay=0.0, user=None
    ):
        self.faults.append(
            Fault(method, re.compile(path_regex), status, times, body, headers or {}, delay, user)
        )

    def after_processing(self, method, path_regex, what, *, times=1, delay=0.0, user=None):
        """Carry matching requests out, then answer ``what="late"`` (after ``delay``
        seconds) or ``"drop"`` the connection: the tool cannot know it worked."""
        self.faults.append(
            Fault(method, re.compile(path_regex), 0, times, b"", {}, delay, user, after=what)
        )

    def scores_of(self, item: Item, user: str) -> list[dict]:
        return item.scores.get(user, [])

    def created_items(self) -> list[Item]:
        return [i for i in self.items.values() if i.resource_id]

    def score_posts(self) -> int:
        return sum(1 for m, p in self.requests if m == "POST" and p.endswith("/scores"))

    # --- running --------------------------------------------------------------------------

    def app(self) -> web.Application:
        kw = {"lms": self}
        return web.Application(
            [
                (r"/token", TokenHandler, kw),
                (r"/ags/([^/]+)/lineitems", LineItemsHandler, kw),
                (r"/ags/([^/]+)/lineitems/(\d+)/lineitem", LineItemHandler, kw),
                (r"/ags/([^/]+)/lineitems/(\d+)/lineitem/scores", ScoresHandler, kw),
                (r"/ags/([^/]+)/lineitems/(\d+)/lineitem/results", ResultsHandler, kw),
                (r"/nrps/([^/]+)/memberships", MembershipsHandler, kw),
            ]
        )

    def start(self):
        ssl_options = None
        if self.tls is not None:
            ssl_options = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_options.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        self.server = httpserver.HTTPServer(self.app(), ssl_options=ssl_options)
        self.server.listen(self.port, "127.0.0.1")
        return self

    def stop(self):
        if self.server:
            self.server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedLMS:
    """A FakeLMS on an event loop of its own thread (for tests driving a subprocess)."""

    def __init__(self, **kwargs):
        self.lms = FakeLMS(**kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeLMS:
        self.thread.start()

        async def start():
            self.lms.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self.lms

    def __exit__(self, *exc):
        async def stop():
            self.lms.stop()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# --- handlers ----------------------------------------------------------------------------------


class Base(web.RequestHandler):
    def initialize(self, lms: FakeLMS):
        self.lms = lms

    def check_xsrf_cookie(self):
        pass

    _counted = False

    def _left(self):
        if self._counted:
            self._counted = False
            self.lms.in_flight -= 1

    def on_finish(self):
        self._left()

    def on_connection_close(self):
        self._left()

    async def prepare(self):
        lms = self.lms
        lms.requests.append((self.request.method, self.request.path))
        # tornado keeps one stream per TCP connection across its kept-alive requests.
        stream = self.request.connection.stream
        number = getattr(stream, "_fake_lms_connection", None)
        if number is None:
            lms.connections += 1
            number = stream._fake_lms_connection = lms.connections
        lms.request_connections.append(number)
        self._counted = True
        lms.in_flight += 1
        lms.peak_in_flight = max(lms.peak_in_flight, lms.in_flight)
        if lms.delay:
            await asyncio.sleep(lms.delay)
        for fault in lms.faults:
            if fault.times <= 0 or fault.method != self.request.method:
                continue
            if not fault.pattern.search(self.request.path):
                continue
            if fault.user is not None:
                try:
                    if json.loads(self.request.body).get("userId") != fault.user:
                        continue
                except ValueError:
                    continue
            fault.times -= 1
            if fault.after:
                self._after = fault
                return
            if fault.delay:
                await asyncio.sleep(fault.delay)
            self.set_status(fault.status)
            for k, v in fault.headers.items():
                self.set_header(k, v)
            self.finish(fault.body)
            return

    _after: Fault | None = None
    _deferred = False

    def finish(self, chunk=None):
        fault, self._after = self._after, None
        if self._deferred:  # tornado's own finish after the handler: the answer is pending
            return asyncio.get_running_loop().create_future()
        if fault is None:
            return super().finish(chunk)
        self._deferred = True
        if fault.after == "drop":
            self.request.connection.close()
            return asyncio.get_running_loop().create_future()

        async def later():
            await asyncio.sleep(fault.delay)
            try:
                web.RequestHandler.finish(self, chunk)
            except Exception:  # noqa: S110 (the tool gave up and closed the connection)
                pass

        return asyncio.ensure_future(later())

    def json_reply(self, data, status=200, content_type="application/json"):
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        self.finish(json.dumps(data))

    def refuse(self, status, message):
        self.json_reply({"error": "refused", "error_description": message}, status)

    def authorized(self, *needed) -> bool:
        """Bearer token valid and carrying one of ``needed``; else answers 401/403."""
        auth = self.request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self.refuse(401, "no bearer token")
            return False
        known = self.lms.tokens.get(auth[7:])
        if known is None or known[1] < time.time():
            self.refuse(401, "unknown or expired token")
            return False
        if not known[0] & set(needed):
            self.refuse(403, "scope not granted")
            return False
        return True

    def page(self, entries: list, key=None):
        """Slice entries by ?page=; set the Link header to the next page."""
        page = int(self.get_query_argument("page", "0"))
        size = self.lms.page_size
        chunk = entries[page * size : (page + 1) * size]
        if (page + 1) * size < len(entries):
            args = {k: v[-1].decode() for k, v in self.request.query_arguments.items()}
            args["page"] = str(page + 1)
            url = self.lms.base + self.request.path + "?" + urlencode(args)
            self.set_header("Link", f'<{url}>; rel="next"')
        return chunk


class TokenHandler(Base):
    def post(self):
        lms = self.lms
        ctype = self.request.headers.get("Content-Type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            return self.refuse(400, "form body needed")
        form = {k: v[-1] for k, v in parse_qs(self.request.body.decode()).items()}
        lms.token_forms.append(form)
        if form.get("grant_type") != "client_credentials":
            return self.refuse(400, "unsupported grant")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self.refuse(400, "bad assertion type")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            keys = {k["kid"]: k for k in lms.jwks()["keys"]}
            key = jwt.PyJWK(keys[header["kid"]]).key
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=lms.expected_aud or lms.token_url,
                issuer=lms.client_id,
                options={"require": ["iss", "sub", "aud", "iat", "exp", "jti"]},
            )
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            return self.json_reply(
                {"error": "invalid_client", "error_description": f"assertion refused: {exc}"}, 401
            )
        if claims["sub"] != lms.client_id:
            return self.refuse(401, "sub is not the client id")
        if claims["jti"] in lms.jtis:
            return self.json_reply(
                {"error": "invalid_grant", "error_description": "jti replayed"}, 400
            )
        lms.jtis.add(claims["jti"])
        lms.assertions.append({"header": header, "claims": claims})
        asked = set(form.get("scope", "").split())
        granted = asked if lms.grant is None else asked & lms.grant
        if not granted:
            return self.json_reply({"error": "invalid_scope"}, 400)
        token = secrets.token_urlsafe(16)
        lms.tokens[token] = (granted, time.time() + lms.token_lifetime)
        self.json_reply(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": lms.token_lifetime,
                "scope": " ".join(sorted(granted)),
            }
        )


def item_json(lms: FakeLMS, item: Item) -> dict:
    data = {"id": lms.item_url(item), "label": item.label, "scoreMaximum": item.score_maximum}
    if item.resource_id:
        data["resourceId"] = item.resource_id
    if item.tag:
        data["tag"] = item.tag
    if item.resource_link_id:
        data["resourceLinkId"] = item.resource_link_id
    return data


class LineItemsHandler(Base):
    def get(self, context):
        if not self.authorized(LINEITEM, LINEITEM_READONLY):
            return
        items = list(self.lms.items.values())
        for arg, attr in (
            ("resource_link_id", "resource_link_id"),
            ("resource_id", "resource_id"),
            ("tag", "tag"),
        ):
            value = self.get_query_argument(arg, None)
            if value is not None:
                items = [i for i in items if getattr(i, attr) == value]
        chunk = self.page([item_json(self.lms, i) for i in items] + self.lms.ghosts)
        self.json_reply(
            chunk,
            content_type="application/vnd.ims.lis.v2.lineitemcontainer+json",
        )

    def post(self, context):
        if not self.authorized(LINEITEM):
            return
        if self.request.headers.get("Content-Type") != LINEITEM_TYPE:
            return self.refuse(415, "line item media type needed")
        data = json.loads(self.request.body)
        if not isinstance(data.get("scoreMaximum"), int | float) or data["scoreMaximum"] <= 0:
            return self.refuse(400, "scoreMaximum must be above 0")
        item = self.lms.add_item(
            data.get("label", ""),
            data["scoreMaximum"],
            resource_id=data.get("resourceId", ""),
            tag=data.get("tag", ""),
            link=data.get("resourceLinkId", ""),
        )
        self.json_reply(item_json(self.lms, item), 201, LINEITEM_TYPE)


class LineItemHandler(Base):
    def item(self, item_id) -> Item | None:
        item = self.lms.items.get(int(item_id))
        if item is None:
            self.refuse(404, "no such line item")
        return item

    def get(self, context, item_id):
        if self.authorized(LINEITEM, LINEITEM_READONLY) and (item := self.item(item_id)):
            self.json_reply(item_json(self.lms, item), content_type=LINEITEM_TYPE)

    def put(self, context, item_id):
        if self.authorized(LINEITEM) and (item := self.item(item_id)):
            data = json.loads(self.request.body)
            item.label = data.get("label", item.label)
            item.score_maximum = data.get("scoreMaximum", item.score_maximum)
            self.json_reply(item_json(self.lms, item), content_type=LINEITEM_TYPE)


class ScoresHandler(Base):
    def post(self, context, item_id):
        lms = self.lms
        if not self.authorized(SCORE):
            return
        if self.request.headers.get("Content-Type") != SCORE_TYPE:
            return self.refuse(415, "score media type needed")
        item = lms.items.get(int(item_id))
        if item is None:
            return self.refuse(404, "no such line item")
        expected_query = item.query
        if urlsplit(self.request.uri).query != expected_query:
            return self.refuse(404, "wrong query for this line item")
        score = json.loads(self.request.body)
        user = score.get("userId")
        if user not in lms.users:
            return self.json_reply(
                {"error": "unknown user", "message": f"user {user} not in course"}, 422
            )
        for key in ("activityProgress", "gradingProgress", "timestamp"):
            if key not in score:
                return self.refuse(400, f"{key} missing")
        if "scoreGiven" in score and "scoreMaximum" not in score:
            return self.refuse(400, "scoreMaximum missing")
        if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", score["timestamp"]):
            return self.refuse(400, "timestamp format")
        item.scores.setdefault(user, []).append(score)
        self.set_status(204)
        self.finish()


class ResultsHandler(Base):
    """AGS 2.0 section 3.3: the latest score per user, on the line item's scale."""

    def get(self, context, item_id):
        if not self.authorized(RESULT_READONLY):
            return
        item = self.lms.items.get(int(item_id))
        if item is None:
            return self.refuse(404, "no such line item")
        wanted = self.get_query_argument("user_id", None)
        results = []
        for user, scores in item.scores.items():
            if wanted is not None and user != wanted:
                continue
            latest = scores[-1]
            if latest.get("scoreGiven") is None:
                continue
            scale = item.score_maximum / (latest.get("scoreMaximum") or item.score_maximum)
            results.append(
                {
                    "userId": user,
                    "resultScore": latest["scoreGiven"] * scale,
                    "resultMaximum": item.score_maximum,
                }
            )
        self.json_reply(results, content_type="application/vnd.ims.lis.v2.resultcontainer+json")


class MembershipsHandler(Base):
    def get(self, context):
        if not self.authorized(NRPS):
            return
        chunk = self.page(self.lms.members)
        self.json_reply(
            {"id": self.request.full_url(), "context": {"id": context}, "members": chunk},
            content_type="application/vnd.ims.lti-nrps.v2.membershipcontainer+json",
        )
