"""Hub-level tests: LTI 1.3 launches into a real JupyterHub with its real proxy and Kore,
from the built-in platform, all started by the project's own DemoStack (as `ananke demo`).
"""

import asyncio
import stat
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from hubtest import (
    admin_stack,
    callback,
    forge,
    hub_api,
    hub_log,
    initiate,
    person,
    platform_key,
    wait_for_lab,
)
from lti_browser import LTIBrowser, auto_submit_form
from ltiauthenticator.lti13.handlers import NONCE_STATE_COOKIE_NAME, STATE_COOKIE_NAME

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.keys import KeyStore
from ananke_hub.lti_spec import ROLE_LEARNER
from ananke_hub.roles import Role, parse_roles
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, free_port
from ananke_hub.usernames import hub_username

pytestmark = pytest.mark.slow

ROLES = "https://purl.imsglobal.org/spec/lti/claim/roles"
#: The cookies the callback reads after the LMS's form post (ltiauthenticator's names).
LOGIN_COOKIES = (STATE_COOKIE_NAME, NONCE_STATE_COOKIE_NAME)
DEPLOYMENT = "https://purl.imsglobal.org/spec/lti/claim/deployment_id"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with admin_stack(tmp_path_factory.mktemp("hub")) as stack:
        yield stack


async def test_student_launch_ends_in_running_lab(stack):
    async with LTIBrowser() as browser:
        resp = await browser.launch(stack.platform_url, "3", "homework")
        assert resp.status_code == 200
        assert "/u3" in str(resp.url)  # spawn-pending or the lab: logged in as u3
        lab = await wait_for_lab(browser, stack.hub_url, "u3")
        assert "JupyterLab" in lab.text

    user = (await hub_api(stack, "/users/u3")).json()
    assert user["name"] == "u3"
    assert user["servers"][""]["ready"] is True
    assert user["auth_state"]["sub"] == "3"


async def test_auth_state_is_the_id_token_and_stored_encrypted(stack):
    async with LTIBrowser() as browser:
        await browser.launch(stack.platform_url, "4", "homework")
    user = (await hub_api(stack, "/users/u4")).json()
    auth_state = user["auth_state"]
    assert auth_state["sub"] == "4"
    assert auth_state["email"] == "emilie.duchatelet@example.edu"
    assert parse_roles(auth_state[ROLES]).course_role == Role.LEARNER
    assert auth_state[DEPLOYMENT] == "ananke-demo-deployment"
    # Encrypted at rest: the e-mail address is nowhere in the hub's database files.
    for db_file in stack.layout.root.glob("jupyterhub.sqlite*"):
        assert b"emilie.duchatelet" not in db_file.read_bytes()
    key_file = stack.layout.crypt_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in hub_log(stack)


async def test_instructor_and_ta_roles(stack):
    for sub, expected in [("2", Role.INSTRUCTOR), ("5", Role.TEACHING_ASSISTANT)]:
        async with LTIBrowser() as browser:
            await browser.launch(stack.platform_url, sub, "exam")
        auth_state = (await hub_api(stack, f"/users/u{sub}")).json()["auth_state"]
        assert parse_roles(auth_state[ROLES]).course_role == expected
    ada = parse_roles((await hub_api(stack, "/users/u2")).json()["auth_state"][ROLES])
    assert ada.is_administrator


async def test_kore_jwks_is_public_through_the_hub(stack):
    async with LTIBrowser() as browser:
        resp = await browser.get(f"{stack.hub_url}/services/kore/jwks")
    assert resp.status_code == 200
    kids = [k["kid"] for k in resp.json()["keys"]]
    assert kids == [k.kid for k in KeyStore(stack.layout.kore_keys).load()]


# --- refusals -------------------------------------------------------------------------


def _now():
    return int(time.time())


REFUSALS = [
    # (case id, forge keyword arguments, expected status, words in the page)
    ("wrong-aud", {"overrides": {"aud": "someone-else"}}, 401, "not for this tool"),
    ("wrong-iss", {"overrides": {"iss": "https://evil.example"}}, 400, "Invalid issuer"),
    ("expired", {"overrides": {"exp": _now() - 600, "iat": _now() - 700}}, 400, "expired"),
    ("too-old-iat", {"overrides": {"iat": _now() - 3600}}, 400, "too long ago"),
    ("unknown-deployment", {"overrides": {DEPLOYMENT: "other-deployment"}}, 400, "deployment"),
    ("other-nonce", {"nonce": "f" * 64}, 400, "nonce mismatch"),
    ("no-sub", {"overrides": {"sub": None}}, 400, "sub"),
]


@pytest.mark.parametrize("case, forge_kwargs, status, words", REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_forged_launch_refused(stack, case, forge_kwargs, status, words):
    sub = str(900 + [r[0] for r in REFUSALS].index(case))
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, sub)
        nonce = forge_kwargs.pop("nonce", nonce)
        id_token = forge(stack, nonce, person(sub), **forge_kwargs)
        resp = await callback(browser, stack, id_token, state)
    assert resp.status_code == status, resp.text[:500]
    assert words in resp.text
    assert (await hub_api(stack, f"/users/u{sub}")).status_code == 404  # nothing written
    log = hub_log(stack)
    assert id_token not in log  # tokens never logged
    refusal_lines = [line for line in log.splitlines() if words in line and "oauth_callback" in line]
    assert len(refusal_lines) == 1, refusal_lines


CLOCK_CASES = [
    # (case id, seconds the LMS's clock is ahead of the hub's, expected status, words)
    # Moodle's iat is its clock's whole second: a hub even a fraction of a second behind
    # the LMS saw an id_token from "the future" and refused the launch (400) until the
    # shipped time_leeway tolerated a few seconds (likely the VM test's relaunch 400).
    ("lms-3s-ahead", 3, 302, ""),
    ("lms-2min-ahead", 120, 400, "synchronise the clocks"),
    ("lms-2min-behind", -120, 400, "synchronise the clocks"),
]


@pytest.mark.parametrize("case, ahead, status, words", CLOCK_CASES, ids=[c[0] for c in CLOCK_CASES])
async def test_launch_between_clocks_that_differ(stack, case, ahead, status, words):
    sub = str(980 + [c[0] for c in CLOCK_CASES].index(case))
    lms_now = _now() + ahead
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, sub)
        claims = {"iat": lms_now, "exp": lms_now + 60, ROLES: [ROLE_LEARNER]}  # Moodle: 60 s
        token = forge(stack, nonce, person(sub), overrides=claims)
        resp = await callback(browser, stack, token, state)
    assert resp.status_code == status, resp.text[resp.text.find("<p>") :][:400]
    assert words in resp.text


async def test_subs_differing_in_case_are_two_hub_users(stack):
    """OIDC subs are case-sensitive: `CaseX` and `casex` get a lab and a home each."""
    names = {}
    for sub in ("CaseX", "casex"):
        async with LTIBrowser() as browser:
            state, nonce, _ = await initiate(browser, stack, sub)
            token = forge(stack, nonce, person(sub), overrides={ROLES: [ROLE_LEARNER]})
            resp = await callback(browser, stack, token, state)
            assert resp.status_code == 302, (resp.status_code, resp.text[resp.text.find("<p>") :][:300])
        names[sub] = hub_username(sub)
    assert names == {"CaseX": "_u_case_x", "casex": "ucasex"}
    for sub, name in names.items():
        user = (await hub_api(stack, f"/users/{name}")).json()
        assert user["auth_state"]["sub"] == sub


LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
DEEP_LINKING = {
    "https://purl.imsglobal.org/spec/lti/claim/message_type": "LtiDeepLinkingRequest",
    "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings": {
        "deep_link_return_url": "https://lms.example/return",
        "accept_types": ["ltiResourceLink"],
        "accept_presentation_document_targets": ["window"],
    },
}
NOT_COURSE_LAUNCHES = [
    # (case id, claims, status, words in the page)
    # A content selection by someone who does not teach the course (issue 17)
    ("deep-linking", DEEP_LINKING, 403, "Only teachers"),
    # with azp, as upstream's checks want it for Deep Linking
    ("deep-linking-azp", {**DEEP_LINKING, "azp": DEMO_CLIENT_ID}, 403, "Only teachers"),
    ("deep-linking-learner", {**DEEP_LINKING, ROLES: [LIS + "Learner"]}, 403, "Only teachers"),
    ("mentor-only", {ROLES: [LIS + "Mentor"]}, 403, "(Mentor) gives no access"),
    ("no-role", {ROLES: []}, 403, "(none) gives no access"),
    ("content-developer", {ROLES: [LIS + "ContentDeveloper"]}, 403, "gives no access"),
]


@pytest.mark.parametrize(
    "case, claims, status, words", NOT_COURSE_LAUNCHES, ids=[c[0] for c in NOT_COURSE_LAUNCHES]
)
async def test_launch_that_is_no_course_launch_creates_nothing(stack, case, claims, status, words):
    """A clear page; no course, no grader account, no group, no hub user."""
    sub = str(940 + [c[0] for c in NOT_COURSE_LAUNCHES].index(case))
    link = f"not-a-course-{case}"
    overrides = {"https://purl.imsglobal.org/spec/lti/claim/resource_link": {"id": link}, **claims}
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, sub)
        resp = await callback(browser, stack, forge(stack, nonce, person(sub), overrides=overrides), state)
    assert resp.status_code == status, resp.text[resp.text.find("refused") :][:300]
    assert words in resp.text and "othing was" in resp.text  # what happened, what to do
    course_id = course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link)
    registry = CourseRegistry(url=f"sqlite:///{stack.layout.root / 'courses.sqlite'}")
    try:
        assert registry.get(course_id) is None
    finally:
        registry.close()
    assert (await hub_api(stack, f"/users/grader-{course_id}")).status_code == 404
    assert (await hub_api(stack, f"/groups/nbgrader-{course_id}")).status_code == 404
    assert (await hub_api(stack, f"/users/u{sub}")).status_code == 404


async def test_bad_signature_and_unknown_key(stack, tmp_path):
    other = KeyStore(tmp_path / "attacker").ensure()
    real_kid = platform_key(stack).kid
    cases = [
        ({"kid": real_kid}, "Signature verification failed"),  # right kid, wrong key
        ({}, "does not contain"),  # the attacker's own kid
    ]
    for i, (headers, words) in enumerate(cases):
        sub = f"95{i}"
        async with LTIBrowser() as browser:
            state, nonce, _ = await initiate(browser, stack, sub)
            id_token = forge(stack, nonce, person(sub), key=other, headers=headers)
            resp = await callback(browser, stack, id_token, state)
        assert resp.status_code == 400 and words in resp.text
        assert (await hub_api(stack, f"/users/u{sub}")).status_code == 404


@pytest.mark.parametrize(
    "cookie, words",
    [("lti13authenticator-state", "OAuth state missing"), ("lti13authenticator-nonce-state", "nonce")],
)
async def test_missing_cookie_refused(stack, cookie, words):
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, "960")
        browser.cookies.delete(cookie)
        resp = await callback(browser, stack, forge(stack, nonce, person("960")), state)
    assert resp.status_code == 400 and words in resp.text
    assert (await hub_api(stack, "/users/u960")).status_code == 404


async def test_replayed_launch_refused(stack):
    """A captured id_token posted again with the captured cookies is refused."""
    callback_url = f"{stack.hub_url}/hub/lti13/oauth_callback"
    async with LTIBrowser() as browser:
        page = await browser.launch(stack.platform_url, "3", "exam", stop_before=callback_url)
        form = auto_submit_form(page)
        captured = {c.name: c.value for c in browser.cookies.jar}
        first = await browser.submit_form(page, form=form, stop_before=stack.hub_url)
        assert first.status_code == 302
    async with LTIBrowser() as attacker:
        for name, value in captured.items():
            attacker.cookies.set(name, value, domain="127.0.0.1")
        replay = await attacker.submit_form(page, form=form, stop_before=stack.hub_url)
    assert replay.status_code == 400
    assert "already used" in replay.text


async def test_replayed_launch_refused_after_a_hub_restart(tmp_path):
    """A restarted hub refuses nonces made before its start (it has not seen their
    uses: used nonces are kept in memory): a restart does not reopen the window."""
    async with admin_stack(tmp_path) as stack:
        callback_url = f"{stack.hub_url}/hub/lti13/oauth_callback"
        async with LTIBrowser() as browser:
            page = await browser.launch(stack.platform_url, "3", "exam", stop_before=callback_url)
            form = auto_submit_form(page)
            captured = {c.name: c.value for c in browser.cookies.jar}
            first = await browser.submit_form(page, form=form, stop_before=stack.hub_url)
            assert first.status_code == 302
        await stack.restart_hub()
        async with LTIBrowser() as attacker:
            for name, value in captured.items():
                attacker.cookies.set(name, value, domain="127.0.0.1")
            replay = await attacker.submit_form(page, form=form, stop_before=stack.hub_url)
        assert replay.status_code == 400, replay.status_code
        assert "started before the hub restarted; launch again" in replay.text
        async with LTIBrowser() as browser:  # the hub itself works after the restart
            resp = await browser.launch(stack.platform_url, "3", "exam")
            assert "/u3" in str(resp.url)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"iss": "https://evil.example"}, "not the LMS this hub is registered with"),
        ({"client_id": "unknown-client"}, "not registered"),
        ({"lti_deployment_id": "other"}, "not allowed"),
        ({"login_hint": None}, "login_hint"),
    ],
)
async def test_login_initiation_refused(stack, fields, words):
    async with LTIBrowser() as browser:
        _, _, resp = await initiate(browser, stack, "970", **fields)
    assert resp.status_code == 400 and words in resp.text


async def test_hub_login_page_points_to_the_lms(stack):
    async with LTIBrowser() as browser:
        resp = await browser.get(f"{stack.hub_url}/hub/lti13/oauth_login")
    assert resp.status_code == 400
    assert "start from the Jupyter activity" in resp.text


async def test_hub_still_serves_after_refusals(stack):
    async with LTIBrowser() as browser:
        assert (await browser.get(f"{stack.hub_url}/hub/health")).status_code == 200
        resp = await browser.launch(stack.platform_url, "4", "exam")
        assert "/u4" in str(resp.url)


# --- the login's cookies across the LMS's cross-site form post ----------------------------


def login_cookies(resp) -> dict:
    """The state and nonce cookies the login initiation sets, as parsed morsels."""
    found = {}
    for header in resp.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(header)
        found.update({n: m for n, m in jar.items() if n in LOGIN_COOKIES})
    return found


@pytest.fixture(scope="module")
async def https_stack(tmp_path_factory):
    """A hub configured as behind a reverse proxy that terminates TLS: the documented
    setting (00_base.py, 30_lms.py). The hub's own proxy does not pass a reverse proxy's
    X-Forwarded-Proto on (it sends ",http"), so "auto" would see http here."""
    config = {"AnankeLTI13Authenticator": {"uri_scheme": "https"}}
    async with admin_stack(tmp_path_factory.mktemp("https-hub"), extra_config=config) as s:
        yield s


async def initiation_cookies(hub, scheme: str) -> dict:
    """Initiate a login at ``hub``; its state and nonce cookies, checked to be the two the
    callback reads, after checking that the LMS will post back to a ``scheme`` URL."""
    data = {
        "iss": hub.platform_url,
        "login_hint": "3",
        "target_link_uri": f"{hub.hub_url}/hub/",
        "client_id": DEMO_CLIENT_ID,
        "lti_deployment_id": DEMO_DEPLOYMENT_ID,
        "lti_message_hint": "homework",
    }
    # A browser's top-level window (Fetch Metadata), where the cookie-based login runs.
    headers = {"Sec-Fetch-Dest": "document"}
    async with httpx.AsyncClient(follow_redirects=False, timeout=30, headers=headers) as client:
        resp = await client.post(f"{hub.hub_url}/hub/lti13/oauth_login", data=data)
    assert resp.status_code == 302, resp.text
    # Where the LMS will post: the cookies must suit that URL's scheme.
    redirect_uri = parse_qs(urlparse(resp.headers["location"]).query)["redirect_uri"][0]
    assert redirect_uri.startswith(f"{scheme}://"), redirect_uri
    cookies = login_cookies(resp)
    assert set(cookies) == set(LOGIN_COOKIES), resp.headers.get_list("set-cookie")
    for name, morsel in cookies.items():
        assert morsel["httponly"], name
    return cookies


async def test_login_cookies_go_along_the_lms_cross_site_post_under_https(https_stack):
    """The LMS auto-posts the id_token to the hub from its own site (Moodle's auth.php
    form): the state and nonce cookies must come along on that cross-site POST, so under
    https they say SameSite=None; Secure explicitly (Chrome lets a cookie without
    SameSite through such a POST only in its first 2 minutes)."""
    for morsel in (await initiation_cookies(https_stack, "https")).values():
        assert morsel["secure"] and morsel["samesite"] == "None", morsel.OutputString()


async def test_login_cookies_under_plain_http_claim_neither_secure_nor_samesite_none(stack):
    """A Secure cookie would not come back over http, and browsers refuse SameSite=None
    without Secure: under http (the demo) the cookies stay as upstream makes them."""
    for morsel in (await initiation_cookies(stack, "http")).values():
        assert not morsel["secure"], morsel.OutputString()
        assert morsel["samesite"].lower() != "none", morsel.OutputString()


# --- the platform's keyset down or slow: own hubs, so the key cache starts cold ----------


async def test_platform_keyset_down(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/jwks"
    down = {"LMSRegistration": {"jwks_url": dead}}
    async with admin_stack(tmp_path, extra_config=down) as stack:
        async with LTIBrowser() as browser:
            resp = await browser.launch(stack.platform_url, "3", "homework")
            assert resp.status_code == 424
            assert "cannot be reached" in resp.text
            assert (await browser.get(f"{stack.hub_url}/hub/health")).status_code == 200
        assert (await hub_api(stack, "/users/u3")).status_code == 404


async def test_slow_keyset_does_not_block_the_hub(tmp_path):
    """While a launch waits for a slow LMS keyset, the hub answers other requests."""
    async with admin_stack(tmp_path, platform_args=["--jwks-delay=4"]) as stack:
        callback_url = f"{stack.hub_url}/hub/lti13/oauth_callback"
        async with LTIBrowser() as student, LTIBrowser() as other:
            page = await student.launch(stack.platform_url, "3", "homework", stop_before=callback_url)
            launch = asyncio.ensure_future(
                student.submit_form(page, form=auto_submit_form(page), stop_before=stack.hub_url)
            )
            await asyncio.sleep(0.5)  # the callback is now waiting for the keyset
            health = await other.get(f"{stack.hub_url}/hub/health")
            assert health.status_code == 200
            assert not launch.done()  # the hub answered while the launch was still waiting
            resp = await launch
            assert resp.status_code == 302
