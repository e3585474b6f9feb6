"""How Kore's requests reach the LMS (kore/lti/transport.py, kore/lti/limiter.py):
kept-alive connections, an adaptive limit of requests in flight under the configured
ceiling, and TLS verified against the CAs the host trusts (never turned off).

Against the built-in LMS (``python -m ananke_hub.testlms --test-api``), whose
``/_test/load`` counts the TCP connections its requests came on and the requests it
handles at once, and whose ``/_test/faults`` slows it down or refuses.
"""

import asyncio
import ssl
import time
from contextlib import contextmanager

import httpx
import pytest
from test_platform import running_platform
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ananke_hub.keys import KeyStore
from ananke_hub.registration import LMSRegistration
from ananke_hub.testlms import constants as C
from ananke_hub.testlms.tls import private_ca
from kore.lti import AGSClient, LMSUnavailable, LTIAdvantage, LTIClient, LTIServiceError, Score
from kore.lti.limiter import AdaptiveLimit

ISSUER = "https://lms.example.edu"
CLIENT = "tool-client"
USERS = {str(n) for n in range(100, 160)}
SCORE = C.AGS_SCOPE_SCORE
LINEITEM = C.AGS_SCOPE_LINEITEM


@pytest.fixture(scope="module")
async def key_store(tmp_path_factory):
    """Kore's keys, and their keyset URL served from this process (the LMS fetches it)."""
    store = KeyStore(tmp_path_factory.mktemp("tool") / "keys")
    store.ensure()

    class KeysetHandler(web.RequestHandler):
        def get(self):
            self.write(store.jwks())

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/jwks", KeysetHandler)]))
    server.add_sockets(sockets)
    store.keyset_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/jwks"
    yield store
    server.stop()


class LMS:
    """The built-in LMS, run as a subprocess, seen through its test API: course ds101
    and the line item of its activity "homework"."""

    def __init__(self, url: str, verify: ssl.SSLContext | bool = True):
        self.base = url
        self.token_url = f"{url}/token"
        self.lineitems_url = f"{url}/ags/ds101/lineitems"
        self.lineitem_url = f"{url}/ags/ds101/lineitems/homework/lineitem?type_id={C.TYPE_ID}"
        self.admin = httpx.Client(base_url=url, verify=verify, trust_env=False, timeout=30)

    def _ok(self, response: httpx.Response) -> httpx.Response:
        assert response.is_success, response.text
        return response

    def reset(self, users=USERS) -> None:
        """The demo data again, no faults, the counters zeroed, ``users`` enrolled."""
        self._ok(self.admin.post("/_test/reset"))
        self._ok(self.admin.post("/_test/load", json={}))
        for user in sorted(users):
            self._ok(
                self.admin.post(
                    "/_test/roster", json={"context": "ds101", "user_id": user, "status": "Active"}
                )
            )

    def slow_down(self, seconds: float) -> None:
        """Every AGS request waits ``seconds`` first: requests overlap."""
        self._ok(self.admin.post("/_test/faults", json={"delay": seconds}))

    def refuse_next_score(self, status: int, **rule) -> None:
        rule = {"status": status, "count": 1, "methods": ["POST"], **rule}
        self._ok(self.admin.post("/_test/faults", json=rule))

    def load(self) -> dict:
        return self._ok(self.admin.get("/_test/load")).json()

    def scores_of(self, user: str) -> int:
        """How many scores of ``user`` the homework's line item accepted."""
        posts = self._ok(self.admin.get("/_test/scores.json")).json()["posts"]
        return sum(
            p["accepted"]
            for p in posts
            if p["lineitem"] == self.lineitem_url and p["userId"] == user
        )


@contextmanager
def built_in_lms(state_dir, key_store, tls=None):
    options = {"client_id": CLIENT, "tool_jwks_url": key_store.keyset_url}
    verify = True
    if tls is not None:
        options.update(certfile=tls.cert_file, keyfile=tls.key_file)
        verify = ssl.create_default_context(cafile=str(tls.ca_file))
    with running_platform(state_dir, flags=["--test-api"], **options) as p:
        lms = LMS(p.url, verify)
        try:
            yield lms
        finally:
            lms.admin.close()


@pytest.fixture(scope="module")
def shared_lms(tmp_path_factory, key_store):
    with built_in_lms(tmp_path_factory.mktemp("lms") / "state", key_store) as lms:
        yield lms


@pytest.fixture
def lms(shared_lms):
    shared_lms.reset()
    return shared_lms


def make_client(lms, key_store, **settings) -> LTIClient:
    values = dict(retry_delay=0.01, max_retry_delay=0.05, request_timeout=5.0)
    values.update(settings)
    registration = LMSRegistration(issuer=ISSUER, client_id=CLIENT, access_token_url=lms.token_url)
    return LTIClient(
        registration=registration, key_store=key_store, settings=LTIAdvantage(**values)
    )


def ags_of(client) -> AGSClient:
    return AGSClient(client.session(issuer=ISSUER, client_id=CLIENT, scopes={SCORE, LINEITEM}))


def score(user: str, given: float = 5) -> Score:
    return Score(user, "Completed", "FullyGraded", given, 10)


# --- keep-alive -------------------------------------------------------------------------------


async def test_one_request_after_the_other_uses_one_connection(lms, key_store):
    client = make_client(lms, key_store)
    try:
        ags = ags_of(client)
        await ags.line_items(lms.lineitems_url)
        for user in sorted(USERS)[:20]:
            await ags.post_score(lms.lineitem_url, score(user))
    finally:
        await client.aclose()
    # the token, a line item list, 20 scores: all on the first connection
    load = lms.load()
    assert load["request_connections"] == [1] * 22
    assert load["connections"] == 1
    assert client.transport.connections_opened == 1


async def test_concurrent_requests_open_at_most_the_ceiling_and_reuse_them(lms, key_store):
    lms.slow_down(0.02)  # requests overlap
    client = make_client(lms, key_store, concurrency=4, adaptive_concurrency=False)
    try:
        ags = ags_of(client)
        await asyncio.gather(*(ags.post_score(lms.lineitem_url, score(u)) for u in USERS))
    finally:
        await client.aclose()
    assert sum(lms.scores_of(u) for u in USERS) == len(USERS)
    load = lms.load()
    assert load["peak"] <= 4
    assert load["served"] == len(USERS) + 1
    assert load["connections"] <= 4  # 61 requests on at most 4 connections


async def test_closing_the_client_closes_its_connections_and_a_new_request_opens_one(
    lms, key_store
):
    client = make_client(lms, key_store)
    try:
        ags = ags_of(client)
        await ags.post_score(lms.lineitem_url, score("101"))
        await client.transport.close_if_idle()  # what the sync manager does when no sync runs
        await ags.post_score(lms.lineitem_url, score("102"))
    finally:
        await client.aclose()
    # the token and a score on the first connection, the next score on a new one
    assert lms.load()["request_connections"] == [1, 1, 2]


# --- the adaptive limit -----------------------------------------------------------------------


async def test_the_limit_never_exceeds_the_ceiling_at_the_lms(lms, key_store):
    # Three rounds of 60 scores, each round its own learners: the LMS keeps a score only
    # if it is newer than the stored one, in whole seconds as Moodle compares.
    rounds = [{str(n) for n in range(start, start + 60)} for start in (100, 200, 300)]
    lms.reset(set().union(*rounds))
    lms.slow_down(0.01)
    client = make_client(lms, key_store, concurrency=5, start_concurrency=2)
    try:
        ags = ags_of(client)
        for users in rounds:
            await asyncio.gather(*(ags.post_score(lms.lineitem_url, score(u)) for u in users))
    finally:
        await client.aclose()
    limiter = client.transport.limiter
    assert lms.load()["peak"] <= 5 and limiter.peak <= 5
    assert limiter.current <= 5
    assert sum(lms.scores_of(u) for users in rounds for u in users) == 3 * 60


async def test_429_and_503_make_kore_send_fewer_at_once(lms, key_store):
    lms.slow_down(0.005)
    client = make_client(lms, key_store, concurrency=16, start_concurrency=16)
    limiter = client.transport.limiter
    try:
        ags = ags_of(client)
        await ags.post_score(lms.lineitem_url, score("100"))
        before = limiter.current
        lms.refuse_next_score(429, retry_after=0)
        lms.refuse_next_score(503)
        others = USERS - {"100"}
        await asyncio.gather(*(ags.post_score(lms.lineitem_url, score(u)) for u in others))
    finally:
        await client.aclose()
    assert before == 16
    assert limiter.throttled == 2 and limiter.decreases >= 1
    assert limiter.current < 16
    # the refused writes were sent again (the LMS said it did not process them): each once
    assert all(lms.scores_of(u) == 1 for u in USERS)
    assert client.transport.retries == 2


def test_aimd_grows_while_answers_keep_their_speed_and_stays_under_the_ceiling():
    limit = AdaptiveLimit(20, start=2)

    async def rounds(n, latency):
        for _ in range(n):
            slots = [await limit.acquire() for _ in range(limit.current)]
            assert limit.in_flight <= limit.ceiling
            for slot in slots:
                limit.release(slot, latency=latency)

    asyncio.run(rounds(3, 0.05))
    assert limit.current == 16  # slow start: 2, 4, 8, 16
    asyncio.run(rounds(20, 0.05))
    assert limit.current == 20  # never above the ceiling
    assert limit.peak == 20


def test_aimd_halves_once_per_round_on_429_and_shrinks_when_answers_slow_down():
    limit = AdaptiveLimit(64, start=32)

    async def scenario():
        slots = [await limit.acquire() for _ in range(32)]
        # a burst of 429s to requests of one round halves the limit once
        for slot in slots[:10]:
            limit.release(slot, throttled=True)
        assert limit.current == 16 and limit.decreases == 1
        for slot in slots[10:]:
            limit.release(slot, latency=0.02)
        # fast rounds, then a round answered 3x slower: a quarter less
        for latency in (0.02, 0.02, 0.06):
            n = limit.current
            round_slots = [await limit.acquire() for _ in range(n)]
            for slot in round_slots:
                limit.release(slot, latency=latency)
        return n

    n = asyncio.run(scenario())
    assert n == 18 and limit.current == int(18 * 0.75)  # +1, +1, then x0.75
    assert limit.decreases == 2


def test_a_retry_after_holds_every_new_request_until_it_passed():
    limit = AdaptiveLimit(8, start=8)

    async def scenario():
        slot = await limit.acquire()
        limit.release(slot, throttled=True, retry_after=0.3)
        held_from = time.monotonic()
        await limit.acquire()
        return time.monotonic() - held_from

    # the wait is the LMS's, not a speed: at least what Retry-After asked
    assert asyncio.run(scenario()) >= 0.25


def test_fixed_concurrency_does_not_adapt():
    limit = AdaptiveLimit(8, start=2, adaptive=False)

    async def scenario():
        slots = [await limit.acquire() for _ in range(8)]
        for slot in slots:
            limit.release(slot, throttled=True)

    asyncio.run(scenario())
    assert limit.current == 8 and limit.decreases == 0 and limit.throttled == 8


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path):
    return private_ca(tmp_path / "tls")


async def test_an_lms_with_a_private_ca_is_trusted_through_the_hosts_ca_setting(
    key_store, tls, tmp_path, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    users = ("101", "102", "103")
    with built_in_lms(tmp_path / "state", key_store, tls=tls) as lms:
        lms.reset(users)
        client = make_client(lms, key_store)
        try:
            ags = ags_of(client)
            for user in users:
                await ags.post_score(lms.lineitem_url, score(user))
        finally:
            await client.aclose()
        assert lms.base.startswith("https://")
        assert [lms.scores_of(u) for u in users] == [1, 1, 1]
        assert lms.load()["connections"] == 1  # one TLS handshake for the token and three scores


async def test_an_untrusted_certificate_is_a_clear_error_and_nothing_is_sent(
    key_store, tls, tmp_path, monkeypatch
):
    other = private_ca(tmp_path / "other-ca", name="Some other CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca_file))  # trusts another CA only
    with built_in_lms(tmp_path / "state", key_store, tls=tls) as lms:
        lms.reset({"101"})
        client = make_client(lms, key_store)
        try:
            with pytest.raises(LTIServiceError) as info:
                await ags_of(client).post_score(lms.lineitem_url, score("101"))
        finally:
            await client.aclose()
        load = lms.load()
    message = info.value.message
    assert not isinstance(info.value, LMSUnavailable)  # not "try later": a setting to fix
    assert "does not trust the TLS certificate of the LMS at 127.0.0.1" in message
    assert "SSL_CERT_FILE" in message and "update-ca-certificates" in message
    assert "certificate verify failed" in message or "unable to get local issuer" in message
    assert client.transport.attempts == 1  # not retried
    assert load["request_connections"] == []  # no request (no token) ever reached it
