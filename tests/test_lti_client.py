"""Kore's LTI Advantage client against the built-in LMS (tests/builtin_lms.py, its Moodle
profile and test API): tokens, the one request helper (retries, refusals, garbage), AGS
line items and scores, NRPS paging."""

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import jwt
import pytest
from builtin_lms import started
from test_platform import free_port

from ananke_hub.keys import KeyStore
from ananke_hub.registration import LMSRegistration
from ananke_hub.testlms import constants as C
from kore.lti import (
    AGSClient,
    BadLMSResponse,
    LMSUnavailable,
    LTIAdvantage,
    LTIClient,
    LTIServiceError,
    NRPSClient,
    OutcomeUnknown,
    Score,
    TokenRefused,
    scores_url,
)
from kore.lti.ags import iso_timestamp, with_query
from kore.lti.retry import RetryPolicy, parse_retry_after
from kore.lti.transport import LMSResponse

ISSUER = "https://lms.example.edu"
CLIENT = "tool-client"
SCORE = C.AGS_SCOPE_SCORE
LINEITEM = C.AGS_SCOPE_LINEITEM
NRPS = C.NRPS_SCOPE


@pytest.fixture(scope="module")
def key_store(tmp_path_factory):
    store = KeyStore(tmp_path_factory.mktemp("tool") / "keys")
    store.ensure()
    return store


@pytest.fixture(scope="module")
def shared_lms(tmp_path_factory, key_store):
    with started(tmp_path_factory.mktemp("lms") / "state", key_store, CLIENT) as lms:
        yield lms


@pytest.fixture
def lms(shared_lms, key_store):
    shared_lms.keyset.jwks = key_store.jwks
    shared_lms.reset(learners=("101", "102"))
    return shared_lms


#: Fault rules aimed at the line item container (list, create) and at score posts.
LIST = {"path_suffix": "/lineitems", "methods": ["GET"]}
CREATE = {"path_suffix": "/lineitems", "methods": ["POST"]}
SCORES = {"path_suffix": "/scores", "methods": ["POST"]}


def fast_settings(**overrides) -> LTIAdvantage:
    values = dict(retry_delay=0.01, max_retry_delay=0.05, request_timeout=2.0, connect_timeout=1.0)
    values.update(overrides)
    return LTIAdvantage(**values)


def make_client(lms, key_store, *, audience="", **overrides) -> LTIClient:
    registration = LMSRegistration(
        issuer=ISSUER,
        client_id=CLIENT,
        access_token_url=lms.token_url,
        token_audience=audience,
    )
    return LTIClient(
        registration=registration, key_store=key_store, settings=fast_settings(**overrides)
    )


@pytest.fixture
async def client(lms, key_store):
    c = make_client(lms, key_store)
    yield c
    await c.aclose()


def session(client, *scopes):
    return client.session(issuer=ISSUER, client_id=CLIENT, scopes=scopes or {SCORE, LINEITEM})


# --- tokens -----------------------------------------------------------------------------------


async def test_client_assertion_claims(client, lms, key_store):
    issued_after = int(time.time())
    token = await session(client, SCORE, LINEITEM).token()
    issued_before = int(time.time()) + 1
    assert token.scopes == {SCORE, LINEITEM}
    (request,) = lms.token_requests()
    form = request["form"]
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert set(form["scope"].split()) == {SCORE, LINEITEM}
    assert request["header"]["kid"] == key_store.signing_key().kid
    assert request["header"]["alg"] == "RS256"
    claims = request["claims"]
    assert claims["iss"] == claims["sub"] == CLIENT
    assert claims["aud"] == lms.token_url
    assert claims["exp"] - claims["iat"] == 300
    assert issued_after <= claims["iat"] <= issued_before  # issued at the request
    # the token itself never shows in a repr (logs, tracebacks)
    assert token.value not in repr(token)


async def test_token_audience_from_the_registration(lms, key_store):
    audience = "https://lms.example.edu/oauth2/token"  # an LMS that names its own
    lms.settings(token_audience=audience)
    c = make_client(lms, key_store, audience=audience)
    try:
        await session(c).token()
    finally:
        await c.aclose()
    assert lms.token_requests()[0]["claims"]["aud"] == audience


async def test_tokens_are_cached_per_scopes_and_each_assertion_is_new(client, lms):
    import asyncio

    s1 = session(client, SCORE)
    tokens = await asyncio.gather(*(s1.token() for _ in range(10)))
    assert len({t.value for t in tokens}) == 1
    assert len(lms.token_requests()) == 1  # ten at once: one request
    assert (await s1.token()).value == tokens[0].value
    await session(client, SCORE, LINEITEM).token()
    assert len(lms.token_requests()) == 2  # other scopes, other token
    jtis = {r["claims"]["jti"] for r in lms.token_requests()}
    assert len(jtis) == 2


async def test_an_expired_token_is_renewed(client, lms):
    lms.settings(token_lifetime=0)
    s = session(client, SCORE)
    first = await s.token()
    second = await s.token()
    assert first.value != second.value
    assert len(lms.token_requests()) == 2


async def test_token_with_the_wrong_key_is_refused(lms, tmp_path):
    other = KeyStore(tmp_path / "other")
    other.ensure()
    lms.keyset.jwks = other.jwks  # the LMS knows another key than the one Kore signs with
    c = make_client(lms, KeyStore(tmp_path / "mine"))
    c.tokens.signing_key = KeyStore(tmp_path / "mine").ensure
    try:
        with pytest.raises(TokenRefused) as info:
            await session(c).token()
    finally:
        await c.aclose()
    assert info.value.status == 401
    assert "invalid_client" in info.value.message
    assert "keyset URL" in info.value.message
    assert len(lms.token_requests()) == 1  # a refusal is not retried


async def test_token_with_the_wrong_audience_is_refused(client, lms):
    lms.settings(token_audience="https://somewhere.else/token")
    with pytest.raises(TokenRefused) as info:
        await session(client).token()
    assert "invalid_client" in info.value.message
    assert "aud must be" in info.value.message and "somewhere.else" in info.value.message


async def test_token_endpoint_garbage_is_a_clear_error(client, lms):
    lms.fault(path_prefix="/token", status=200, body="<html>login</html>", count=1)
    with pytest.raises(LTIServiceError) as info:
        await session(client).token()
    assert "not JSON" in info.value.message


async def test_token_answer_without_access_token(client, lms):
    lms.fault(path_prefix="/token", status=200, body=json.dumps({"token_type": "Bearer"}))
    with pytest.raises(TokenRefused, match="without an access_token"):
        await session(client).token()


async def test_token_endpoint_errors_are_retried(client, lms):
    lms.fault(path_prefix="/token", status=503, count=2)
    token = await session(client).token()
    assert token.value
    assert len(lms.requests("POST", "/token")) == 3


async def test_granted_scopes_come_from_the_answer(client, lms):
    lms.settings(scopes=["score"])
    token = await session(client, SCORE, LINEITEM).token()
    assert token.scopes == {SCORE}


# --- the request helper -----------------------------------------------------------------------


async def test_429_with_retry_after_is_retried(client, lms):
    lms.fault(**LIST, status=429, count=2, retry_after=0)
    items = await AGSClient(session(client)).line_items(lms.lineitems_url)
    assert [i.label for i in items] == ["Homework", "Exam"]
    assert len(lms.requests("GET", "/lineitems")) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_until_it_works(client, lms, status):
    lms.fault(**LIST, status=status, count=3)
    assert await AGSClient(session(client)).line_items(lms.lineitems_url)


async def test_persistent_5xx_gives_up_after_the_attempts(client, lms):
    lms.fault(**LIST, status=500, body='{"message": "database down"}')
    with pytest.raises(LMSUnavailable) as info:
        await AGSClient(session(client)).line_items(lms.lineitems_url)
    assert info.value.status == 500
    assert "database down" in info.value.message and "5 times" in info.value.message
    assert len(lms.requests("GET", "/lineitems")) == 5


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
async def test_other_4xx_are_not_retried(client, lms, status):
    lms.fault(**LIST, status=status, count=5, body='{"error": "nope"}')
    with pytest.raises(LTIServiceError) as info:
        await AGSClient(session(client)).line_items(lms.lineitems_url)
    assert info.value.status == status
    assert "nope" in info.value.message
    assert len(lms.requests("GET", "/lineitems")) == 1


async def test_a_401_gets_a_new_token_once(client, lms):
    s = session(client)
    await s.token()
    lms.revoke_tokens()  # the LMS forgot (revoked) every token
    assert await AGSClient(s).line_items(lms.lineitems_url)
    assert len(lms.token_requests()) == 2


async def test_a_second_401_is_an_error(client, lms):
    lms.fault(**LIST, status=401, count=2)
    with pytest.raises(LTIServiceError) as info:
        await AGSClient(session(client)).line_items(lms.lineitems_url)
    assert info.value.status == 401
    assert len(lms.token_requests()) == 2


async def test_timeouts_are_retried(lms, key_store):
    c = make_client(lms, key_store, request_timeout=0.3)
    try:
        lms.fault(**LIST, delay=1.0, count=1)
        assert await AGSClient(session(c)).line_items(lms.lineitems_url)
    finally:
        await c.aclose()
    assert len(lms.requests("GET", "/lineitems")) == 2


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_write_is_not_repeated_after_an_answer_that_may_follow_processing(
    client, lms, status
):
    lms.fault(**SCORES, status=status, count=5)
    with pytest.raises(OutcomeUnknown) as info:
        await AGSClient(session(client)).post_score(
            lms.lineitem_url, Score("101", "Completed", "FullyGraded", 1, 2)
        )
    assert info.value.status == status
    assert "did not send it again blindly" in info.value.message
    assert len(lms.requests("POST", "/scores")) == 1


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_a_write_is_repeated_after_the_lms_said_it_did_not_process_it(
    client, lms, status
):
    lms.fault(**CREATE, status=status, count=2, retry_after=0)
    item = await AGSClient(session(client)).create_line_item(
        lms.lineitems_url, label="hw1", score_maximum=10
    )
    assert item.label == "hw1"
    assert lms.requests("POST").count(("POST", "/ags/ds101/lineitems")) == 3


@pytest.mark.parametrize("what", ["late", "drop"])
async def test_a_write_answered_late_or_never_is_not_repeated(lms, key_store, what):
    c = make_client(lms, key_store, request_timeout=0.3)
    try:
        lms.fault(**CREATE, after=what, count=1, **({"delay": 1.0} if what == "late" else {}))
        with pytest.raises(OutcomeUnknown):
            await AGSClient(session(c)).create_line_item(
                lms.lineitems_url, label="hw1", score_maximum=10
            )
    finally:
        await c.aclose()
    # one request, one column: the LMS made it, the tool was not told
    assert lms.requests("POST").count(("POST", "/ags/ds101/lineitems")) == 1
    assert [i["label"] for i in lms.lineitems()] == ["Homework", "Exam", "hw1"]


async def test_no_lms_at_all(lms, key_store):
    registration = LMSRegistration(
        issuer=ISSUER, client_id=CLIENT, access_token_url=f"http://127.0.0.1:{free_port()}/token"
    )
    c = LTIClient(
        registration=registration, key_store=key_store, settings=fast_settings(max_attempts=2)
    )
    try:
        with pytest.raises(LMSUnavailable, match="connection failed"):
            await c.session(issuer=ISSUER, client_id=CLIENT, scopes={SCORE}).token()
    finally:
        await c.aclose()


async def test_garbage_json_is_a_clear_error(client, lms):
    lms.fault(**LIST, status=200, body="{not json", count=1)
    with pytest.raises(BadLMSResponse, match="not JSON"):
        await AGSClient(session(client)).line_items(lms.lineitems_url)
    lms.fault(**LIST, status=200, body='{"an": "object"}', count=1)
    with pytest.raises(BadLMSResponse, match="not a list"):
        await AGSClient(session(client)).line_items(lms.lineitems_url)


async def test_service_urls_must_be_http(client):
    with pytest.raises(LTIServiceError, match="not an http"):
        await AGSClient(session(client)).line_items("file:///etc/passwd")


def test_sessions_only_for_the_registered_lms(key_store):
    registration = LMSRegistration(
        issuer=ISSUER, client_id=CLIENT, access_token_url="https://lms/t"
    )
    c = LTIClient(registration=registration, key_store=key_store)
    with pytest.raises(LTIServiceError, match="registered with"):
        c.session(issuer="https://evil.example", client_id=CLIENT, scopes={SCORE})
    with pytest.raises(LTIServiceError, match="no longer lists"):
        c.session(issuer=ISSUER, client_id="other", scopes={SCORE})
    unset = LTIClient(registration=LMSRegistration(issuer=ISSUER), key_store=key_store)
    with pytest.raises(LTIServiceError, match="access_token_url is not set"):
        unset.session(issuer=ISSUER, client_id=CLIENT, scopes={SCORE})


def test_retry_after_and_backoff():
    assert parse_retry_after("7") == 7.0
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 20 < parse_retry_after(format_datetime(later, usegmt=True)) <= 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    policy = RetryPolicy(base_delay=1, max_delay=8, max_retry_after=60)
    assert policy.delay(1, retry_after=7) == 7
    assert policy.delay(1, retry_after=3600) == 60
    for retry, cap in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 8)]:
        assert cap / 2 <= policy.delay(retry) <= cap


def test_link_header_parsing():
    from multidict import CIMultiDict

    def response(*links):
        headers = CIMultiDict([("Link", link) for link in links])
        return LMSResponse(200, headers, b"", "https://lms/ags/c/lineitems?limit=2")

    assert response('<https://lms/x?page=2>; rel="next"').next_link() == "https://lms/x?page=2"
    assert (
        response(
            '<https://lms/first>; rel="first", </ags/c/lineitems?page=3>; rel=next'
        ).next_link()
        == "https://lms/ags/c/lineitems?page=3"
    )
    assert (
        response('<https://lms/a>; rel="prev"', '<https://lms/b>; rel="next last"').next_link()
        == "https://lms/b"
    )
    assert response('<https://lms/a>; rel="last"').next_link() is None
    assert response().next_link() is None
    # Moodle's lineitems.php writes typographic quotes (rel=“next”) and escapes the
    # URL's ampersands.
    moodle = "<https://lms/p2?limit=5&amp;from=5>; rel=\u201cnext\u201d"
    assert response(moodle).next_link() == "https://lms/p2?limit=5&from=5"


# --- AGS --------------------------------------------------------------------------------------


def test_scores_url_keeps_the_query():
    assert scores_url("https://lms/ags/c/lineitems/1/lineitem?type_id=1") == (
        "https://lms/ags/c/lineitems/1/lineitem/scores?type_id=1"
    )
    assert scores_url("https://lms/ags/c/lineitems/7") == "https://lms/ags/c/lineitems/7/scores"
    assert scores_url("https://lms/li/7/?a=1&b=2#frag") == "https://lms/li/7/scores?a=1&b=2"
    assert with_query("https://lms/li?type_id=1", {"limit": "5", "tag": None}) == (
        "https://lms/li?type_id=1&limit=5"
    )


def test_timestamps_are_iso_utc_with_milliseconds():
    stamp = iso_timestamp(datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    assert stamp == "2025-01-02T03:04:05.678+00:00"


async def test_line_items_are_paged_and_filtered(client, lms):
    for n in range(5):
        lms.add_lineitem(f"hw{n}", 10, resource_id=f"nbgrader:hw{n}", tag="t", link="homework")
    lms.add_lineitem("other", 10, resource_id="x", link="exam")
    lms.settings(page_size=2)
    ags = AGSClient(session(client))
    everything = await ags.line_items(lms.lineitems_url)
    assert len(everything) == 8  # the two activities' own and six
    mine = await ags.line_items(lms.lineitems_url, resource_link_id="homework")
    assert [i.label for i in mine] == ["Homework"] + [f"hw{n}" for n in range(5)]
    assert mine[1].resource_id == "nbgrader:hw0" and mine[1].tag == "t"
    # page_size 2: four pages for eight items, three for six
    assert len(lms.requests("GET", "/lineitems")) == 4 + 3


async def test_paging_is_bounded(lms, key_store):
    for n in range(9):
        lms.add_lineitem(f"hw{n}", 10)
    lms.settings(page_size=2)
    c = make_client(lms, key_store, max_pages=2)
    try:
        with pytest.raises(LTIServiceError, match="more than 2 pages"):
            await AGSClient(session(c), max_pages=2).line_items(lms.lineitems_url)
    finally:
        await c.aclose()


async def test_next_page_on_another_site_is_refused(client, lms):
    lms.fault(
        **LIST,
        status=200,
        body="[]",
        headers={"Link": '<https://evil.example/p2>; rel="next"'},
        count=1,
    )
    with pytest.raises(BadLMSResponse, match="another site"):
        await AGSClient(session(client)).line_items(lms.lineitems_url)


@pytest.mark.parametrize(
    "path, body, read, names",
    [
        (
            LIST,
            "[]",
            lambda c, lms, **kw: AGSClient(session(c), **kw).line_items(lms.lineitems_url),
            ("line item list", "page of line items"),
        ),
        (
            {"path_prefix": "/nrps/", "path_suffix": "/memberships", "methods": ["GET"]},
            '{"members": []}',
            lambda c, lms, **kw: NRPSClient(session(c, NRPS), **kw).members(lms.memberships_url),
            ("roster", "roster page"),
        ),
    ],
    ids=["ags", "nrps"],
)
async def test_line_items_and_rosters_page_by_the_same_rules(
    client, lms, key_store, path, body, read, names
):
    """One pager (ServiceSession.pages) for AGS and NRPS: a page that links to itself
    ends the list, a next page on another site is refused, and pages are bounded."""
    list_name, next_name = names
    def answer(link, count=1):
        lms.fault(**path, status=200, body=body, headers={"Link": link}, count=count)

    answer('<?again=1>; rel="next"', count=2)
    await read(client, lms)  # page 1, then ?again=1, which links to itself: done
    answer('<https://evil.example/p2>; rel="next"')
    with pytest.raises(BadLMSResponse, match=f"next {next_name} is on another site"):
        await read(client, lms)
    answer('<?page=2>; rel="next"')
    with pytest.raises(LTIServiceError, match=f"The {list_name} at .* more than 1 pages"):
        await read(client, lms, max_pages=1)


async def test_create_read_update_line_item(client, lms):
    ags = AGSClient(session(client))
    item = await ags.create_line_item(
        lms.lineitems_url,
        label="hw1",
        score_maximum=12.5,
        resource_id="nbgrader:hw1",
        tag="ananke-nbgrader",
        resource_link_id="homework",
    )
    assert item.id.startswith(lms.lineitems_url + "/")
    (created,) = lms.created_items()
    assert (
        created["label"],
        created["scoreMaximum"],
        created["resourceId"],
        created["tag"],
        created["resourceLinkId"],
    ) == ("hw1", 12.5, "nbgrader:hw1", "ananke-nbgrader", "homework")
    assert (await ags.line_item(item.id)).score_maximum == 12.5
    updated = await ags.update_line_item(item, label="Homework 1", score_maximum=20)
    (stored,) = lms.created_items()
    assert (updated.label, stored["label"], stored["scoreMaximum"]) == ("Homework 1",) * 2 + (20,)


async def test_scores_go_to_the_line_item_with_its_query(client, lms):
    ags = AGSClient(session(client))
    await ags.post_score(lms.lineitem_url, Score("101", "Completed", "FullyGraded", 7.5, 10))
    await ags.post_score(lms.lineitem_url, Score("102", "Initialized", "NotReady"))
    (sent,) = lms.scores_of(lms.lineitem_url, "101")
    assert sent["scoreGiven"] == 7.5 and sent["scoreMaximum"] == 10
    assert sent["userId"] == "101" and sent["gradingProgress"] == "FullyGraded"
    (pending,) = lms.scores_of(lms.lineitem_url, "102")
    assert "scoreGiven" not in pending and "scoreMaximum" not in pending
    assert pending["activityProgress"] == "Initialized"


async def test_unknown_student_is_a_clear_refusal(client, lms):
    # Moodle answers 400 "Incorrect score received" (the former fake said 422).
    with pytest.raises(LTIServiceError) as info:
        await AGSClient(session(client)).post_score(
            lms.lineitem_url, Score("999", "Completed", "FullyGraded", 1, 10)
        )
    assert info.value.status == 400
    assert "Incorrect score received" in info.value.message and "'999'" in info.value.message


# --- NRPS -------------------------------------------------------------------------------------


async def test_members_are_read_over_all_pages(client, lms):
    lms.set_roster(
        [
            {"user_id": str(n), "email": f"s{n}@x", **({"status": "Inactive"} if n == 3 else {})}
            for n in range(7)
        ]
    )
    lms.settings(page_size=2)
    roster = await NRPSClient(session(client, NRPS)).members(lms.memberships_url)
    assert roster.pages == 4
    assert roster.invalid == 0
    assert sorted(m.user_id for m in roster.members) == [str(n) for n in range(7)]
    three = next(m for m in roster.members if m.user_id == "3")
    assert three.status == "Inactive" and not three.active
    assert next(m for m in roster.members if m.user_id == "1").email == "s1@x"


async def test_invalid_members_are_counted_not_read(client, lms):
    """Entries a roster page should not hold (no LMS we know sends them; a proxy or a
    broken plugin might): counted as invalid, a numeric user id read as text."""
    page = {
        "members": [
            {"roles": ["Learner"]},  # no user id
            "garbage",
            {"user_id": 3, "roles": ["Learner"], "status": "Inactive"},  # numeric id
            {"user_id": "4", "roles": ["Learner"]},
        ]
    }
    lms.fault(path_prefix="/nrps/", status=200, body=json.dumps(page), count=1)
    roster = await NRPSClient(session(client, NRPS)).members(lms.memberships_url)
    assert roster.invalid == 2
    assert sorted(m.user_id for m in roster.members) == ["3", "4"]
    three = next(m for m in roster.members if m.user_id == "3")
    assert three.status == "Inactive" and not three.active


async def test_roster_without_members_list_is_an_error(client, lms):
    lms.fault(path_prefix="/nrps/", status=200, body='{"context": {}}', count=1)
    with pytest.raises(BadLMSResponse, match="without a list of members"):
        await NRPSClient(session(client, NRPS)).members(lms.memberships_url)


async def test_roster_needs_the_nrps_scope(client, lms):
    lms.settings(scopes=["score"])
    with pytest.raises(LTIServiceError) as info:
        await NRPSClient(session(client, NRPS, SCORE)).members(lms.memberships_url)
    assert info.value.status == 403


def test_assertion_is_verifiable_with_the_published_key(key_store):
    from kore.lti.tokens import client_assertion

    token = client_assertion(
        key_store.signing_key(), client_id="c", audience="https://a/t", now=1000
    )
    key = jwt.PyJWK(key_store.jwks()["keys"][-1]).key
    claims = jwt.decode(
        token, key, algorithms=["RS256"], audience="https://a/t", options={"verify_exp": False}
    )
    assert claims["iat"] == 1000 and claims["exp"] == 1300 and claims["sub"] == "c"


async def test_oversized_answers_are_not_read(lms, key_store, monkeypatch):
    from kore.lti import transport

    monkeypatch.setattr(transport, "MAX_BODY", 1024)
    c = make_client(lms, key_store)
    try:
        lms.fault(**LIST, status=200, body="[" + " " * 4096 + "]", count=1)
        with pytest.raises(BadLMSResponse, match="larger than 1024 bytes"):
            await AGSClient(session(c)).line_items(lms.lineitems_url)
    finally:
        await c.aclose()
