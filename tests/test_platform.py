"""The built-in LTI 1.3 test platform, run as a real `python -m ananke_hub.testlms`."""

import asyncio
import html
import re
import selectors
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from lti_browser import LTIBrowser, auto_submit_form, parse_forms
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.httputil import url_concat
from tornado.netutil import bind_sockets

from ananke_hub.keys import KeyStore
from ananke_hub.testlms import constants as C
from ananke_hub.testlms import demo_data
from ananke_hub.testlms.settings import PlatformSettings
from ananke_hub.testlms.tokens import launch_claims, sign_id_token

CLIENT_ID = "client-abc"
DEPLOYMENT_ID = "deploy-7"
HUB = "http://127.0.0.1:9"  # never contacted: these tests read the forms aimed at it


def tool_urls(base: str) -> dict[str, str]:
    return {
        "tool_login_url": f"{base}/hub/lti13/oauth_login",
        "tool_redirect_uri": f"{base}/hub/lti13/oauth_callback",
        "tool_target_link_uri": f"{base}/hub/",
        "tool_jwks_url": f"{base}/services/kore/jwks",
    }


TOOL = tool_urls(HUB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Platform:
    url: str
    first_line: str


@contextmanager
def running_platform(state_dir, port=0, flags=(), **options):
    """Start the platform as a subprocess; yield once it printed its URL.

    ``options`` become `--name=value`; ``flags`` are passed as they are (`--test-api`).
    """
    options = {"client_id": CLIENT_ID, "deployment_id": DEPLOYMENT_ID, **TOOL, **options}
    argv = [
        sys.executable,
        "-m",
        "ananke_hub.testlms",
        f"--port={port}",
        f"--state-dir={state_dir}",
    ]
    argv += [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    argv += list(flags)
    log_path = state_dir.parent / f"{state_dir.name}-platform.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=30)
        line = proc.stdout.readline() if ready else ""
        match = re.search(r"https?://\S+", line)
        if not match:
            proc.kill()
            raise RuntimeError(f"The platform did not start: {line!r}\n{log_path.read_text()}")
        yield Platform(match.group(0), line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    port = free_port()
    with running_platform(tmp_path_factory.mktemp("platform") / "state", port=port) as p:
        assert p.url == f"http://127.0.0.1:{port}"
        yield p


def settings_of(platform: Platform) -> PlatformSettings:
    return PlatformSettings(
        issuer=platform.url,
        client_id=CLIENT_ID,
        deployment_id=DEPLOYMENT_ID,
        tool_target_link_uri=TOOL["tool_target_link_uri"],
    )


async def login(b: LTIBrowser, platform: Platform, user="3", link="homework") -> httpx.Response:
    """Click Launch for (user, link); return the login-initiation page, not followed."""
    page = await b.get(platform.url + "/")
    (form,) = [
        f
        for f in parse_forms(page)
        if f.fields.get("user") == user and f.fields.get("link") == link
    ]
    return await b.submit_form(page, form=form)


def auth_params(**changes) -> dict:
    params = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": CLIENT_ID,
        "redirect_uri": TOOL["tool_redirect_uri"],
        "login_hint": "3",
        "lti_message_hint": "homework",
        "nonce": "nonce-123",
        "state": "state-456",
        **changes,
    }
    return {k: v for k, v in params.items() if v is not None}


def page_text(resp: httpx.Response) -> str:
    return html.unescape(resp.text)


async def verify(b: LTIBrowser, platform: Platform, id_token: str) -> dict:
    """Verify an id_token as a tool does: the key named by `kid` from the platform's JWKS."""
    jwks = (await b.get(platform.url + "/jwks")).json()
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    return jwt.decode(
        id_token, key.key, algorithms=["RS256"], audience=CLIENT_ID, issuer=platform.url
    )


# --- the launch page and login initiation


async def test_launch_page_lists_people_and_activities(platform):
    assert "listening on" in platform.first_line
    async with LTIBrowser() as b:
        page = await b.get(platform.url + "/")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    text = page_text(page)
    for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Émilie du Châtelet"):
        assert name in text
    for title in ("Data Science 101", "Homework", "Exam"):
        assert title in text
    assert f"{platform.url}/auth" in text and f"{platform.url}/jwks" in text
    forms = [f for f in parse_forms(page) if f.action == platform.url + "/launch"]
    selects = [f for f in parse_forms(page) if f.action == platform.url + "/deeplink"]
    assert {(f.fields["user"], f.fields["context"]) for f in selects} == {
        (sub, "ds101") for sub in ("2", "3", "4", "5")
    }
    assert {(f.fields["user"], f.fields["link"]) for f in forms} == {
        (sub, link) for sub in ("2", "3", "4", "5") for link in ("homework", "exam")
    }
    assert all(f.method == "POST" and f.action == platform.url + "/launch" for f in forms)
    assert all(f.fields["_xsrf"] for f in forms)
    assert 'aria-label="Launch Exam as Grace Hopper"' in page.text


async def test_launch_initiates_login_at_the_tool(platform):
    async with LTIBrowser() as b:
        resp = await login(b, platform, user="4", link="exam")
        assert resp.status_code == 200
        form = auto_submit_form(resp)
        assert form is not None and form.method == "POST"
        assert form.action == TOOL["tool_login_url"]
        assert form.fields == {
            "iss": platform.url,
            "login_hint": "4",
            "target_link_uri": TOOL["tool_target_link_uri"],
            "client_id": CLIENT_ID,
            "lti_deployment_id": DEPLOYMENT_ID,
            "lti_message_hint": "exam",
        }
        assert "<noscript>" in resp.text and "Continue</button>" in resp.text
        assert b.cookies.get("ananke-platform-user")
        assert not any(c.name == "_xsrf" for c in b.cookies.jar)  # the hub's name stays free


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"user": "99"}, "Unknown user"),
        ({"link": "nope"}, "Unknown activity"),
    ],
)
async def test_launch_refuses_unknown_user_or_link(platform, fields, message):
    async with LTIBrowser() as b:
        page = await b.get(platform.url + "/")
        resp = await b.submit_form(page, fields=fields)
    assert resp.status_code == 400
    assert message in page_text(resp)


async def test_launch_needs_the_xsrf_token(platform):
    async with LTIBrowser() as b:
        page = await b.get(platform.url + "/")
        resp = await b.submit_form(page, fields={"_xsrf": None})
    assert resp.status_code == 403
    assert "ananke-platform-user" not in resp.headers.get("set-cookie", "")


# --- the OIDC authorization endpoint


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"scope": "profile"}, "scope must be 'openid'"),
        (
            {"scope": None},
            "scope must be 'openid' (IMS Security Framework 1.0 section 5.1.1.2); it is missing",
        ),
        ({"response_type": "code"}, "response_type must be 'id_token'"),
        ({"response_mode": "fragment"}, "response_mode must be 'form_post'"),
        ({"prompt": "login"}, "prompt must be 'none'"),
        ({"prompt": None}, "prompt must be 'none'"),
        ({"client_id": "someone-else"}, "Unknown client_id 'someone-else'"),
        ({"client_id": None}, "Unknown client_id None"),
        ({"redirect_uri": TOOL["tool_redirect_uri"] + "/x"}, "is not the registered one"),
        ({"redirect_uri": "http://evil.example/cb"}, "is not the registered one"),
        ({"redirect_uri": None}, "is not the registered one"),
        ({"login_hint": None}, "login_hint is missing"),
        (
            {"login_hint": "4"},
            "login_hint '4' is not the person logged in to the platform (Alan Turing)",
        ),
        ({"lti_message_hint": "nope"}, "lti_message_hint 'nope' names no activity"),
        ({"lti_message_hint": None}, "lti_message_hint None names no activity"),
        ({"nonce": None}, "nonce is missing"),
        ({"nonce": ""}, "nonce is missing"),
    ],
)
async def test_auth_refuses_bad_requests(platform, changes, message):
    async with LTIBrowser() as b:
        await login(b, platform, user="3")
        resp = await b.get(url_concat(platform.url + "/auth", auth_params(**changes)))
    assert resp.status_code == 400
    assert message in page_text(resp)
    assert parse_forms(resp) == [] and "eyJ" not in resp.text  # no id_token, no form


async def test_auth_refuses_a_browser_without_platform_session(platform):
    async with LTIBrowser() as b:
        resp = await b.get(url_concat(platform.url + "/auth", auth_params()))
    assert resp.status_code == 400
    assert "No one is logged in to the platform" in page_text(resp)


async def test_auth_refuses_a_forged_session_cookie(platform):
    async with LTIBrowser() as b:
        await login(b, platform, user="3")
        b.cookies.set("ananke-platform-user", "4", domain="127.0.0.1")
        resp = await b.get(url_concat(platform.url + "/auth", auth_params(login_hint="4")))
    assert resp.status_code == 400
    assert "No one is logged in" in page_text(resp)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_auth_answers_with_a_signed_id_token(platform, method):
    async with LTIBrowser() as b:
        await login(b, platform, user="3", link="homework")
        if method == "GET":
            resp = await b.get(platform.url + "/auth?" + urlencode(auth_params()))
        else:
            resp = await b.post(platform.url + "/auth", auth_params())
        assert resp.status_code == 200
        form = auto_submit_form(resp)
        assert form.action == TOOL["tool_redirect_uri"] and form.method == "POST"
        assert set(form.fields) == {"id_token", "state"}
        assert form.fields["state"] == "state-456"
        claims = await verify(b, platform, form.fields["id_token"])

    assert claims["sub"] == "3" and claims["nonce"] == "nonce-123"
    assert claims["aud"] == CLIENT_ID and claims["iss"] == platform.url
    assert claims["exp"] - claims["iat"] == 60
    assert claims["name"] == "Alan Turing" and claims["email"] == "alan.turing@example.edu"
    assert claims[C.MESSAGE_TYPE] == "LtiResourceLinkRequest"
    assert claims[C.VERSION] == "1.3.0"
    assert claims[C.DEPLOYMENT_ID] == DEPLOYMENT_ID
    assert claims[C.TARGET_LINK_URI] == TOOL["tool_target_link_uri"]
    assert claims[C.RESOURCE_LINK] == {"id": "homework", "title": "Homework"}
    assert claims[C.CONTEXT]["id"] == "ds101" and claims[C.CONTEXT]["label"] == "DS101"
    assert claims[C.CONTEXT]["title"] == "Data Science 101"
    assert claims[C.ROLES] == ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]
    assert claims[C.CUSTOM] == {"username": "aturing"}
    assert claims[C.AGS_ENDPOINT] == {
        "scope": [
            "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
            "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
            "https://purl.imsglobal.org/spec/lti-ags/scope/score",
        ],
        "lineitems": f"{platform.url}/ags/ds101/lineitems",
        "lineitem": f"{platform.url}/ags/ds101/lineitems/homework/lineitem?type_id=1",
    }
    assert claims[C.NRPS] == {
        "context_memberships_url": f"{platform.url}/nrps/ds101/memberships",
        "service_versions": ["2.0"],
    }
    # The platform builds its launches with the function tests use to craft their own.
    assert claims == launch_claims(
        settings_of(platform), demo_data.ALAN, demo_data.HOMEWORK, "nonce-123", now=claims["iat"]
    )


async def test_auth_without_state_posts_only_the_id_token(platform):
    async with LTIBrowser() as b:
        await login(b, platform, user="5", link="exam")
        resp = await b.get(
            url_concat(
                platform.url + "/auth",
                auth_params(state=None, login_hint="5", lti_message_hint="exam"),
            )
        )
        form = auto_submit_form(resp)
        assert set(form.fields) == {"id_token"}
        claims = await verify(b, platform, form.fields["id_token"])
    assert claims[C.ROLES] == [C.ROLE_INSTRUCTOR, C.ROLE_TEACHING_ASSISTANT]
    assert claims[C.RESOURCE_LINK]["id"] == "exam"


# --- keys


async def test_keys_persist_across_restarts(tmp_path):
    state = tmp_path / "state"
    kids = []
    for _ in range(2):
        with running_platform(state) as p:
            async with httpx.AsyncClient() as c:
                kids.append([k["kid"] for k in (await c.get(p.url + "/jwks")).json()["keys"]])
    assert len(kids[0]) == 1
    assert kids[0] == kids[1]
    assert [key.kid for key in KeyStore(state / "keys").load()] == kids[0]


async def test_rotation_applies_without_restart(tmp_path):
    state = tmp_path / "state"
    with running_platform(state) as p:
        async with LTIBrowser() as b:
            (old,) = [k["kid"] for k in (await b.get(p.url + "/jwks")).json()["keys"]]
            new = KeyStore(state / "keys").rotate().kid
            assert [k["kid"] for k in (await b.get(p.url + "/jwks")).json()["keys"]] == [old, new]
            await login(b, p)
            resp = await b.get(url_concat(p.url + "/auth", auth_params()))
            id_token = auto_submit_form(resp).fields["id_token"]
            assert jwt.get_unverified_header(id_token)["kid"] == new


async def test_jwks_delay_holds_the_keyset_but_not_the_platform(tmp_path):
    with running_platform(tmp_path / "state", jwks_delay=3) as p:
        async with httpx.AsyncClient(timeout=30) as c:
            slow = asyncio.create_task(c.get(p.url + "/jwks"))
            await asyncio.sleep(0.2)  # let the keyset request reach the platform first
            page = await c.get(p.url + "/")
            assert page.status_code == 200
            assert not slow.done()  # the keyset is still held back
            jwks = (await slow).json()
    assert len(jwks["keys"]) == 1


def test_start_up_names_missing_settings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ananke_hub.testlms", f"--state-dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--tool-login-url, --tool-redirect-uri, --tool-target-link-uri" in result.stderr


# --- tokens.py, the API other tests use to forge launches


def test_launch_claims_overrides_replace_and_remove(tmp_path):
    settings = PlatformSettings("http://lms.example", "c", "d", "http://hub.example/hub/")
    claims = launch_claims(
        settings,
        demo_data.ADA,
        demo_data.EXAM,
        "n",
        now=1000,
        overrides={"aud": ["c", "x"], C.DEPLOYMENT_ID: None},
    )
    assert claims["aud"] == ["c", "x"]
    assert C.DEPLOYMENT_ID not in claims
    assert (claims["iat"], claims["exp"]) == (1000, 1060)
    assert claims[C.ROLES] == [
        C.ROLE_INSTRUCTOR,
        C.ROLE_INSTITUTION_ADMINISTRATOR,
        C.ROLE_SYSTEM_ADMINISTRATOR,
    ]
    assert claims[C.AGS_ENDPOINT]["lineitem"] == (
        "http://lms.example/ags/ds101/lineitems/exam/lineitem?type_id=1"
    )


def test_sign_id_token_headers_and_keys(tmp_path):
    key = KeyStore(tmp_path / "keys").ensure()
    claims = {"sub": "3"}
    token = sign_id_token(claims, key)
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    public = jwt.PyJWK(key.jwk()).key
    assert jwt.decode(token, public, algorithms=["RS256"]) == claims
    token = sign_id_token(claims, key, headers={"kid": None, "typ": "JWT"})
    assert "kid" not in jwt.get_unverified_header(token)
    other = KeyStore(tmp_path / "other").ensure()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            sign_id_token(claims, other, headers={"kid": key.kid}), public, algorithms=["RS256"]
        )


# --- LTIBrowser.launch, end to end with a small fake tool


class FakeTool:
    """Just enough of a tool: login initiation, OIDC callback with state/nonce, a home page."""

    def __init__(self, base: str):
        self.base = base
        self.platform_url = ""
        self.claims: list[dict] = []

    def app(self) -> web.Application:
        tool = self
        redirect_uri = tool_urls(self.base)["tool_redirect_uri"]

        class Login(web.RequestHandler):
            def post(self):
                assert self.get_argument("iss") == tool.platform_url
                self.set_cookie("faketool-state", "st-1")
                self.set_cookie("faketool-nonce", "no-1")
                self.redirect(
                    url_concat(
                        tool.platform_url + "/auth",
                        {
                            "scope": "openid",
                            "response_type": "id_token",
                            "response_mode": "form_post",
                            "prompt": "none",
                            "client_id": self.get_argument("client_id"),
                            "redirect_uri": redirect_uri,
                            "login_hint": self.get_argument("login_hint"),
                            "lti_message_hint": self.get_argument("lti_message_hint"),
                            "nonce": "no-1",
                            "state": "st-1",
                        },
                    )
                )

        class Callback(web.RequestHandler):
            async def post(self):
                if self.get_argument("state") != self.get_cookie("faketool-state"):
                    raise web.HTTPError(400, "state")
                async with httpx.AsyncClient() as c:
                    jwks = (await c.get(tool.platform_url + "/jwks")).json()
                token = self.get_argument("id_token")
                key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
                claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=CLIENT_ID)
                if claims["nonce"] != self.get_cookie("faketool-nonce"):
                    raise web.HTTPError(400, "nonce")
                tool.claims.append(claims)
                self.set_cookie("faketool-user", claims["sub"])
                self.redirect("/hub/home")

        class Home(web.RequestHandler):
            def get(self):
                self.write(f"Hello user {self.get_cookie('faketool-user')}")

        return web.Application(
            [
                (r"/hub/lti13/oauth_login", Login),
                (r"/hub/lti13/oauth_callback", Callback),
                (r"/hub/home", Home),
            ]
        )


@pytest.fixture
async def tool_and_platform(tmp_path):
    sockets = bind_sockets(0, "127.0.0.1")
    tool = FakeTool(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
    server = HTTPServer(tool.app())
    server.add_sockets(sockets)
    with running_platform(tmp_path / "state", **tool_urls(tool.base)) as p:
        tool.platform_url = p.url
        yield tool, p
    server.stop()


async def test_browser_launch_clicks_through_to_the_tool(tool_and_platform):
    tool, platform = tool_and_platform
    async with LTIBrowser() as b:
        resp = await b.launch(platform.url, "4", "exam")
        assert resp.status_code == 200
        assert str(resp.url) == tool.base + "/hub/home"
        assert resp.text == "Hello user 4"
        # Platform and tool cookies live side by side in the one 127.0.0.1 jar.
        names = {c.name for c in b.cookies.jar}
        assert {"ananke-platform-user", "faketool-state", "faketool-user"} <= names
    (claims,) = tool.claims
    assert claims["sub"] == "4" and claims[C.RESOURCE_LINK]["id"] == "exam"
    assert claims[C.TARGET_LINK_URI] == tool.base + "/hub/"


async def test_browser_launch_can_stop_before_the_callback(tool_and_platform):
    tool, platform = tool_and_platform
    callback = tool.base + "/hub/lti13/oauth_callback"
    async with LTIBrowser() as b:
        resp = await b.launch(platform.url, "2", "homework", stop_before=callback)
        form = auto_submit_form(resp)
        assert form.action == callback and form.fields["state"] == "st-1"
        claims = await verify(b, platform, form.fields["id_token"])
        assert claims["sub"] == "2"
        # A test can tamper with the form, or send it on as is:
        resp = await b.submit_form(resp, form=form)
        assert resp.text == "Hello user 2"
    assert len(tool.claims) == 1


async def test_browser_launch_names_a_missing_button(platform):
    async with LTIBrowser() as b:
        with pytest.raises(LookupError, match="no Launch button for user '99'"):
            await b.launch(platform.url, "99", "homework")


async def test_ltiauthenticator_accepts_the_launch(platform):
    """ltiauthenticator, which the hub builds on, takes the platform's messages as they are."""
    from ltiauthenticator.lti13.validator import LTI13LaunchValidator

    validator = LTI13LaunchValidator()
    async with LTIBrowser() as b:
        initiation = auto_submit_form(await login(b, platform, user="2", link="exam"))
        validator.validate_login_request(initiation.fields)
        resp = await b.get(
            url_concat(platform.url + "/auth", auth_params(login_hint="2", lti_message_hint="exam"))
        )
        id_token = auto_submit_form(resp).fields["id_token"]
    # Its PyJWKClient fetches the keyset with blocking urllib: keep it off this loop.
    claims = await asyncio.to_thread(
        validator.verify_and_decode_jwt,
        id_token,
        issuer=platform.url,
        audience={CLIENT_ID},
        jwks_endpoint=platform.url + "/jwks",
        jwks_algorithms=["RS256"],
    )
    validator.validate_id_token(claims)
    assert claims["sub"] == "2"


async def test_favicon_is_served(platform):
    # Browsers ask every page's host for /favicon.ico; a 404 there fills the log.
    async with httpx.AsyncClient() as c:
        resp = await c.get(platform.url + "/favicon.ico")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/svg+xml"
    assert resp.content.startswith(b"<svg")
