"""Hub-level: access follows the LMS. A teacher the LMS drops loses the grader server.

Ada teaches "homework" and "exam" (the built-in LMS's course DS101). She launches,
opens the homework's formgrader through Kore (a login to the grader server: its cookie
holds an OAuth token) and downloads the gradebook, with that cookie and with a hub API
token of her own. Then the LMS unenrols her, a hub admin runs one roster sync, and
every path of the grader server answers 403 or sends her to a login that refuses her,
with the cookie and the token she already had: the role ``staff-<course>``, the group
``formgrade-<course>`` and her grader tokens are gone without her logging in again.
Deleting a course takes the course's role and group from its staff the same way.
"""

import asyncio

import httpx
import pytest
from hubtest import admin_stack, hub_api
from kore_operations import afollow
from lti_browser import LTIBrowser

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import grader_username
from ananke_hub.courses.provision import staff_group
from ananke_hub.spawner import GRADER_AUTH_CACHE_SECONDS
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = pytest.mark.slow

ADMIN = "uadmin"
ADA = "u2"
SQLITE = b"SQLite format 3"


def course(stack, link: str) -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link)


async def user_token(stack, user: str) -> str:
    resp = await hub_api(stack, f"/users/{user}/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


async def hub_user(stack, user: str) -> dict:
    resp = await hub_api(stack, f"/users/{user}")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def grader_tokens(stack, user: str, course_id: str) -> list[dict]:
    resp = await hub_api(stack, f"/users/{user}/tokens")
    assert resp.status_code == 200, resp.text
    return [
        t
        for t in resp.json()["api_tokens"]
        if grader_username(course_id) in (t.get("oauth_client") or "")
    ]


async def kore(stack, token: str, method: str, path: str, body=None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=180) as http:
        return await http.request(
            method,
            f"{stack.hub_url}/services/kore/api/{path}",
            headers={"Authorization": f"token {token}"},
            json=body,
        )


async def roster_sync(stack, token: str, course_id: str) -> dict:
    started = await kore(stack, token, "POST", f"courses/{course_id}/roster/sync", {})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    for _ in range(240):
        run = (await kore(stack, token, "GET", f"courses/{course_id}/roster/sync/{run_id}")).json()
        if run["state"] != "running":
            return run
        await asyncio.sleep(0.5)
    raise AssertionError(f"roster sync still running: {run}")


async def open_formgrader(browser: LTIBrowser, stack, course_id: str) -> httpx.Response:
    resp = await browser.get(f"{stack.hub_url}/services/kore/courses/{course_id}/formgrader")
    for _ in range(90):  # the grader's server starts: Kore's page reloads until it is ready
        if f"/user/{grader_username(course_id)}/formgrader" in str(resp.url):
            break
        await asyncio.sleep(1)
        resp = await browser.get(str(resp.url))
    return resp


def grader_paths(course_id: str) -> list[str]:
    """Every kind of path of the grader server: pages, nbgrader's API, files, Jupyter's API."""
    base = f"/user/{grader_username(course_id)}/"
    return [
        base + "formgrader",
        base + "formgrader/api/assignments",
        base + "formgrader/api/students",
        base + "files/gradebook.db",
        base + "api/contents/gradebook.db?content=1",
        base + "api/contents/source",
        base + "tree",
        base + "lab",
        base + "api/kernels",
    ]


def refused(resp: httpx.Response, course_id: str) -> bool:
    """403 from the grader server (its API), or from the hub's OAuth authorization it
    sends a browser to (its pages): never the grader's content."""
    at = str(resp.url)
    where = f"/user/{grader_username(course_id)}/" in at or "/hub/api/oauth2/authorize" in at
    return resp.status_code == 403 and where and SQLITE not in resp.content


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    extra = {"Authenticator": {"admin_users": [ADMIN]}}
    async with admin_stack(
        tmp_path_factory.mktemp("hub"), extra_config=extra, platform_args=["--test-api"]
    ) as s:
        yield s


async def test_a_teacher_the_lms_drops_loses_the_grader_server_in_one_roster_sync(stack):
    homework = course(stack, "homework")
    async with LTIBrowser() as ada:
        assert (await ada.launch(stack.platform_url, "2", "homework")).status_code == 200
        await ada.get(f"{stack.hub_url}/services/kore/")  # logs in to Kore
        page = await open_formgrader(ada, stack, homework)
        assert page.status_code == 200, (page.status_code, str(page.url))
        # Her cookie for the grader server reaches everything, the gradebook included.
        download = await ada.get(
            f"{stack.hub_url}/user/{grader_username(homework)}/files/gradebook.db"
        )
        assert download.status_code == 200 and download.content.startswith(SQLITE)
        # A hub API token of her own reaches it too.
        token = await user_token(stack, ADA)
        async with httpx.AsyncClient(timeout=30) as http:
            api = await http.get(
                f"{stack.hub_url}/user/{grader_username(homework)}/api/contents/gradebook.db",
                headers={"Authorization": f"token {token}"},
            )
        assert api.status_code == 200, api.text
        before = await hub_user(stack, ADA)
        assert f"staff-{homework}" in before["roles"]
        assert staff_group(homework) in before["groups"]
        assert await grader_tokens(stack, ADA, homework), "her login to the grader server"

        # The LMS unenrols her; a hub admin syncs the roster once.
        async with httpx.AsyncClient(timeout=30) as http:
            dropped = await http.post(
                f"{stack.platform_url}/_test/roster",
                json={"context": "ds101", "user_id": "2", "status": "Deleted"},
            )
        assert dropped.status_code in (200, 204), dropped.text
        run = await roster_sync(stack, await user_token(stack, ADMIN), homework)
        assert run["state"] == "finished", run

        after = await hub_user(stack, ADA)
        assert f"staff-{homework}" not in after["roles"], after["roles"]
        assert staff_group(homework) not in after["groups"]
        assert "user" in after["roles"]  # still a hub user, with her own lab
        assert await grader_tokens(stack, ADA, homework) == []
        # The grader server trusts the hub's earlier answer for at most this long.
        await asyncio.sleep(GRADER_AUTH_CACHE_SECONDS + 1)

        for path in grader_paths(homework):
            resp = await ada.get(stack.hub_url + path)
            assert refused(resp, homework), (path, resp.status_code, str(resp.url))
            async with httpx.AsyncClient(timeout=30) as http:
                resp = await http.get(
                    stack.hub_url + path,
                    headers={"Authorization": f"token {token}"},
                    follow_redirects=False,
                )
            assert resp.status_code == 403, (path, resp.status_code)
            assert SQLITE not in resp.content
        # Kore refuses her too, and she cannot get a new login to the grader server.
        assert (
            await ada.get(f"{stack.hub_url}/services/kore/courses/{homework}/formgrader")
        ).status_code == 403
        assert await grader_tokens(stack, ADA, homework) == []


async def test_deleting_a_course_takes_its_role_and_group_from_its_staff(stack):
    exam = course(stack, "exam")
    async with LTIBrowser() as grace:  # Grace, TA of DS101, launches the exam
        assert (await grace.launch(stack.platform_url, "5", "exam")).status_code == 200
    before = await hub_user(stack, "u5")
    assert f"staff-{exam}" in before["roles"] and staff_group(exam) in before["groups"]
    admin = await user_token(stack, ADMIN)
    resp = await kore(stack, admin, "POST", f"courses/{exam}/delete", {"confirm": exam})

    async def get(path):
        return await kore(stack, admin, "GET", path.split("/api/", 1)[1])

    operation = await afollow(get, resp)  # deletions run in the background (202)
    assert operation["state"] == "finished", operation
    after = await hub_user(stack, "u5")
    assert f"staff-{exam}" not in after["roles"], after["roles"]
    assert staff_group(exam) not in after["groups"]
    assert "user" in after["roles"]


async def test_only_kore_and_admins_may_ask_the_hub_to_apply_access(stack):
    async with LTIBrowser() as alan:
        assert (await alan.launch(stack.platform_url, "3", "homework")).status_code == 200
    url = f"{stack.hub_url}/hub/api/ananke/users/u3/access"
    async with httpx.AsyncClient(timeout=30) as http:
        student = await user_token(stack, "u3")
        refused = await http.post(url, headers={"Authorization": f"token {student}"}, json={})
        assert refused.status_code == 403, refused.text
        anonymous = await http.post(url, json={})
        assert anonymous.status_code == 403
        admin = {"Authorization": f"token {stack.admin_token}"}  # holds admin:users
        applied = await http.post(url, headers=admin, json={})
        assert applied.status_code == 200, applied.text
        assert applied.json()["name"] == "u3" and "user" in applied.json()["roles"]
        unknown = await http.post(url.replace("u3", "nobody"), headers=admin, json={})
        assert unknown.status_code == 404
