"""Hub-level: an LMS registers the hub by a pasted registration URL (LTI Dynamic
Registration 1.0), and one hub serves two platforms.

One fresh hub (no registration in 30_lms.py) and two built-in LMSs: A (the demo's own)
and B (a second process with its own issuer, client id and deployment). Tests run in
file order and share the stack: refusals first (no ticket, expired ticket, wrong issuer,
missing message type, a refusing registration endpoint), then A registers and its
people launch with today's names, the used URL is refused, B registers, the same subs
from B become other users with other labs and another course, Kore's roster sync of
B's course goes to B, and a removed registration's launches are refused.
"""

import asyncio
import json
import subprocess
import sys
from urllib.parse import urlencode

import httpx
import pytest
from hubtest import admin_stack, hub_api, wait_for_lab
from lti_browser import LTIBrowser, parse_forms
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import grader_username
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID
from ananke_hub.testlms.handlers.registration import openid_configuration
from ananke_hub.testlms.settings import PlatformSettings

pytestmark = pytest.mark.slow

B_CLIENT = "platform-b-client"
B_DEPLOYMENT = "platform-b-deployment"

#: No registration in 30_lms.py: the hub starts as an admin's fresh hub.
EMPTY_REGISTRATION = {
    "issuer": "",
    "client_id": [],
    "deployment_ids": [],
    "authorize_url": "",
    "jwks_url": "",
    "access_token_url": "",
}


def ananke(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ananke_hub.cli", *args],
        env=stack._env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def registration_url(stack, *args: str) -> str:
    done = ananke(stack, "lms", "registration-url", "--hub-url", stack.hub_url, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def registrations(stack) -> list[dict]:
    done = ananke(stack, "lms", "list", "--all", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class SecondPlatform:
    """Platform B: the built-in LMS once more, with its own issuer, on its own port."""

    def __init__(self, stack, root):
        self.stack = stack
        self.root = root
        self.sockets = None
        self.proc = None

    async def start(self):
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        for sock in sockets:
            sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        hub = self.stack.hub_url
        self.log = open(self.root / "platform-b.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ananke_hub.testlms",
            f"--port={self.port}",
            f"--issuer={self.url}",
            f"--state-dir={self.root / 'platform-b'}",
            f"--client-id={B_CLIENT}",
            f"--deployment-id={B_DEPLOYMENT}",
            f"--tool-login-url={hub}/hub/lti13/oauth_login",
            f"--tool-redirect-uri={hub}/hub/lti13/oauth_callback",
            f"--tool-target-link-uri={hub}/hub/",
            f"--tool-jwks-url={hub}/services/kore/jwks",
            "--test-api",
            stdout=self.log,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    if (await http.get(self.url + "/")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"platform B did not start; see {self.root / 'platform-b.log'}")

    async def stop(self):
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.log.close()


class FakeConfiguration:
    """A platform configuration served on loopback, spoiled on purpose."""

    def __init__(self, document: dict):
        self.document = document
        document_ = document

        class Handler(web.RequestHandler):
            def get(self):
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps(document_))

        self.server = HTTPServer(web.Application([(r"/.well-known/openid-configuration", Handler)]))
        sockets = bind_sockets(0, "127.0.0.1")
        self.server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    def stop(self):
        self.server.stop()


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    config = {
        "LMSRegistration": EMPTY_REGISTRATION,
        # Read the registrations at every launch: a removal counts at once.
        "AnankeLTI13Authenticator": {"registrations_max_age": 0},
    }
    async with admin_stack(root, extra_config=config, platform_args=["--test-api"]) as s:
        s.platform_b = SecondPlatform(s, root)
        await s.platform_b.start()
        try:
            yield s
        finally:
            await s.platform_b.stop()


def nothing_registered(stack) -> None:
    assert registrations(stack) == []


async def paste(browser, platform_url: str, url: str) -> httpx.Response:
    """The LMS admin pastes ``url`` into the platform's Manage tools page: the hub's
    confirmation page comes back."""
    return await browser.get(f"{platform_url}/admin/tools?{urlencode({'url': url})}")


async def test_without_a_valid_registration_url_nothing_is_registered(stack):
    config = f"{stack.platform_url}/.well-known/openid-configuration"
    async with LTIBrowser() as browser:
        for ticket in ("", "not-a-ticket"):
            query = urlencode({"ticket": ticket, "openid_configuration": config})
            resp = await browser.get(f"{stack.hub_url}/hub/lti13/register?{query}")
            assert resp.status_code == 403, resp.text
            assert "registration URL" in resp.text or "registration ticket" in resp.text
            posted = await browser.post(
                f"{stack.hub_url}/hub/lti13/register",
                {"ticket": ticket, "openid_configuration": config, "registration_token": "x"},
            )
            assert posted.status_code == 403, posted.text
    nothing_registered(stack)


async def test_an_expired_registration_url_is_refused(stack):
    url = registration_url(stack, "--expires", "1")
    await asyncio.sleep(1.5)
    async with LTIBrowser() as browser:
        resp = await paste(browser, stack.platform_url, url)
        assert resp.status_code == 403
        assert "expired" in resp.text
    nothing_registered(stack)


async def test_a_configuration_whose_issuer_is_another_site_is_refused(stack):
    settings = PlatformSettings(
        issuer=stack.platform_url, client_id="x", deployment_id="1", tool_target_link_uri=""
    )
    # The configuration claims to be platform A, but is served by another site.
    fake = FakeConfiguration(openid_configuration(settings))
    try:
        url = registration_url(stack)
        query = urlencode(
            {"openid_configuration": f"{fake.url}/.well-known/openid-configuration"}
        )
        async with LTIBrowser() as browser:
            resp = await browser.get(f"{url}&{query}")
        assert resp.status_code == 400
        assert "issuer" in resp.text and "must match the configuration URL" in resp.text
    finally:
        fake.stop()
    nothing_registered(stack)


async def test_a_platform_without_deep_linking_is_refused(stack):
    fake = FakeConfiguration({})
    settings = PlatformSettings(
        issuer=fake.url, client_id="x", deployment_id="1", tool_target_link_uri=""
    )
    document = openid_configuration(settings)
    part = document["https://purl.imsglobal.org/spec/lti-platform-configuration"]
    part["messages_supported"] = [{"type": "LtiResourceLinkRequest"}]
    fake.document.update(document)
    try:
        url = registration_url(stack)
        query = urlencode(
            {"openid_configuration": f"{fake.url}/.well-known/openid-configuration"}
        )
        async with LTIBrowser() as browser:
            resp = await browser.get(f"{url}&{query}")
        assert resp.status_code == 400
        assert "LtiDeepLinkingRequest" in resp.text
    finally:
        fake.stop()
    nothing_registered(stack)


async def test_a_refusing_registration_endpoint_is_shown_and_the_url_stays_usable(stack):
    stack.released_url = url = registration_url(stack)
    query = urlencode(
        {
            "openid_configuration": f"{stack.platform_b.url}/.well-known/openid-configuration",
            "registration_token": "a-token-platform-b-never-issued",
        }
    )
    async with LTIBrowser() as browser:
        confirm = await browser.get(f"{url}&{query}")
        assert confirm.status_code == 200, confirm.text
        refused = await browser.submit_form(confirm)
    assert refused.status_code == 400
    # The platform's own answer is on the page.
    assert "HTTP 401" in refused.text and "The registration token is not valid." in refused.text
    nothing_registered(stack)


async def test_register_by_url_then_a_student_and_an_instructor_launch(stack):
    url = registration_url(stack)
    async with LTIBrowser() as browser:
        confirm = await paste(browser, stack.platform_url, url)
        assert confirm.status_code == 200, confirm.text
        assert stack.platform_url in confirm.text  # the issuer the admin confirms
        assert "ananke-test-platform" in confirm.text
        assert "lti-ags/scope/score" in confirm.text
        done = await browser.submit_form(confirm)
        assert done.status_code == 200, done.text
        assert DEMO_CLIENT_ID in done.text
        assert '"subject": "org.imsglobal.lti.close"' in done.text
    (reg,) = registrations(stack)
    assert reg["issuer"] == stack.platform_url
    assert reg["client_ids"] == [DEMO_CLIENT_ID]
    assert reg["deployment_ids"] == [DEMO_DEPLOYMENT_ID]
    assert reg["username_prefix"] == "u"  # the first platform keeps today's names
    stack.registration_a = reg["id"]

    for sub, name in (("3", "u3"), ("2", "u2")):  # a student and an instructor
        async with LTIBrowser() as browser:
            resp = await browser.launch(stack.platform_url, sub, "homework")
            assert resp.status_code == 200, resp.text
            await wait_for_lab(browser, stack.hub_url, name)

    # The registration gave the LMS the hub's Content Selection URL (as Moodle stores
    # the LtiDeepLinkingRequest's target_link_uri): "Select content" in the LMS's frame
    # is recognised at the login initiation and reaches Kore's picker without cookies.
    framed = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}
    async with LTIBrowser(headers=framed) as browser:
        page = await browser.get(stack.platform_url + "/")
        (form,) = [
            f
            for f in parse_forms(page)
            if f.action.endswith("/deeplink") and f.fields.get("user") == "2"
        ]
        resp = await browser.submit_form(page, form=form)
        picker = await browser.follow_auto_submits(resp)
        assert picker.status_code == 200, picker.text[:300]
        assert "Add Jupyter assignments" in picker.text

    # The same URL a second time: refused, nothing more registered.
    async with LTIBrowser() as browser:
        again = await paste(browser, stack.platform_url, url)
        assert again.status_code == 403
        assert "already used" in again.text
    assert len(registrations(stack)) == 1


async def test_a_second_platform_with_the_same_subs_gets_other_users_and_courses(stack):
    b = stack.platform_b
    async with LTIBrowser() as browser:
        # The URL whose registration B refused before: still good for one registration.
        confirm = await paste(browser, b.url, stack.released_url)
        assert confirm.status_code == 200, confirm.text
        done = await browser.submit_form(confirm)
        assert done.status_code == 200, done.text
    reg_b = next(r for r in registrations(stack) if r["issuer"] == b.url)
    assert reg_b["client_ids"] == [B_CLIENT] and reg_b["state"] == "enabled"
    prefix = reg_b["username_prefix"]
    assert prefix and not prefix.startswith("u") and not "u".startswith(prefix)
    stack.registration_b = reg_b["id"]
    stack.prefix_b = prefix

    async with LTIBrowser() as browser:
        resp = await browser.launch(b.url, "3", "homework")
        assert resp.status_code == 200, resp.text
        await wait_for_lab(browser, stack.hub_url, f"{prefix}3")
    async with LTIBrowser() as browser:
        resp = await browser.launch(b.url, "2", "homework")
        assert resp.status_code == 200, resp.text

    # Two people, two labs, two courses with their own grader accounts and gradebooks.
    for name in ("u3", f"{prefix}3"):
        user = (await hub_api(stack, f"/users/{name}")).json()
        assert user["servers"][""]["ready"], user
    course_a = course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, "homework")
    course_b = course_id_for(b.url, B_CLIENT, B_DEPLOYMENT, "homework")
    assert course_a != course_b
    a3 = (await hub_api(stack, "/users/u3")).json()["groups"]
    b3 = (await hub_api(stack, f"/users/{prefix}3")).json()["groups"]
    assert f"nbgrader-{course_a}" in a3 and f"nbgrader-{course_b}" not in a3
    assert f"nbgrader-{course_b}" in b3 and f"nbgrader-{course_a}" not in b3
    for course in (course_a, course_b):
        grader = (await hub_api(stack, f"/users/{grader_username(course)}")).json()
        assert grader["name"] == grader_username(course)
    stack.course_b = course_b


async def test_kore_syncs_a_second_platform_course_with_that_platform(stack):
    b = stack.platform_b
    resp = await hub_api(stack, f"/users/{stack.prefix_b}2/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    base = f"{stack.hub_url}/services/kore/api/courses/{stack.course_b}/roster/sync"
    async with httpx.AsyncClient(timeout=30) as http:
        headers = {"Authorization": f"token {token}"}
        started = await http.post(base, headers=headers, json={})
        assert started.status_code == 202, started.text
        for _ in range(120):
            run = (await http.get(f"{base}/{started.json()['run_id']}", headers=headers)).json()
            if run["state"] != "running":
                break
            await asyncio.sleep(0.5)
    assert run["state"] == "finished", run
    # B's learner 100 never launched: enrolled under B's prefix, as a launch would name her.
    u100 = (await hub_api(stack, f"/users/{stack.prefix_b}100")).json()
    assert f"nbgrader-{stack.course_b}" in u100["groups"]
    assert (await hub_api(stack, "/users/u100")).status_code == 404
    # The token came from B's own token endpoint.
    assert "POST /token" in (b.root / "platform-b.log").read_text()
    assert "POST /token" not in (stack.log_dir / "platform.log").read_text()


async def test_a_removed_registration_refuses_launches_and_keeps_users(stack):
    done = ananke(stack, "lms", "remove", stack.registration_b)
    assert done.returncode == 0, done.stderr
    async with LTIBrowser() as browser:
        resp = await browser.launch(stack.platform_b.url, "3", "homework")
    assert resp.status_code == 400
    assert "was removed from this hub" in resp.text
    assert (await hub_api(stack, f"/users/{stack.prefix_b}3")).status_code == 200
    states = {r["id"]: r["state"] for r in registrations(stack)}
    assert states[stack.registration_b] == "removed"
    assert states[stack.registration_a] == "enabled"
    # Platform A goes on.
    async with LTIBrowser() as browser:
        assert (await browser.launch(stack.platform_url, "4", "homework")).status_code == 200
