"""Hub-level nbgrader round trip in a course the hub provisioned at launch.

release -> fetch -> submit -> collect -> autograde -> gradebook scores for two students,
with course membership checked by nbgrader's JupyterHubAuthPlugin against the real hub
(the groups the launch gave each person), the labs' shipped nbgrader config, and each
person's own hub token. The labs' own uids are the local spawner's (one OS user); the
permission side is proven with real uids in test_exchange_privacy.py and, under systemd,
in tests/systemd/.
"""

import asyncio
import os
import sys

import pytest
from hubtest import admin_stack, hub_api
from lti_browser import LTIBrowser
from nbgrader.api import Gradebook
from nbgrader_users import ASSIGNMENT, LAB_CONFIG, answered, assignment_notebook

from ananke_hub import fsutil
from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout, grader_username
from ananke_hub.spawner import lab_jupyter_path, lab_kind
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = pytest.mark.slow


async def token_for(stack, username: str) -> str:
    resp = await hub_api(stack, f"/users/{username}/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


async def nbgrader(
    stack, layout, username: str, token: str, *argv: str, expect_failure: bool = False
) -> str:
    """Run ``nbgrader argv`` as a lab of ``username`` would: its home, env and token."""
    home = layout.home_of(username)
    env = {
        "HOME": str(home),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",
        "JUPYTERHUB_USER": username,
        "JUPYTERHUB_API_URL": f"{stack.hub_url}/hub/api",
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTER_CONFIG_PATH": str(LAB_CONFIG),
        # The data path the spawner gives this kind of lab (a grader account's has the
        # autograding sandbox's kernel spec, which its nbgrader config names).
        "JUPYTER_PATH": lab_jupyter_path(lab_kind(username, [])),
        "ANANKE_EXCHANGE_ROOT": layout.exchange_root,
        "LANG": "C.UTF-8",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nbgrader",
        *argv,
        cwd=home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    failed = proc.returncode != 0
    assert failed == expect_failure, f"nbgrader {' '.join(argv)} as {username}:\n{text}"
    return text


async def test_release_fetch_submit_collect_autograde(tmp_path):
    async with admin_stack(tmp_path) as stack:
        for sub in ("2", "3", "4"):  # instructor, two students: the course is made at launch
            async with LTIBrowser() as browser:
                assert (
                    await browser.launch(stack.platform_url, sub, "homework")
                ).status_code == 200
        cid = course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, "homework")
        layout = CourseLayout(
            homes_root=str(stack.layout.local_homes),
            exchange_root=str(stack.layout.root / "exchange"),
        )
        for name in ("u3", "u4"):  # the labs' homes (their first spawn would create them)
            fsutil.ensure_home(layout.home_of(name))
        grader = grader_username(cid)
        tokens = {name: await token_for(stack, name) for name in (grader, "u3", "u4")}

        paths = layout.course(cid)
        fsutil.write_file_in_home(
            paths.home, f"source/{ASSIGNMENT}/{ASSIGNMENT}.ipynb", assignment_notebook().encode()
        )
        await nbgrader(stack, layout, grader, tokens[grader], "generate_assignment", ASSIGNMENT)
        await nbgrader(stack, layout, grader, tokens[grader], "release_assignment", ASSIGNMENT)

        # Someone the LMS never put in this course cannot fetch its assignment.
        assert (await hub_api(stack, "/users/outsider", method="POST")).status_code == 201
        fsutil.ensure_home(layout.home_of("outsider"))
        refused = await nbgrader(
            stack,
            layout,
            "outsider",
            await token_for(stack, "outsider"),
            "fetch_assignment",
            ASSIGNMENT,
            "--course",
            cid,
            expect_failure=True,
        )
        assert "do not have access" in refused or "not" in refused.lower()
        assert not (layout.home_of("outsider") / cid).exists()

        for name, value in (("u3", 42), ("u4", 41)):
            await nbgrader(
                stack, layout, name, tokens[name], "fetch_assignment", ASSIGNMENT, "--course", cid
            )
            rel = f"{cid}/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
            text = fsutil.read_file_in_home(layout.home_of(name), rel).decode()
            fsutil.write_file_in_home(layout.home_of(name), rel, answered(text, value).encode())
            await nbgrader(stack, layout, name, tokens[name], "submit", ASSIGNMENT, "--course", cid)

        collected = await nbgrader(stack, layout, grader, tokens[grader], "collect", ASSIGNMENT)
        assert "cheating" not in collected
        await nbgrader(stack, layout, grader, tokens[grader], "autograde", ASSIGNMENT)

        with Gradebook(paths.gradebook_url, cid) as gb:
            scores = {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}
            assert scores == {"u3": 1.0, "u4": 0.0}
            assert gb.find_student("u3").lms_user_id == "3"  # enrolled by the launch
        users = (await hub_api(stack, "/users/u3")).json()
        assert users["groups"] == [f"nbgrader-{cid}"]
