"""How Kore's requests reach the LMS (kore/lti/transport.py, kore/lti/limiter.py):
kept-alive connections, an adaptive limit of requests in flight under the configured
ceiling, and TLS verified against the CAs the host trusts (never turned off).

Against the fake LMS of tests/fake_lms.py, which counts the TCP connections its
requests came on and the requests it handles at once.
"""

import asyncio
import time

import pytest
from fake_lms import LINEITEM, SCORE, FakeLMS

from ananke_hub.keys import KeyStore
from ananke_hub.registration import LMSRegistration
from ananke_hub.testlms.tls import private_ca
from kore.lti import AGSClient, LMSUnavailable, LTIAdvantage, LTIClient, LTIServiceError, Score
from kore.lti.limiter import AdaptiveLimit

ISSUER = "https://lms.example.edu"
CLIENT = "tool-client"
USERS = {str(n) for n in range(100, 160)}


@pytest.fixture
def key_store(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.ensure()
    return store


def make_lms(key_store, **kwargs) -> FakeLMS:
    lms = FakeLMS(jwks=key_store.jwks, client_id=CLIENT, **kwargs).start()
    lms.users = set(USERS)
    return lms


@pytest.fixture
async def lms(key_store):
    fake = make_lms(key_store)
    yield fake
    fake.stop()


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
    assert len(lms.requests) == 22
    assert lms.connections == 1
    assert client.transport.connections_opened == 1


async def test_concurrent_requests_open_at_most_the_ceiling_and_reuse_them(lms, key_store):
    lms.delay = 0.02  # requests overlap
    client = make_client(lms, key_store, concurrency=4, adaptive_concurrency=False)
    try:
        ags = ags_of(client)
        await asyncio.gather(*(ags.post_score(lms.lineitem_url, score(u)) for u in USERS))
    finally:
        await client.aclose()
    assert sum(len(lms.scores_of(lms.launch_item, u)) for u in USERS) == len(USERS)
    assert lms.peak_in_flight <= 4
    assert lms.connections <= 4  # 61 requests on at most 4 connections


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
    assert lms.request_connections == [1, 1, 2]


# --- the adaptive limit -----------------------------------------------------------------------


async def test_the_limit_never_exceeds_the_ceiling_at_the_lms(lms, key_store):
    lms.delay = 0.01
    client = make_client(lms, key_store, concurrency=5, start_concurrency=2)
    try:
        ags = ags_of(client)
        for _ in range(3):
            await asyncio.gather(*(ags.post_score(lms.lineitem_url, score(u)) for u in USERS))
    finally:
        await client.aclose()
    limiter = client.transport.limiter
    assert lms.peak_in_flight <= 5 and limiter.peak <= 5
    assert limiter.current <= 5
    assert sum(len(lms.scores_of(lms.launch_item, u)) for u in USERS) == 3 * len(USERS)


async def test_429_and_503_make_kore_send_fewer_at_once(lms, key_store):
    lms.delay = 0.005
    client = make_client(lms, key_store, concurrency=16, start_concurrency=16)
    limiter = client.transport.limiter
    try:
        ags = ags_of(client)
        await ags.post_score(lms.lineitem_url, score("100"))
        before = limiter.current
        lms.fail("POST", "/scores$", 429, times=1, headers={"Retry-After": "0"})
        lms.fail("POST", "/scores$", 503, times=1)
        others = USERS - {"100"}
        await asyncio.gather(*(ags.post_score(lms.lineitem_url, score(u)) for u in others))
    finally:
        await client.aclose()
    assert before == 16
    assert limiter.throttled == 2 and limiter.decreases >= 1
    assert limiter.current < 16
    # the refused writes were sent again (the LMS said it did not process them): each once
    assert all(len(lms.scores_of(lms.launch_item, u)) == 1 for u in USERS)
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
    key_store, tls, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    lms = make_lms(key_store, tls=tls)
    client = make_client(lms, key_store)
    try:
        ags = ags_of(client)
        for user in ("101", "102", "103"):
            await ags.post_score(lms.lineitem_url, score(user))
    finally:
        await client.aclose()
        lms.stop()
    assert lms.base.startswith("https://")
    assert [len(lms.scores_of(lms.launch_item, u)) for u in ("101", "102", "103")] == [1, 1, 1]
    assert lms.connections == 1  # one TLS handshake for the token and three scores


async def test_an_untrusted_certificate_is_a_clear_error_and_nothing_is_sent(
    key_store, tls, tmp_path, monkeypatch
):
    other = private_ca(tmp_path / "other-ca", name="Some other CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca_file))  # trusts another CA only
    lms = make_lms(key_store, tls=tls)
    client = make_client(lms, key_store)
    try:
        with pytest.raises(LTIServiceError) as info:
            await ags_of(client).post_score(lms.lineitem_url, score("101"))
    finally:
        await client.aclose()
        lms.stop()
    message = info.value.message
    assert not isinstance(info.value, LMSUnavailable)  # not "try later": a setting to fix
    assert "does not trust the TLS certificate of the LMS at 127.0.0.1" in message
    assert "SSL_CERT_FILE" in message and "update-ca-certificates" in message
    assert "certificate verify failed" in message or "unable to get local issuer" in message
    assert client.transport.attempts == 1  # not retried
    assert lms.requests == []  # no request (no token) ever reached it
