"""The built-in platform's LTI Advantage side: token endpoint, AGS 2.0, NRPS 2.0, gradebook
and test API, against a real `python -m ananke_hub.testlms --test-api`.

The tool's side is played by hand: its key lives in a KeyStore here and its keyset is
served by a small tornado app in this process, so the platform verifies our client
assertions as it would Kore's.
"""

import asyncio
import html
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest
from lti_browser import LTIBrowser, auto_submit_form
from test_platform import CLIENT_ID, auth_params, login, running_platform
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ananke_hub.keys import KeyStore
from ananke_hub.testlms import constants as C
from ananke_hub.testlms import demo_data
from ananke_hub.testlms.settings import PlatformSettings
from ananke_hub.testlms.tokens import launch_claims, sign_id_token
from kore.lti.transport import LMSTransport, _parse_links

ALL_SCOPES = (*C.AGS_SCOPES, C.NRPS_SCOPE)
LINEITEM = C.AGS_MEDIA_LINEITEM
SCORE = C.AGS_MEDIA_SCORE
LEARNERS = ["3", "4", *(str(sub) for sub in range(100, 125))]
#: When the platform fetched the tool's keyset (the Moodle profile: every token request).
KEYSET_FETCHES: list[float] = []


def stamp(second: int, ms: int = 0) -> str:
    """An ISO 8601 timestamp with milliseconds and offset, as AGS wants."""
    return f"2030-01-01T10:00:{second:02d}.{ms:03d}+00:00"


def score(user_id="3", given=7.0, maximum=10.0, when=stamp(0), **changes) -> dict:
    doc = {
        "userId": user_id,
        "scoreGiven": given,
        "scoreMaximum": maximum,
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "timestamp": when,
        **changes,
    }
    return {k: v for k, v in doc.items() if v is not None}


def links(resp: httpx.Response) -> dict[str, str]:
    """`Link: <u>; rel="next", ...` -> {"next": u, ...}, read as Kore reads it: the
    Moodle profile writes AGS links as Moodle does (rel=“next”, `&amp;` in the URL)."""
    found = {}
    for target, params in _parse_links(resp.headers.get("link", "")):
        for rel in params.get("rel", "").split():
            found[rel] = target.replace("&amp;", "&")
    return found


class Tool:
    """What Kore does, by hand: client assertions, token requests, service calls."""

    def __init__(self, platform_url: str, keys: KeyStore, http: httpx.AsyncClient):
        self.platform = platform_url
        self.keys = keys
        self.http = http
        self.token_url = platform_url + "/token"

    def url(self, path: str) -> str:
        return self.platform + path

    def assertion(self, key=None, headers=None, **claims) -> str:
        now = int(time.time())
        doc = {
            "iss": CLIENT_ID,
            "sub": CLIENT_ID,
            "aud": self.token_url,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        doc = {k: v for k, v in doc.items() if v is not None}
        return sign_id_token(doc, key or self.keys.signing_key(), headers=headers)

    async def request_token(self, *scopes: str, assertion: str | None = None, **form):
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": C.CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(),
            "scope": " ".join(scopes or ALL_SCOPES),
            **form,
        }
        return await self.http.post(self.token_url, data={k: v for k, v in data.items() if v})

    async def token(self, *scopes: str) -> str:
        resp = await self.request_token(*scopes)
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    async def call(self, method, url, token, *, json=None, media=None, headers=None):
        headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        if json is not None:
            headers["Content-Type"] = media or "application/json"
        if not url.startswith("http"):
            url = self.url(url)
        return await self.http.request(method, url, json=json, headers=headers)

    async def create_lineitem(self, token, **fields) -> dict:
        doc = {"label": "Assignment", "scoreMaximum": 10, **fields}
        resp = await self.call("POST", "/ags/ds101/lineitems", token, json=doc, media=LINEITEM)
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def post_score(self, token, lineitem: str, doc: dict, media=SCORE) -> httpx.Response:
        path, _, query = lineitem.partition("?")
        return await self.call("POST", f"{path}/scores?{query}", token, json=doc, media=media)

    async def all_pages(self, url: str, token: str, key: str | None = None) -> tuple[list, int]:
        """Every entry, following rel="next"; and how many pages it took."""
        entries, pages = [], 0
        while url:
            resp = await self.call("GET", url, token)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            entries += body[key] if key else body
            pages += 1
            url = links(resp).get("next")
        return entries, pages


@pytest.fixture(scope="module")
async def tool_keyset(tmp_path_factory):
    """The tool's keys, and its keyset URL served from this process."""
    keys = KeyStore(tmp_path_factory.mktemp("tool") / "keys")
    keys.ensure()

    class KeysetHandler(web.RequestHandler):
        def get(self):
            KEYSET_FETCHES.append(time.monotonic())
            self.write(keys.jwks())

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/jwks", KeysetHandler)]))
    server.add_sockets(sockets)
    yield keys, f"http://127.0.0.1:{sockets[0].getsockname()[1]}/jwks"
    server.stop()


@pytest.fixture(scope="module")
def platform_url(tool_keyset, tmp_path_factory):
    _, jwks_url = tool_keyset
    state = tmp_path_factory.mktemp("lms") / "state"
    with running_platform(state, flags=["--test-api"], tool_jwks_url=jwks_url) as p:
        yield p.url


@pytest.fixture(scope="module")
async def http():
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
async def tool(platform_url, tool_keyset, http):
    assert (await http.post(platform_url + "/_test/reset")).status_code == 204
    return Tool(platform_url, tool_keyset[0], http)


@pytest.fixture
async def token(tool):
    return await tool.token()


# --- the token endpoint


async def test_token_flow_grants_a_bearer_token(tool):
    resp = await tool.request_token(*ALL_SCOPES)
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"].split() == list(ALL_SCOPES)
    assert len(body["access_token"]) >= 32
    page = await tool.call("GET", "/nrps/ds101/memberships", body["access_token"])
    assert page.status_code == 200


async def test_token_grants_only_allowed_scopes_like_moodle(tool):
    resp = await tool.request_token(
        C.AGS_SCOPE_SCORE, C.AGS_SCOPE_LINEITEM_READONLY, "https://example.edu/scope/other"
    )
    assert resp.status_code == 200
    assert resp.json()["scope"] == C.AGS_SCOPE_SCORE  # the rest is dropped, and said so


async def test_token_accepts_an_audience_list_with_the_token_url(tool):
    assertion = tool.assertion(aud=["https://someone.else", tool.token_url])
    assert (await tool.request_token(assertion=assertion)).status_code == 200


async def test_token_refuses_a_reused_jti(tool):
    assertion = tool.assertion()
    assert (await tool.request_token(assertion=assertion)).status_code == 200
    again = await tool.request_token(assertion=assertion)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"
    assert "used before" in again.json()["error_description"]


@pytest.mark.parametrize(
    "claims, message",
    [
        # Functions of the time the test runs (not of collection, long before).
        (lambda now: {"aud": "http://127.0.0.1:1/token"}, "aud must be the token URL"),
        (lambda now: {"aud": None}, "lacks the aud claim"),
        (lambda now: {"exp": now - 60, "iat": now - 360}, "expired"),
        (lambda now: {"iat": now + 600}, "issued in the future"),
        (lambda now: {"sub": "someone-else"}, "Unknown client"),
        (lambda now: {"iss": "someone-else"}, "iss must be the client id"),
        (lambda now: {"jti": None}, "lacks the jti claim"),
    ],
)
async def test_token_refuses_bad_assertions(tool, claims, message):
    resp = await tool.request_token(assertion=tool.assertion(**claims(int(time.time()))))
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert message in resp.json()["error_description"]


async def test_token_audience_is_the_token_url_not_the_issuer(tool):
    resp = await tool.request_token(assertion=tool.assertion(aud=tool.platform))
    assert resp.status_code == 401 and "aud must be the token URL" in resp.text


async def test_token_refuses_a_key_the_tool_does_not_publish(tool, tmp_path):
    stranger = KeyStore(tmp_path / "stranger").ensure()
    # Signed with another key under the tool's kid: the signature does not verify.
    forged = tool.assertion(key=stranger, headers={"kid": tool.keys.signing_key().kid})
    resp = await tool.request_token(assertion=forged)
    assert resp.status_code == 401 and "signature does not verify" in resp.text
    # Signed with another key under its own kid: the keyset does not have it.
    resp = await tool.request_token(assertion=tool.assertion(key=stranger))
    assert resp.status_code == 401 and f"No key with kid {stranger.kid!r}" in resp.text
    resp = await tool.request_token(assertion=tool.assertion(headers={"kid": None}))
    assert resp.status_code == 401 and "no kid header" in resp.text


async def test_token_follows_a_key_rotation_of_the_tool(tool, tool_keyset):
    assert (await tool.request_token()).status_code == 200  # the keyset is cached now
    new = tool.keys.rotate()
    assertion = tool.assertion(key=new)
    resp = await tool.request_token(assertion=assertion)
    assert resp.status_code == 200, resp.text  # unknown kid: fetched the keyset again


@pytest.mark.parametrize(
    "change, status, error",
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_assertion_type": "urn:other"}, 400, "invalid_request"),
        ({"client_assertion": "not-a-jwt"}, 400, "invalid_request"),
        ({"scope": "https://example.edu/scope/other"}, 400, "invalid_scope"),
    ],
)
async def test_token_refuses_bad_requests(tool, change, status, error):
    resp = await tool.request_token(**change)
    assert resp.status_code == status
    assert resp.json()["error"] == error and resp.json()["error_description"]


async def test_token_request_must_be_a_form(tool):
    body = {
        "grant_type": "client_credentials",
        "client_assertion_type": C.CLIENT_ASSERTION_TYPE,
        "client_assertion": tool.assertion(),
        "scope": C.AGS_SCOPE_SCORE,
    }
    resp = await tool.http.post(tool.token_url, json=body)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"
    assert "application/x-www-form-urlencoded" in resp.json()["error_description"]
    missing = await tool.http.post(tool.token_url, data={"grant_type": "client_credentials"})
    assert missing.status_code == 400 and "Missing parameters" in missing.text


# --- bearer tokens and scopes


async def test_services_need_a_bearer_token(tool):
    resp = await tool.http.get(tool.url("/ags/ds101/lineitems"))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in resp.json()["message"]
    resp = await tool.call("GET", "/nrps/ds101/memberships", "made-up")
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["www-authenticate"]


async def test_a_score_only_token_cannot_manage_line_items(tool):
    token = await tool.token(C.AGS_SCOPE_SCORE)
    doc = {"label": "A1", "scoreMaximum": 10}
    resp = await tool.call("POST", "/ags/ds101/lineitems", token, json=doc, media=LINEITEM)
    assert resp.status_code == 403
    assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
    assert C.AGS_SCOPE_LINEITEM in resp.json()["message"]
    for path in ("/ags/ds101/lineitems", "/nrps/ds101/memberships"):
        assert (await tool.call("GET", path, token)).status_code == 403
    # ... but it can post a score to the activity's own line item.
    launch_item = tool.url("/ags/ds101/lineitems/homework/lineitem?type_id=1")
    assert (await tool.post_score(token, launch_item, score())).status_code == 204
    results = launch_item.replace("/lineitem?", "/lineitem/results?")
    assert (await tool.call("GET", results, token)).status_code == 403


# --- AGS line items


async def test_each_activity_has_its_own_line_item(tool, token):
    resp = await tool.call("GET", "/ags/ds101/lineitems", token)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == C.AGS_MEDIA_LINEITEMS
    assert resp.json() == [
        {
            "id": tool.url(f"/ags/ds101/lineitems/{link}/lineitem?type_id=1"),
            "label": title,
            "scoreMaximum": 100.0,
            "resourceId": "",
            "tag": "",
            "resourceLinkId": link,
        }
        for link, title in (("homework", "Homework"), ("exam", "Exam"))
    ]
    assert set(links(resp)) == {"first", "last"}  # one page: no next


async def test_create_get_put_delete_a_line_item(tool, token):
    created = await tool.create_lineitem(
        token, label="Week 1", scoreMaximum=12.5, resourceId="nbgrader:ps1", tag="ananke"
    )
    assert created["id"].startswith(tool.url("/ags/ds101/lineitems/"))
    assert created["id"].endswith("/lineitem?type_id=1")
    assert (created["label"], created["scoreMaximum"]) == ("Week 1", 12.5)
    assert (created["resourceId"], created["tag"]) == ("nbgrader:ps1", "ananke")
    resp = await tool.call("GET", created["id"], token)
    assert resp.status_code == 200 and resp.json() == created
    assert resp.headers["content-type"] == LINEITEM

    changed = {**created, "label": "Week 1 (revised)", "scoreMaximum": 20}
    resp = await tool.call("PUT", created["id"], token, json=changed, media=LINEITEM)
    assert resp.status_code == 200 and resp.json()["label"] == "Week 1 (revised)"
    assert (await tool.call("GET", created["id"], token)).json()["scoreMaximum"] == 20

    assert (await tool.call("DELETE", created["id"], token)).status_code == 204
    assert (await tool.call("GET", created["id"], token)).status_code == 404
    gone = await tool.post_score(token, created["id"], score())
    assert gone.status_code == 404 and "deleted" in gone.json()["message"]


async def test_the_activity_line_item_cannot_be_deleted(tool, token):
    url = tool.url("/ags/ds101/lineitems/exam/lineitem?type_id=1")
    resp = await tool.call("DELETE", url, token)
    assert resp.status_code == 403 and "activity's own line item" in resp.json()["message"]
    doc = {"label": "Exam", "scoreMaximum": 50, "resourceLinkId": "homework"}
    resp = await tool.call("PUT", url, token, json=doc, media=LINEITEM)
    assert resp.status_code == 400


async def test_a_new_maximum_rescales_stored_scores(tool, token):
    url = tool.url("/ags/ds101/lineitems/exam/lineitem?type_id=1")
    assert (await tool.post_score(token, url, score(given=40, maximum=100))).status_code == 204
    doc = {"label": "Final exam", "scoreMaximum": 50}
    resp = await tool.call("PUT", url, token, json=doc, media=LINEITEM)
    assert resp.status_code == 200
    assert resp.json()["resourceLinkId"] == "exam"  # the activity keeps its line item
    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    (stored,) = book["scores"]
    assert (stored["resultScore"], stored["resultMaximum"]) == (20, 50)  # still 40 %


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"scoreMaximum": 10}, "label is missing"),
        ({"label": " ", "scoreMaximum": 10}, "label must not be empty"),
        ({"label": "A"}, "scoreMaximum must be a number greater than 0"),
        ({"label": "A", "scoreMaximum": 0}, "scoreMaximum must be a number greater than 0"),
        ({"label": "A", "scoreMaximum": "10"}, "scoreMaximum must be a number"),
        ({"label": "A", "scoreMaximum": 10, "resourceLinkId": "nope"}, "is no activity"),
        ({"label": "A", "scoreMaximum": 10, "tag": 5}, "tag must be a string"),
        ([{"label": "A", "scoreMaximum": 10}], "must be a JSON object"),
    ],
)
async def test_line_item_creation_refuses_bad_documents(tool, token, doc, message):
    resp = await tool.call("POST", "/ags/ds101/lineitems", token, json=doc, media=LINEITEM)
    assert resp.status_code == 400
    assert message in resp.json()["message"]


async def test_line_item_creation_needs_the_media_type(tool, token):
    doc = {"label": "A", "scoreMaximum": 10}
    resp = await tool.call("POST", "/ags/ds101/lineitems", token, json=doc)
    assert resp.status_code == 415 and LINEITEM in resp.json()["message"]


async def test_kore_follows_moodles_ags_link_headers(tool, token):
    """Moodle 5.1 (gradebookservices' lineitems.php and results.php) writes its AGS page
    links with typographic quotes, as UTF-8, and HTML-escaped URLs. A real Moodle showed
    both: Kore's transport refused the header ("Invalid header value") and the grade
    sync failed before sending anything."""
    for n in range(7):
        await tool.create_lineitem(token, label=f"M{n}", resourceId=f"m{n}")
    raw = await tool.call("GET", "/ags/ds101/lineitems?limit=3", token)
    header = raw.headers.raw[[k.lower() for k, _ in raw.headers.raw].index(b"link")][1]
    assert "rel=\u201cnext\u201d".encode() in header and b"&amp;from=3" in header
    transport = LMSTransport()
    items, url = [], tool.url("/ags/ds101/lineitems?limit=3")
    try:
        while url:
            resp = await transport.request(
                "GET", url, action="list line items", headers={"Authorization": f"Bearer {token}"}
            )
            items += resp.json("line items")
            url = resp.next_link()
    finally:
        await transport.aclose()
    everything = (await tool.call("GET", "/ags/ds101/lineitems?limit=100", token)).json()
    assert len(everything) >= 8  # the seven, and the activities' own
    assert sorted(item["id"] for item in items) == sorted(item["id"] for item in everything)


async def test_line_items_are_paged_and_filtered(tool, token):
    for n in range(12):
        await tool.create_lineitem(
            token, label=f"PS{n}", resourceId=f"ps{n}", tag="even" if n % 2 == 0 else "odd"
        )
    first = await tool.call("GET", "/ags/ds101/lineitems", token)
    assert len(first.json()) == 10  # the default page is small
    assert "next" in links(first) and "prev" not in links(first)
    items, pages = await tool.all_pages(tool.url("/ags/ds101/lineitems?limit=5"), token)
    assert pages == 3 and len(items) == 14
    assert len({item["id"] for item in items}) == 14

    by_resource = await tool.call("GET", "/ags/ds101/lineitems?resource_id=ps3", token)
    assert [i["label"] for i in by_resource.json()] == ["PS3"]
    tagged, _ = await tool.all_pages(tool.url("/ags/ds101/lineitems?tag=even&limit=2"), token)
    assert [i["label"] for i in tagged] == ["PS0", "PS2", "PS4", "PS6", "PS8", "PS10"]
    by_link = await tool.call("GET", "/ags/ds101/lineitems?resource_link_id=exam", token)
    assert [i["label"] for i in by_link.json()] == ["Exam"]
    bad = await tool.call("GET", "/ags/ds101/lineitems?limit=0", token)
    assert bad.status_code == 400


async def test_line_item_urls_keep_their_query(tool, token):
    resp = await tool.call("GET", "/ags/ds101/lineitems/homework/lineitem", token)
    assert resp.status_code == 400 and "type_id=1" in resp.json()["message"]
    # A tool that appends /scores to the whole URL posts to the line item itself.
    wrong = tool.url("/ags/ds101/lineitems/homework/lineitem?type_id=1/scores")
    resp = await tool.call("POST", wrong, token, json=score(), media=SCORE)
    assert resp.status_code == 405 and "/scores added to the path" in resp.json()["message"]
    assert (await tool.call("GET", "/ags/nope/lineitems", token)).status_code == 404


async def test_accept_must_allow_the_media_type(tool, token):
    resp = await tool.call(
        "GET", "/ags/ds101/lineitems", token, headers={"Accept": "application/json"}
    )
    assert resp.status_code == 406
    ok = await tool.call(
        "GET", "/ags/ds101/lineitems", token, headers={"Accept": C.AGS_MEDIA_LINEITEMS}
    )
    assert ok.status_code == 200


# --- AGS scores and results


async def test_scores_need_the_score_media_type(tool, token):
    item = (await tool.create_lineitem(token))["id"]
    resp = await tool.post_score(token, item, score(), media="application/json")
    assert resp.status_code == 415 and SCORE in resp.json()["message"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"user_id": "999"}, "userId '999' is not gradable"),
        ({"user_id": "2"}, "userId '2' is not gradable"),  # an instructor
        ({"userId": 3}, "userId must be the learner's LTI user id"),
        ({"when": None}, "timestamp is missing"),
        ({"when": "2030-01-01T10:00:00"}, "has no offset"),
        ({"when": "yesterday"}, "not an ISO 8601"),
        ({"given": -1}, "scoreGiven must be 0 or more"),
        ({"maximum": None}, "scoreMaximum is missing"),
        ({"maximum": 0}, "scoreMaximum must be greater than 0"),
        ({"activityProgress": "Done"}, "activityProgress must be one of"),
        ({"gradingProgress": None}, "gradingProgress must be one of"),
    ],
)
async def test_scores_refuse_bad_documents(tool, token, changes, message):
    item = (await tool.create_lineitem(token))["id"]
    resp = await tool.post_score(token, item, score(**changes))
    assert resp.status_code == 400
    assert message in resp.json()["message"]


async def test_an_older_score_conflicts_like_moodle(tool, token):
    item = (await tool.create_lineitem(token))["id"]
    assert (await tool.post_score(token, item, score(given=5, when=stamp(10)))).status_code == 204
    older = await tool.post_score(token, item, score(given=6, when=stamp(9)))
    assert older.status_code == 409 and "later timestamp" in older.json()["message"]
    # Moodle compares whole seconds: 10.500 is not after 10.000.
    same_second = await tool.post_score(token, item, score(given=6, when=stamp(10, 500)))
    assert same_second.status_code == 409
    newer = await tool.post_score(token, item, score(given=8, when=stamp(11)))
    assert newer.status_code == 204

    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    (stored,) = [s for s in book["scores"] if s["lineitem"] == item]
    assert (stored["userId"], stored["scoreGiven"], stored["timestamp"]) == (
        "3",
        8,
        "2030-01-01T10:00:11+00:00",
    )
    tally = (await tool.http.get(tool.url("/_test/scores.json"))).json()["posts"]
    assert [{k: v for k, v in t.items() if k != "history"} for t in tally] == [
        {"context": "ds101", "lineitem": item, "userId": "3", "accepted": 2, "refused": {"409": 2}}
    ]
    (posts,) = tally
    assert [h["status"] for h in posts["history"]] == [204, 409, 409, 204]


async def test_scores_above_the_maximum_are_kept_and_rescaled(tool, token):
    item = await tool.create_lineitem(token, label="Bonus round", scoreMaximum=100)
    resp = await tool.post_score(token, item["id"], score(user_id="4", given=15, maximum=10))
    assert resp.status_code == 204
    # Moodle rescales to the column's maximum: 15 of 10 on a column of 100 is 150.
    page = await tool.http.get(tool.url("/gradebook"))
    text = html.unescape(page.text)
    assert "Bonus round <small>(max 100)</small>" in text
    assert "<strong>150</strong> / 100" in text and "sent 15 / 10" in text
    assert '<time datetime="2030-01-01T10:00:00+00:00">' in text
    assert "Émilie du Châtelet" in text
    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    (stored,) = book["scores"]
    assert (stored["scoreGiven"], stored["scoreMaximum"]) == (15, 10)
    assert (stored["resultScore"], stored["resultMaximum"]) == (150, 100)

    results = item["id"].replace("/lineitem?", "/lineitem/results?")
    resp = await tool.call("GET", results, token)
    assert resp.status_code == 200 and resp.headers["content-type"] == C.AGS_MEDIA_RESULTS
    (result,) = resp.json()
    assert result["userId"] == "4" and result["resultScore"] == 150
    assert result["resultMaximum"] == 100 and result["scoreOf"] == item["id"]


async def test_only_fully_graded_scores_count(tool, token):
    item = (await tool.create_lineitem(token))["id"]
    pending = score(given=9, gradingProgress="Pending", activityProgress="Submitted")
    assert (await tool.post_score(token, item, pending)).status_code == 204
    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    assert book["scores"][0]["scoreGiven"] is None
    page = html.unescape((await tool.http.get(tool.url("/gradebook"))).text)
    assert "no grade <small>(Submitted, Pending)</small>" in page


async def test_inactive_learners_can_still_be_graded(tool, token):
    item = (await tool.create_lineitem(token))["id"]
    assert (await tool.post_score(token, item, score(user_id="107"))).status_code == 204


async def test_the_gradebook_lists_learners_and_columns(tool, token):
    await tool.create_lineitem(token, label="Project")
    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    assert (book["id"], book["title"]) == ("ds101", "Data Science 101")
    assert [i["label"] for i in book["lineitems"]] == ["Homework", "Exam", "Project"]
    assert [m["user_id"] for m in book["learners"]] == LEARNERS
    assert book["scores"] == []
    page = await tool.http.get(tool.url("/gradebook"))
    assert page.status_code == 200 and '<html lang="en">' in page.text
    assert '<th scope="col">Project' in page.text and "<caption>" in page.text
    assert "(id 107, Inactive)" in page.text


# --- NRPS


async def test_memberships_are_paged_with_statuses_and_short_roles(tool, token):
    first = await tool.call("GET", "/nrps/ds101/memberships", token)
    assert first.status_code == 200
    assert first.headers["content-type"] == C.NRPS_MEDIA_MEMBERSHIPS
    body = first.json()
    assert body["id"] == tool.url("/nrps/ds101/memberships")
    assert body["context"] == {"id": "ds101", "label": "DS101", "title": "Data Science 101"}
    assert len(body["members"]) == 10 and "next" in links(first)

    members, pages = await tool.all_pages(tool.url("/nrps/ds101/memberships"), token, "members")
    assert pages == 3 and len(members) == 29
    by_id = {m["user_id"]: m for m in members}
    assert by_id["2"]["roles"] == ["Instructor"]
    # a sub-role has no short name (LTI 1.3 appendix A.2.2): it stays a URI
    assert by_id["5"]["roles"] == ["Instructor", C.ROLE_TEACHING_ASSISTANT]
    assert by_id["3"] == {
        "status": "Active",
        "name": "Alan Turing",
        "given_name": "Alan",
        "family_name": "Turing",
        "email": "alan.turing@example.edu",
        "user_id": "3",
        "roles": ["Learner"],
    }
    assert by_id["107"]["status"] == "Inactive"
    assert [m["user_id"] for m in members if m["status"] != "Active"] == ["107"]
    assert sorted(by_id) == sorted(["2", "5", *LEARNERS])

    learners, _ = await tool.all_pages(
        tool.url("/nrps/ds101/memberships?role=Learner&limit=100"), token, "members"
    )
    assert [m["user_id"] for m in learners] == LEARNERS
    full_uri = await tool.http.get(
        tool.url("/nrps/ds101/memberships"),
        params={"role": C.ROLE_INSTRUCTOR},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert [m["user_id"] for m in full_uri.json()["members"]] == ["2", "5"]


async def test_roster_changes_through_the_test_api(tool, token):
    api = tool.url("/_test/roster")
    dropped = await tool.http.post(
        api, json={"context": "ds101", "user_id": "3", "status": "Inactive"}
    )
    assert dropped.status_code == 200 and dropped.json()["status"] == "Inactive"
    added = await tool.http.post(
        api, json={"context": "ds101", "user_id": "200", "status": "Active"}
    )
    assert added.json()["roles"] == ["Learner"] and added.json()["name"]
    gone = await tool.http.post(
        api, json={"context": "ds101", "user_id": "100", "status": "Deleted"}
    )
    assert gone.status_code == 204
    members, _ = await tool.all_pages(
        tool.url("/nrps/ds101/memberships?limit=100"), token, "members"
    )
    by_id = {m["user_id"]: m for m in members}
    assert by_id["3"]["status"] == "Inactive" and "200" in by_id and "100" not in by_id
    item = (await tool.create_lineitem(token))["id"]
    refused = await tool.post_score(token, item, score(user_id="100"))
    assert refused.status_code == 400  # unenrolled: no longer gradable


# --- fault injection


async def add_fault(tool: Tool, **rule) -> dict:
    resp = await tool.http.post(tool.url("/_test/faults"), json=rule)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def test_faults_fail_a_number_of_requests(tool, token):
    rule = await add_fault(tool, status=500, count=2)
    statuses = [
        (await tool.call("GET", "/ags/ds101/lineitems", token)).status_code for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert (await tool.call("GET", "/nrps/ds101/memberships", token)).status_code == 200
    (state,) = (await tool.http.get(tool.url("/_test/faults"))).json()["rules"]
    assert state["id"] == rule["id"] and (state["served"], state["count"]) == (2, 0)


async def test_faults_429_with_retry_after(tool, token):
    await add_fault(tool, path_prefix="/nrps/", status=429, retry_after=1, count=1)
    resp = await tool.call("GET", "/nrps/ds101/memberships", token)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert (await tool.call("GET", "/nrps/ds101/memberships", token)).status_code == 200


async def test_faults_garbage_json(tool, token):
    await add_fault(tool, garbage=True, count=1, methods=["GET"])
    resp = await tool.call("GET", "/ags/ds101/lineitems", token)
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()
    assert (await tool.call("GET", "/ags/ds101/lineitems", token)).json()


async def test_faults_on_the_token_endpoint(tool):
    await add_fault(tool, path_prefix="/token", status=503, count=1)
    assert (await tool.request_token()).status_code == 503
    assert (await tool.request_token()).status_code == 200


async def test_faults_delay_holds_ags_but_not_the_platform(tool, token):
    await add_fault(tool, delay=3)
    slow = asyncio.create_task(tool.call("GET", "/ags/ds101/lineitems", token))
    await asyncio.sleep(0.2)  # let the AGS request reach the platform first
    roster = await tool.call("GET", "/nrps/ds101/memberships", token)
    assert roster.status_code == 200
    assert not slow.done()  # still held back
    assert (await slow).status_code == 200
    (state,) = (await tool.http.get(tool.url("/_test/faults"))).json()["rules"]
    assert state["served"] == 1 and state["count"] is None
    assert (await tool.http.delete(tool.url("/_test/faults"))).status_code == 204
    assert (await tool.http.get(tool.url("/_test/faults"))).json()["rules"] == []


@pytest.mark.parametrize(
    "rule, message",
    [
        ({}, "needs status, garbage or delay"),
        ({"status": 200}, "A status below 400 needs body"),
        ({"status": 199, "body": "x"}, "status must be between 200 and 599"),
        ({"body": "x"}, "body and headers go with a status"),
        ({"status": 500, "user_id": 7}, "user_id must be"),
        ({"status": 500, "headers": {"Link": 1}}, "headers must be an object of strings"),
        ({"status": 500, "garbage": True}, "not both"),
        ({"delay": 100}, "delay must be between"),
        ({"retry_after": 1}, "retry_after goes with a status"),
        ({"status": 500, "path_prefix": "/_test/"}, "cannot be made to fail"),
        ({"status": 500, "colour": "red"}, "Unknown fields ['colour']"),
    ],
)
async def test_fault_rules_are_checked(tool, rule, message):
    resp = await tool.http.post(tool.url("/_test/faults"), json=rule)
    assert resp.status_code == 400 and message in resp.json()["message"]


async def test_a_deleted_line_item_is_gone_for_the_tool(tool, token):
    launch_item = tool.url("/ags/ds101/lineitems/homework/lineitem?type_id=1")
    assert (await tool.post_score(token, launch_item, score())).status_code == 204
    resp = await tool.http.post(tool.url("/_test/delete_lineitem"), json={"id": launch_item})
    assert resp.status_code == 204
    assert (await tool.post_score(token, launch_item, score(when=stamp(5)))).status_code == 404
    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    assert [i["label"] for i in book["lineitems"]] == ["Exam"] and book["scores"] == []
    # The tally remembers what arrived before the column went.
    (tally,) = (await tool.http.get(tool.url("/_test/scores.json"))).json()["posts"]
    assert tally["accepted"] == 1


async def test_a_fault_for_one_learner_and_the_score_history(tool, token):
    """A rule with user_id fails only that learner's score posts; the tally keeps every
    post as sent, with its status, also the refused ones and Moodle's 409."""
    item = tool.url("/ags/ds101/lineitems/homework/lineitem?type_id=1")
    await add_fault(tool, status=500, user_id="4", methods=["POST"], path_suffix="/scores")
    assert (await tool.post_score(token, item, score(user_id="4"))).status_code == 500
    assert (await tool.post_score(token, item, score(user_id="3"))).status_code == 204
    assert (await tool.post_score(token, item, score(user_id="3"))).status_code == 409
    assert (await tool.post_score(token, item, score(user_id="4"))).status_code == 500
    posts = (await tool.http.get(tool.url("/_test/scores.json"))).json()["posts"]
    (three,) = [p for p in posts if p["userId"] == "3"]
    assert [h["status"] for h in three["history"]] == [204, 409]
    assert three["history"][0]["score"] == score(user_id="3")
    # The injected failure answered before the platform saw the score: no tally.
    assert not [p for p in posts if p["userId"] == "4"]


async def test_a_chosen_answer_and_the_request_log(tool, token):
    await tool.http.post(tool.url("/_test/load"), json={})
    link = '<https://elsewhere.example/p2>; rel="next"'
    await add_fault(tool, status=200, body="[]", headers={"Link": link}, count=1)
    resp = await tool.call("GET", "/ags/ds101/lineitems", token)
    assert (resp.status_code, resp.json(), resp.headers["link"]) == (200, [], link)
    assert (await tool.call("GET", "/ags/ds101/lineitems", token)).json() != []
    requests = (await tool.http.get(tool.url("/_test/load"))).json()["requests"]
    assert requests == [["GET", "/ags/ds101/lineitems"]] * 2


async def test_a_stale_line_item_list(tool, token):
    item = tool.url("/ags/ds101/lineitems/exam/lineitem?type_id=1")
    resp = await tool.http.post(
        tool.url("/_test/delete_lineitem"), json={"id": item, "stale": True}
    )
    assert resp.status_code == 204
    listed = (await tool.call("GET", "/ags/ds101/lineitems", token)).json()
    assert item in [i["id"] for i in listed]  # still listed ...
    assert (await tool.post_score(token, item, score())).status_code == 404  # ... but gone
    book = (await tool.http.get(tool.url("/gradebook.json"))).json()["contexts"][0]
    assert [i["label"] for i in book["lineitems"]] == ["Homework"]


async def test_service_settings_and_token_requests(tool):
    api = tool.url("/_test/settings")
    resp = await tool.http.post(
        api, json={"scopes": ["score"], "token_lifetime": 0, "page_size": 2}
    )
    assert resp.json()["scopes"] == [C.AGS_SCOPE_SCORE]
    answer = (await tool.request_token(*ALL_SCOPES)).json()
    assert answer["scope"] == C.AGS_SCOPE_SCORE and answer["expires_in"] == 0
    expired = await tool.call("GET", "/nrps/ds101/memberships", answer["access_token"])
    assert expired.status_code == 401
    (seen,) = (await tool.http.get(tool.url("/_test/token_requests"))).json()["requests"]
    assert seen["status"] == 200 and seen["claims"]["aud"] == tool.url("/token")
    await tool.http.post(api, json={"token_audience": "https://lms.example/oauth2"})
    assert (await tool.request_token()).status_code == 401  # aud: the token URL no more
    for bad, message in [
        ({"page_size": 0}, "page_size must be a whole number from 1"),
        ({"scopes": ["everything"]}, "Unknown scope 'everything'"),
        ({"colour": 1}, "Unknown fields ['colour']"),
    ]:
        resp = await tool.http.post(api, json=bad)
        assert resp.status_code == 400 and message in resp.json()["message"]
    assert (await tool.http.post(tool.url("/_test/reset"))).status_code == 204
    assert (await tool.http.get(api)).json()["token_audience"] is None


async def test_tokens_revoked_and_a_roster_replaced(tool, token):
    assert (await tool.http.delete(tool.url("/_test/tokens"))).status_code == 204
    assert (await tool.call("GET", "/nrps/ds101/memberships", token)).status_code == 401
    token = (await tool.request_token()).json()["access_token"]
    members = [
        {"user_id": "900", "given_name": "Ada", "family_name": "B", "email": "a@x"},
        {"user_id": "901", "roles": ["Instructor"], "status": "Inactive"},
        # names and e-mail not shared with the tool (Moodle's privacy settings)
        {"user_id": "902", "given_name": None, "family_name": None, "email": None},
    ]
    resp = await tool.http.put(
        tool.url("/_test/roster"), json={"context": "ds101", "members": members}
    )
    assert resp.status_code == 200
    roster = (await tool.call("GET", "/nrps/ds101/memberships", token)).json()["members"]
    assert [(m["user_id"], m["roles"], m["status"]) for m in roster] == [
        ("900", ["Learner"], "Active"),
        ("901", ["Instructor"], "Inactive"),
        ("902", ["Learner"], "Active"),
    ]
    assert roster[0]["name"] == "Ada B" and roster[0]["email"] == "a@x"
    assert not {"name", "given_name", "family_name", "email"} & set(roster[2])
    item = tool.url("/ags/ds101/lineitems/homework/lineitem?type_id=1")
    assert (await tool.post_score(token, item, score(user_id="3"))).status_code == 400
    assert (await tool.post_score(token, item, score(user_id="900"))).status_code == 204
    bad = await tool.http.put(
        tool.url("/_test/roster"), json={"context": "ds101", "members": [{"id": "1"}]}
    )
    assert bad.status_code == 400 and "user_id" in bad.json()["message"]


# --- flags: --ags-scopes, --roster-size, and the test API off by default


async def test_grade_sync_only_platform_with_a_large_roster(tool_keyset, tmp_path, http):
    keys, jwks_url = tool_keyset
    with running_platform(
        tmp_path / "state", tool_jwks_url=jwks_url, ags_scopes="score", roster_size=500
    ) as p:
        tool = Tool(p.url, keys, http)
        resp = await tool.request_token(*ALL_SCOPES)
        assert resp.json()["scope"].split() == [C.AGS_SCOPE_SCORE, C.NRPS_SCOPE]
        token = resp.json()["access_token"]
        doc = {"label": "A1", "scoreMaximum": 10}
        created = await tool.call("POST", "/ags/ds101/lineitems", token, json=doc, media=LINEITEM)
        assert created.status_code == 403
        launch_item = tool.url("/ags/ds101/lineitems/exam/lineitem?type_id=1")
        assert (await tool.post_score(token, launch_item, score(user_id="599"))).status_code == 204

        members, pages = await tool.all_pages(
            tool.url("/nrps/ds101/memberships?limit=1000"), token, "members"
        )
        assert len(members) == 504 and pages == 6  # pages hold at most 100
        assert (await http.get(p.url + "/_test/faults")).status_code == 404


def test_launches_advertise_the_configured_scopes():
    settings = PlatformSettings(
        "http://lms.example", "c", "d", "http://hub.example/hub/", ags_scopes=(C.AGS_SCOPE_SCORE,)
    )
    claims = launch_claims(settings, demo_data.ALAN, demo_data.EXAM, "n")
    assert claims[C.AGS_ENDPOINT]["scope"] == [C.AGS_SCOPE_SCORE]
    assert settings.grantable_scopes == (C.AGS_SCOPE_SCORE, C.NRPS_SCOPE)


def test_bad_flags_are_named(tmp_path):
    for flag, message in (
        ("--ags-scopes=score,grades", "--ags-scopes takes a comma-separated list"),
        ("--roster-size=-1", "--roster-size must be 0 to 100000"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ananke_hub.testlms",
                f"--state-dir={tmp_path}",
                "--tool-login-url=http://x/a",
                "--tool-redirect-uri=http://x/b",
                "--tool-target-link-uri=http://x/c",
                flag,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert message in result.stderr


# --- the Moodle profile (issue 11): what Moodle does that a kinder LMS would not


async def launch_ags_claim(platform_url: str, link: str) -> dict:
    """The AGS claim of Alan's launch of ``link``, through the platform's /auth."""

    class At:
        url = platform_url

    async with LTIBrowser() as b:
        await login(b, At, user="3", link=link)
        resp = await b.get(platform_url + "/auth?" + "&".join(
            f"{k}={v}" for k, v in auth_params(lti_message_hint=link).items()
        ))
        id_token = auto_submit_form(resp).fields["id_token"]
    return jwt.decode(id_token, options={"verify_signature": False})[C.AGS_ENDPOINT]


async def test_launches_leave_lineitem_out_once_a_line_item_is_bound_to_the_link(
    tool, token, platform_url
):
    before = await launch_ags_claim(platform_url, "homework")
    assert before["lineitem"].endswith("/ags/ds101/lineitems/homework/lineitem?type_id=1")
    # a column not bound to any link changes nothing
    await tool.create_lineitem(token, label="Unbound")
    assert "lineitem" in await launch_ags_claim(platform_url, "homework")
    # one bound to the link besides the activity's own: Moodle leaves lineitem out
    await tool.create_lineitem(token, label="hw1", resourceLinkId="homework", tag="t")
    after = await launch_ags_claim(platform_url, "homework")
    assert "lineitem" not in after
    assert after["lineitems"] == before["lineitems"]
    # the other activity of the course keeps its own
    assert "lineitem" in await launch_ags_claim(platform_url, "exam")


async def test_a_non_editing_teacher_is_listed_as_learner_and_refused_grades(tool, token):
    member = await tool.http.post(
        tool.url("/_test/roster"),
        json={"context": "ds101", "user_id": "150", "status": "Active", "gradable": False},
    )
    assert member.status_code == 200, member.text
    members, _ = await tool.all_pages("/nrps/ds101/memberships", token, "members")
    (teacher,) = [m for m in members if m["user_id"] == "150"]
    assert teacher["roles"] == ["Learner"]
    own = "/ags/ds101/lineitems/homework/lineitem?type_id=1"
    resp = await tool.post_score(token, tool.url(own), score(user_id="150", when=stamp(1)))
    assert resp.status_code == 400
    assert "Incorrect score received" in resp.json()["message"]


async def test_a_write_is_carried_out_and_answered_late_or_never(tool, token):
    for what, rule in (("late", {"after": "late", "delay": 1.5}), ("drop", {"after": "drop"})):
        added = await tool.http.post(
            tool.url("/_test/faults"), json={**rule, "methods": ["POST"], "count": 1}
        )
        assert added.status_code == 201, added.text
        with pytest.raises((httpx.ReadTimeout, httpx.RemoteProtocolError)):
            await tool.http.post(
                tool.url("/ags/ds101/lineitems"),
                json={"label": f"made {what}", "scoreMaximum": 10},
                headers={"Authorization": f"Bearer {token}", "Content-Type": LINEITEM},
                timeout=0.5,
            )
        items = (await tool.call("GET", "/ags/ds101/lineitems", token)).json()
        assert f"made {what}" in [i["label"] for i in items]  # the work was done


async def test_the_tool_keyset_is_fetched_during_every_token_request(tool):
    before = len(KEYSET_FETCHES)
    await tool.token()
    await tool.token()
    assert len(KEYSET_FETCHES) == before + 2


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"after": "soon"}, 'after must be "late" or "drop"'),
        ({"after": "late"}, "needs delay"),
        ({"after": "drop", "status": 500}, "answers nothing else"),
    ],
)
async def test_after_fault_rules_are_checked(tool, rule, message):
    resp = await tool.http.post(tool.url("/_test/faults"), json=rule)
    assert resp.status_code == 400 and message in resp.json()["message"]
