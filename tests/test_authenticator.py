"""The authenticator's own rules, without a hub: config, usernames, initiation checks, keys."""

import asyncio
import json
import re

import jwt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from ltiauthenticator.lti13.error import LoginError
from tornado.web import Application, RequestHandler
from traitlets import TraitError
from traitlets.config import Config

from ananke_hub.auth import AnankeLTI13Authenticator
from ananke_hub.auth.handlers import LaunchRefused
from ananke_hub.auth.platform_keys import PlatformKeySet, PlatformKeysUnavailable, UnknownSigningKey
from ananke_hub.auth.replay import NonceFromEarlierProcess, NonceRegistry
from ananke_hub.keys import KeyStore
from ananke_hub.usernames import UsernameRule, hub_username

ISS = "https://lms.example.edu"


def make_auth(**registration) -> AnankeLTI13Authenticator:
    c = Config()
    c.LMSRegistration.issuer = ISS
    c.LMSRegistration.client_id = "tool-1"
    c.LMSRegistration.authorize_url = ISS + "/auth"
    c.LMSRegistration.jwks_url = ISS + "/jwks"
    for key, value in registration.items():
        c.LMSRegistration[key] = value
    return AnankeLTI13Authenticator(config=c)


def test_settings_come_from_the_registration():
    auth = make_auth()
    assert auth.issuer == ISS
    assert auth.client_id == {"tool-1"}
    assert auth.authorize_url == ISS + "/auth"
    assert auth.jwks_endpoint == ISS + "/jwks"
    assert auth.enable_auth_state is False  # set by the shipped hub config, not the class


def test_client_id_list_and_string():
    assert make_auth(client_id=["a", "b"]).client_id == {"a", "b"}
    assert make_auth(client_id="abc").client_id == {"abc"}


def test_upstream_settings_still_win():
    c = Config()
    c.LMSRegistration.issuer = ISS
    c.LTI13Authenticator.issuer = "https://other.example"
    assert AnankeLTI13Authenticator(config=c).issuer == "https://other.example"


def test_allow_all_unless_allow_list():
    assert make_auth().allow_all is True
    c = Config()
    c.Authenticator.allowed_users = {"u1"}
    assert AnankeLTI13Authenticator(config=c).allow_all is False


@pytest.mark.parametrize(
    "token, name",
    [
        ({"sub": "123"}, "u123"),
        ({"sub": 7}, "u7"),
        ({"sub": "Alice_B"}, "_u_alice___b"),  # upper case escaped, not lowered
        ({"sub": "alice_b"}, "ualice_b"),
        ({"sub": "", "email": "x@y"}, None),
        ({}, None),
    ],
)
def test_username_rule(token, name):
    auth = make_auth()
    if name is None:
        with pytest.raises(LoginError):
            auth.get_username(token)
    else:
        assert auth.get_username(token) == name


def test_unsafe_subs_become_hashed_names():
    auth = make_auth()
    uuid_sub = "a6b1c2d3-0000-4444-8888-123456789abc"  # Canvas-style: too long for a unit user
    name = auth.get_username({"sub": uuid_sub})
    assert name.startswith("u") and len(name) <= 31
    assert name == auth.get_username({"sub": uuid_sub})  # stable
    for bad in ["../../etc", "a b", "x;rm", "Ünïcode"]:
        n = auth.get_username({"sub": bad})
        assert n.isascii() and "/" not in n and " " not in n and len(n) <= 31
    assert auth.get_username({"sub": "a/b"}) != auth.get_username({"sub": "a_b"})


# systemd's strict user name rule (https://systemd.io/USER_NAMES/), lower case for JupyterHub.
SYSTEMD_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
PREFIXES = st.sampled_from(["u", "", "lms-", "s_"])
# Letters of both cases, digits, the safe punctuation, and characters that lower() maps
# onto ASCII (Kelvin sign, dotted I) or that are no name characters at all.
SUB_CHARS = st.sampled_from(list("aAbBcCxXzZ019_-") + ["\u212a", "\u0130", "ß", " ", "/", "."])
SUBS = st.text(SUB_CHARS, min_size=1, max_size=40)


@st.composite
def case_variants(draw):
    """A sub and some of its case variants: the collisions of a lower-casing rule."""
    base = draw(st.text(st.sampled_from(list("abcxz019_-")), min_size=1, max_size=32))
    masks = draw(st.lists(st.lists(st.booleans(), min_size=len(base), max_size=len(base)), min_size=1, max_size=6))
    return [base] + ["".join(c.upper() if up else c for c, up in zip(base, m, strict=True)) for m in masks]


@given(prefix=PREFIXES, variants=case_variants(), others=st.lists(SUBS, max_size=8))
def test_distinct_subs_give_distinct_valid_names(prefix, variants, others):
    subs = set(variants) | set(others)
    names = {hub_username(s, prefix) for s in subs}
    assert len(names) == len(subs)
    for name in names:
        assert SYSTEMD_NAME.match(name), name
        assert not name.startswith("grader-")


@given(prefix=PREFIXES, sub=st.integers(min_value=0, max_value=10**20))
def test_numeric_subs_keep_their_names(prefix, sub):
    """Moodle's ids: `u` + the id, as in every earlier release."""
    assume(len(prefix + str(sub)) <= 31 and prefix)
    assert hub_username(str(sub), prefix) == prefix + str(sub)


@given(sub=st.from_regex(r"[a-z][a-z0-9_-]{0,29}", fullmatch=True))
def test_lower_case_subs_keep_their_names(sub):
    assume(not re.fullmatch(r"[0-9a-f]{30}", sub))  # shaped like a hashed name: hashed
    assert hub_username(sub) == "u" + sub


def test_escaped_and_hashed_names():
    assert hub_username("CaseX") == "_u_case_x"
    assert hub_username("casex") == "ucasex"
    assert hub_username("a_B") == "_ua___b"
    assert hub_username("\u212a") != hub_username("k")  # Kelvin sign lowers to "k"
    long = "Ab" * 20  # escaped it would be too long: hashed, still not the lower-case twin's
    assert hub_username(long) != hub_username(long.lower())
    # A sub shaped like a hashed name is hashed itself, so nobody can pick another's name.
    victim = hub_username("x" * 40)
    assert hub_username(victim[1:]) != victim
    # With an empty prefix, nobody becomes a course's grader account.
    assert not hub_username("grader-c-0123456789abcdef", "").startswith("grader-")


@pytest.mark.parametrize("prefix", ["U", "1a", "_u", "toolongprefix", "a b", "grader-"])
def test_unusable_prefix_refused(prefix):
    c = Config()
    c.AnankeLTI13Authenticator.username_prefix = prefix
    with pytest.raises(TraitError, match="username_prefix"):
        AnankeLTI13Authenticator(config=c)


@pytest.mark.parametrize("section", ["AnankeLTI13Authenticator", "LTI13Authenticator", "Authenticator"])
def test_username_rule_resolved_from_any_section(section):
    """Kore's rule is the authenticator's, whichever section the admin wrote."""
    c = Config()
    c[section].username_prefix = "lms-"
    if section != "Authenticator":
        c[section].username_key = "custom_username"
    auth = AnankeLTI13Authenticator(config=c)
    rule = UsernameRule.from_config(c)
    assert rule == auth.username_rule
    assert rule.prefix == "lms-"
    assert rule.key == ("sub" if section == "Authenticator" else "custom_username")


def test_username_rule_applies_the_username_map():
    c = Config()
    c.Authenticator.username_map = {"u5": "teacher"}
    rule = UsernameRule.from_config(c)
    assert rule.username("5") == "teacher"
    assert rule.username("6") == "u6"


def test_username_from_custom_claim():
    c = Config()
    c.AnankeLTI13Authenticator.username_key = "custom_username"
    c.AnankeLTI13Authenticator.username_prefix = ""
    auth = AnankeLTI13Authenticator(config=c)
    claim = "https://purl.imsglobal.org/spec/lti/claim/custom"
    assert auth.get_username({"sub": "9", claim: {"username": "jdoe"}}) == "jdoe"
    assert auth.get_username({"sub": "9"}) != "jdoe"  # falls back to sub


def test_login_initiation_checks():
    auth = make_auth(client_id=["tool-1"], deployment_ids=["d1"])
    ok = {"iss": ISS, "login_hint": "x", "target_link_uri": "https://hub/hub/"}
    assert auth.check_login_initiation({**ok, "client_id": "tool-1"}) == "tool-1"
    # a platform that omits client_id gets the only configured one (not "None")
    assert auth.check_login_initiation(ok) == "tool-1"
    with pytest.raises(LaunchRefused, match="issuer"):
        auth.check_login_initiation({**ok, "iss": "https://evil.example"})
    with pytest.raises(LaunchRefused, match="client_id"):
        auth.check_login_initiation({**ok, "client_id": "other"})
    with pytest.raises(LaunchRefused, match="deployment"):
        auth.check_login_initiation({**ok, "lti_deployment_id": "d2"})
    assert auth.check_login_initiation({**ok, "lti_deployment_id": "d1"}) == "tool-1"
    two = make_auth(client_id=["a", "b"])
    with pytest.raises(LaunchRefused, match="several"):
        two.check_login_initiation(ok)


def test_deployment_check():
    claim = "https://purl.imsglobal.org/spec/lti/claim/deployment_id"
    strict = make_auth(deployment_ids=["d1"])
    strict.check_deployment({claim: "d1"})
    for bad in ["d2", None, ["d1"]]:
        with pytest.raises(LaunchRefused):
            strict.check_deployment({claim: bad})
    make_auth().check_deployment({claim: "anything"})  # no list configured: any


def test_nonce_registry():
    now = [100.0]
    reg = NonceRegistry(ttl=60, clock=lambda: now[0])
    state = reg.new_state()
    assert reg.use("n1", state) is True
    assert reg.use("n1", state) is False  # a replay
    assert reg.use("n2", state) is True
    now[0] += 59
    assert reg.use("n1", state) is False  # still inside its window
    now[0] += 2
    assert reg.use("n3", state) is True
    assert len(reg) == 1  # n1 and n2 expired: pruned at that use
    assert reg.use("n1", state) is True  # past its window (the token is too old by now)


def test_a_nonce_made_by_an_earlier_hub_process_is_refused():
    """A restarted hub has forgotten the nonces its predecessor saw: it refuses every
    nonce it did not make itself, so a launch captured before the restart cannot be
    replayed after it; its own nonces are new, so its memory has seen all their uses."""
    before, after = NonceRegistry(ttl=60), NonceRegistry(ttl=60)
    assert before.epoch != after.epoch
    state = before.new_state()
    assert before.use("n", state) is True
    with pytest.raises(NonceFromEarlierProcess):
        after.use("n", state)
    for forged in ("", "no-epoch", after.epoch, "x" + after.epoch + ".abc"):
        with pytest.raises(NonceFromEarlierProcess):
            after.use("m", forged)
    assert after.use("n", after.new_state()) is True


# --- platform keyset ---------------------------------------------------------------


class JWKSServer:
    """A local keyset endpoint whose answers and delay the test controls."""

    def __init__(self, store: KeyStore):
        self.store = store
        self.status = 200
        self.body = None
        self.delay = 0.0
        self.hits = 0

    def app(self):
        server = self

        class Handler(RequestHandler):
            async def get(self):
                server.hits += 1
                if server.delay:
                    await asyncio.sleep(server.delay)
                self.set_status(server.status)
                self.write(server.body if server.body is not None else json.dumps(server.store.jwks()))

        return Application([("/jwks", Handler)])


@pytest.fixture
async def jwks(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.ensure()
    server = JWKSServer(store)
    http = server.app().listen(0, "127.0.0.1")
    port = next(iter(http._sockets.values())).getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/jwks"
    yield server
    http.stop()


async def test_keyset_fetched_once_for_concurrent_launches(jwks):
    keys = PlatformKeySet(jwks.url)
    jwks.delay = 0.2
    kid = jwks.store.signing_key().kid
    results = await asyncio.gather(*(keys.get_key(kid) for _ in range(20)))
    assert jwks.hits == 1
    assert {r.key_id for r in results} == {kid}
    await keys.get_key(kid)
    assert jwks.hits == 1  # cached


async def test_unknown_kid_refetches_after_rotation(jwks):
    keys = PlatformKeySet(jwks.url, min_refetch_interval=0)
    old = jwks.store.signing_key().kid
    await keys.get_key(old)
    new = jwks.store.rotate().kid
    key = await keys.get_key(new)
    assert key.key_id == new and jwks.hits == 2
    with pytest.raises(UnknownSigningKey, match="does not contain"):
        await keys.get_key("no-such-kid")


async def test_unknown_kid_refetch_is_rate_limited(jwks):
    keys = PlatformKeySet(jwks.url, min_refetch_interval=3600)
    await keys.get_key(jwks.store.signing_key().kid)
    for _ in range(5):
        with pytest.raises(UnknownSigningKey):
            await keys.get_key("forged-kid")
    assert jwks.hits == 1  # forged kids cannot make the hub hammer the LMS


@pytest.mark.parametrize(
    "status, body, match",
    [(500, "oops", "answered HTTP 500"), (200, "not json", "not a valid JWKS"), (200, '{"keys": 1}', "not a valid JWKS")],
)
async def test_keyset_errors(jwks, status, body, match):
    jwks.status, jwks.body = status, body
    with pytest.raises(PlatformKeysUnavailable, match=match):
        await PlatformKeySet(jwks.url).get_key("k")


async def test_keyset_unreachable_and_slow(jwks):
    from ananke_hub.testlms.demo import free_port

    with pytest.raises(PlatformKeysUnavailable, match="cannot be reached|answered"):
        await PlatformKeySet(f"http://127.0.0.1:{free_port()}/jwks", timeout=2).get_key("k")
    jwks.delay = 3
    with pytest.raises(PlatformKeysUnavailable, match="did not answer within 0.5 s"):
        await PlatformKeySet(jwks.url, timeout=0.5).get_key("k")


async def test_cached_keys_survive_an_lms_outage(jwks):
    keys = PlatformKeySet(jwks.url, max_age=0)
    kid = jwks.store.signing_key().kid
    await keys.get_key(kid)
    jwks.status, jwks.body = 503, "down"
    assert (await keys.get_key(kid)).key_id == kid  # stale but known: launch goes on
    with pytest.raises(PlatformKeysUnavailable):
        await keys.get_key("other")


async def test_key_verifies_a_platform_signature(jwks):
    signing = jwks.store.signing_key()
    token = jwt.encode({"a": 1}, signing.private_pem, algorithm="RS256", headers={"kid": signing.kid})
    key = await PlatformKeySet(jwks.url).get_key(jwt.get_unverified_header(token)["kid"])
    assert jwt.decode(token, key.key, algorithms=["RS256"]) == {"a": 1}
