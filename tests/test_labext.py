"""The lab's course list (``ananke_hub.lab.extension``) against a fake Kore.

The client is tested in-process; the whole extension runs in a real ``jupyter server``
subprocess configured only by the shipped ``lab/jupyter`` directory (as the spawners
put it on JUPYTER_CONFIG_PATH), which also proves that nbgrader's own course list is
switched off and ours answers ``/formgraders``.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from jupyter_server.extension.config import ExtensionConfigManager
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from ananke_hub.lab.extension import EXTENSION
from ananke_hub.lab.kore_client import KORE_URL_ENV, KoreCourseList, KoreUnavailable
from ananke_hub.lab.kore_entry import browser_kore_url, kore_entry
from ananke_hub.spawner import LAB_CONFIG_DIR

KORE_PREFIX = "/services/kore/"
LAB_TOKEN = "lab-server-token"
COURSES = [
    {
        "course_id": "c-00000000000000aa",
        "title": "Data Science 101 - Homework",
        "role": "instructor",
        "current": True,
        "formgrader_url": KORE_PREFIX + "courses/c-00000000000000aa/formgrader",
    },
    {"course_id": "c-00000000000000bb", "title": "Art", "role": "learner", "current": False},
    {
        "course_id": "c-00000000000000cc",
        "title": "Stats",
        "role": "teaching_assistant",
        "current": False,
        "formgrader_url": KORE_PREFIX + "courses/c-00000000000000cc/formgrader",
    },
]
EXPECTED = [
    {
        "course_id": "Data Science 101 - Homework",  # the panel's link text
        "id": "c-00000000000000aa",
        "url": KORE_PREFIX + "courses/c-00000000000000aa/formgrader",
        "kind": "jupyterhub",
        "title": "Data Science 101 - Homework",
        "role": "instructor",
    },
    {
        "course_id": "Stats",  # the panel's link text
        "id": "c-00000000000000cc",
        "url": KORE_PREFIX + "courses/c-00000000000000cc/formgrader",
        "kind": "jupyterhub",
        "title": "Stats",
        "role": "teaching_assistant",
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeKore:
    """Kore's ``api/courses`` on a free port, in a thread of its own.

    ``mode``: "ok", "slow" (answers after ``delay`` s), "forbidden", "error", "garbage".
    """

    def __init__(self):
        self.mode = "ok"
        self.delay = 5.0
        self.courses = COURSES
        self.tokens: list[str] = []
        fake = self

        class CoursesHandler(web.RequestHandler):
            async def get(self):
                fake.tokens.append(self.request.headers.get("Authorization", ""))
                if fake.mode == "slow":
                    await asyncio.sleep(fake.delay)
                if fake.mode == "forbidden":
                    self.set_status(403)
                    self.finish({"status": 403, "message": "The hub user uann may not use Kore."})
                elif fake.mode == "error":
                    self.set_status(500)
                    self.finish({"status": 500, "message": "Kore failed"})
                elif fake.mode == "garbage":
                    self.finish("<html>not json</html>")
                elif self.request.headers.get("Authorization") != f"token {LAB_TOKEN}":
                    self.set_status(403)
                    self.finish({"status": 403, "message": "Not logged in"})
                else:
                    self.set_header("Content-Type", "application/json")
                    self.finish(json.dumps(fake.courses))

        self.app = web.Application([(KORE_PREFIX + "api/courses", CoursesHandler)])
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = HTTPServer(self.app)
        self.server.add_sockets([sock])
        self.ready.set()
        self.loop.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{KORE_PREFIX}"

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.add_callback(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def kore_server():
    with FakeKore() as fake:
        yield fake


@pytest.fixture
def kore(kore_server):
    yield kore_server
    kore_server.mode = "ok"
    kore_server.courses = COURSES


@pytest.fixture
def lab_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("JUPYTERHUB_", "ANANKE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", LAB_TOKEN)


# --- the client -----------------------------------------------------------------------------


async def test_lists_only_courses_the_user_grades_in_nbgraders_shape(kore, lab_env):
    courses = await KoreCourseList(kore_url=kore.url).formgraders()
    assert courses == EXPECTED
    assert kore.tokens[-1] == f"token {LAB_TOKEN}"  # the lab's own hub token


async def test_kore_url_comes_from_the_environment(kore, lab_env, monkeypatch):
    monkeypatch.setenv(KORE_URL_ENV, kore.url)
    assert KoreCourseList().kore_url == kore.url
    assert await KoreCourseList().formgraders() == EXPECTED


def test_kore_url_falls_back_to_the_hubs_public_url(lab_env, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_HUB_URL", "https://hub.example.edu/jhub/hub/")
    assert KoreCourseList().kore_url == "https://hub.example.edu/jhub/services/kore/"
    monkeypatch.setenv(KORE_URL_ENV, "http://127.0.0.1:10101/services/kore/")
    assert KoreCourseList().kore_url == "http://127.0.0.1:10101/services/kore/"


async def test_without_a_kore_url_the_message_names_the_setting(lab_env):
    with pytest.raises(KoreUnavailable, match=KORE_URL_ENV):
        await KoreCourseList().formgraders()


async def test_without_a_hub_token_the_message_says_so(kore, lab_env, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    with pytest.raises(KoreUnavailable, match="not started by JupyterHub"):
        await KoreCourseList(kore_url=kore.url).formgraders()


async def test_kore_down(lab_env):
    down = f"http://127.0.0.1:{free_port()}{KORE_PREFIX}"
    with pytest.raises(KoreUnavailable) as caught:
        await KoreCourseList(kore_url=down).formgraders()
    assert "not reachable" in str(caught.value)
    assert down in caught.value.detail  # the log line says where the lab looked


async def test_kore_too_slow(kore, lab_env):
    kore.mode = "slow"
    with pytest.raises(KoreUnavailable, match=r"did not answer within 0.2 s"):
        await KoreCourseList(kore_url=kore.url, timeout=0.2).formgraders()


@pytest.mark.parametrize(
    "mode, message",
    [
        ("forbidden", "access:services!service=kore"),
        ("error", "failed to list your courses (HTTP 500)"),
        ("garbage", "failed to list your courses (HTTP 200)"),
    ],
)
async def test_kore_errors_become_messages(kore, lab_env, mode, message):
    kore.mode = mode
    with pytest.raises(KoreUnavailable) as caught:
        await KoreCourseList(kore_url=kore.url).formgraders()
    assert message in str(caught.value)


# --- the shipped server config ----------------------------------------------------------------


def test_shipped_config_enables_ours_and_disables_nbgraders_course_list():
    assert LAB_CONFIG_DIR == Path(__file__).parent.parent / "ananke_hub" / "lab" / "jupyter"
    own = json.loads((LAB_CONFIG_DIR / "jupyter_server_config.d" / "ananke.json").read_text())
    extensions = own["ServerApp"]["jpserver_extensions"]
    assert extensions[EXTENSION] is True
    assert extensions["nbgrader.server_extensions.course_list"] is False
    # Merged the way jupyter_server merges them, with nbgraders's own file (which enables
    # its course list) on a later, lower-priority path.
    env_config = Path(sys.prefix) / "etc" / "jupyter"
    assert (env_config / "jupyter_server_config.d" / "nbgrader.json").exists()
    merged = ExtensionConfigManager(
        read_config_path=[str(LAB_CONFIG_DIR), str(env_config)]
    ).get_jpserver_extensions()
    assert merged[EXTENSION] is True
    assert merged["nbgrader.server_extensions.course_list"] is False
    # The rest of nbgrader stays on; its formgrader is loaded by ours (lab/formgrader.py).
    assert merged["nbgrader.server_extensions.assignment_list"] is True
    assert merged["nbgrader.server_extensions.formgrader"] is False
    assert merged["ananke_hub.lab.formgrader"] is True


def test_extension_points_name_the_module():
    import ananke_hub.lab.extension as labext

    assert labext._jupyter_server_extension_points() == [{"module": EXTENSION}]


# --- a real jupyter server with the shipped config -------------------------------------------


class JupyterServer:
    def __init__(self, root: Path, kore_url: str, lab_environment: dict | None = None):
        self.root = root
        self.kore_url = kore_url
        #: The spawner's environment of a lab (LabEnvironment.lab_environment), if given.
        self.lab_environment = lab_environment or {}
        self.token = "browser-token"
        self.log_path = root / "server.log"

    def start(self):
        for sub in ("cfg", "data", "runtime", "work"):
            (self.root / sub).mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "ANANKE_"))}
        env.update(
            JUPYTER_CONFIG_PATH=str(LAB_CONFIG_DIR),
            JUPYTER_CONFIG_DIR=str(self.root / "cfg"),
            JUPYTER_DATA_DIR=str(self.root / "data"),
            JUPYTER_RUNTIME_DIR=str(self.root / "runtime"),
            JUPYTERHUB_API_TOKEN=LAB_TOKEN,
            **{KORE_URL_ENV: self.kore_url},
        )
        env.update(self.lab_environment)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                "--ServerApp.port=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root / 'work'}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root / "work",  # nbgrader's course directory, as in a grader's lab
        )
        log.close()
        deadline = time.monotonic() + 90
        info = self.root / "runtime" / f"jpserver-{self.proc.pid}.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter server exited:\n{self.log}")
            if info.exists():
                try:
                    self.base = json.loads(info.read_text())["url"].rstrip("/")
                    return self
                except (ValueError, KeyError):
                    pass
            time.sleep(0.1)
        raise AssertionError(f"jupyter server did not start within 90 s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.get(f"{self.base}/{path}", headers=headers, timeout=60, **kwargs)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, kore_server):
    s = JupyterServer(tmp_path_factory.mktemp("lab"), kore_server.url).start()
    yield s
    s.stop()


def test_server_formgraders_lists_kores_courses(server, kore):
    r = server.get("formgraders")
    assert r.status_code == 200
    assert r.json() == {"success": True, "value": EXPECTED}
    assert kore.tokens[-1] == f"token {LAB_TOKEN}"


def test_only_our_course_list_is_loaded(server):
    log = server.log
    assert f"{EXTENSION} | extension was successfully loaded" in log
    assert "nbgrader.server_extensions.assignment_list | extension was successfully loaded" in log
    assert "course_list" not in log


@pytest.mark.parametrize("mode", ["forbidden", "error", "garbage"])
def test_server_reports_kore_errors_in_the_panels_format(server, kore, mode):
    kore.mode = mode
    r = server.get("formgraders")
    # The panel shows value.message of an unsuccessful answer; a non-200 it cannot show.
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is False
    assert set(body["value"]) == {"message"}
    assert "Kore" in body["value"]["message"]
    assert "Traceback" not in r.text


@pytest.fixture(scope="module")
def down_server(tmp_path_factory):
    """A lab whose Kore does not listen."""
    s = JupyterServer(
        tmp_path_factory.mktemp("lab-down"), f"http://127.0.0.1:{free_port()}{KORE_PREFIX}"
    ).start()
    yield s
    s.stop()


def test_server_formgraders_with_kore_down(down_server):
    down = down_server
    r = down.get("formgraders")
    assert r.status_code == 200
    assert r.json() == {
        "success": False,
        "value": {
            "message": "Kore, the course service, is not reachable right now. Refresh the "
            "list in a minute; if it keeps failing, tell the hub admin."
        },
    }
    assert "ananke formgraders: GET http://127.0.0.1:" in down.log  # the admin's detail


def test_formgrader_links_folders_into_this_servers_lab(server):
    """nbgrader links the assignment's folders to /tree/<path> at the host's root, a 404
    when the formgrader is a page of its own (as Kore opens it); ours into the lab."""
    assert "ananke_hub.lab.formgrader | extension was successfully loaded" in server.log
    r = server.get("formgrader/manage_assignments")
    assert r.status_code == 200, r.text[:300]
    assert "manage_assignments.js" in r.text  # nbgrader's page, with our script after it
    assert 'base_url + "/lab/tree/"' in r.text
    assert r.text.index("manage_assignments.js") < r.text.index("nbgraderLinkTo")


def test_server_formgraders_needs_login(server):
    r = httpx.get(f"{server.base}/formgraders", timeout=60, follow_redirects=False)
    assert r.status_code == 403


def test_nbgrader_version_check_is_still_served(server):
    from importlib.metadata import version

    assert server.get("nbgrader_version", params={"version": version("nbgrader")}).json() == {
        "success": True
    }
    other = server.get("nbgrader_version", params={"version": "0.0.1"}).json()
    assert other["success"] is False
    assert "0.0.1" in other["message"]


# --- the Kore menu's route: ananke/kore ---------------------------------------------------------

BROWSER_KORE = "/services/kore/"  # the test servers have no JUPYTERHUB_BASE_URL: base "/"
STUDENT_COURSES = [
    {"course_id": "c-00000000000000bb", "title": "Art", "role": "learner", "current": True},
    {"course_id": "c-00000000000000dd", "title": "Music", "role": "learner", "current": False},
]
KORE_MENU = {
    "instructor": True,
    "kore_url": BROWSER_KORE,
    "courses": [
        {
            "course_id": "c-00000000000000aa",
            "title": "Data Science 101 - Homework",
            "role": "instructor",
            "current": True,
            "url": BROWSER_KORE + "courses/c-00000000000000aa",
        },
        {
            "course_id": "c-00000000000000cc",
            "title": "Stats",
            "role": "teaching_assistant",
            "current": False,
            "url": BROWSER_KORE + "courses/c-00000000000000cc",
        },
    ],
}


def test_kore_entry_lists_staff_courses_current_first():
    courses = [
        {"course_id": "c-0000000000000001", "title": "Old", "role": "instructor", "current": False},
        {"course_id": "c-0000000000000002", "title": "Taken", "role": "learner", "current": False},
        {
            "course_id": "c-0000000000000003",
            "title": "Now",
            "role": "teaching_assistant",
            "current": True,
        },
        {"course_id": "c-0000000000000004", "role": "instructor"},  # no title: the id
    ]
    entry = kore_entry(courses, "/jhub/services/kore/")
    assert entry["instructor"] is True
    assert [c["title"] for c in entry["courses"]] == ["Now", "Old", "c-0000000000000004"]
    assert entry["courses"][0]["url"] == "/jhub/services/kore/courses/c-0000000000000003"
    assert [c["current"] for c in entry["courses"]] == [True, False, False]


def test_kore_entry_for_a_student_is_empty():
    assert kore_entry(STUDENT_COURSES, BROWSER_KORE) == {
        "instructor": False,
        "kore_url": BROWSER_KORE,
        "courses": [],
    }
    assert kore_entry([], BROWSER_KORE)["instructor"] is False


@pytest.mark.parametrize(
    "course",
    [
        "not a dict",
        {"course_id": "../../etc", "title": "x", "role": "instructor"},
        {"course_id": "c-00000000000000aa/../x", "role": "instructor"},
        {"course_id": None, "role": "instructor"},
        {"course_id": "c-00000000000000aa", "role": "administrator"},
        {"course_id": "c-00000000000000aa"},
    ],
)
def test_kore_entry_builds_urls_only_from_course_ids_of_staff(course):
    assert kore_entry([course], BROWSER_KORE) == {
        "instructor": False,
        "kore_url": BROWSER_KORE,
        "courses": [],
    }


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, "/services/kore/"),
        ({"JUPYTERHUB_BASE_URL": "/jhub/"}, "/jhub/services/kore/"),
        ({"JUPYTERHUB_BASE_URL": "/jhub"}, "/jhub/services/kore/"),
        (
            {
                "JUPYTERHUB_BASE_URL": "/jhub/",
                "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.edu/jhub/hub/",
            },
            "https://hub.example.edu/jhub/services/kore/",
        ),
    ],
)
def test_browser_reaches_kore_through_the_hub(environ, expected):
    assert browser_kore_url(environ) == expected


def test_server_kore_menu_for_an_instructor(server, kore):
    r = server.get("ananke/kore")
    assert r.status_code == 200
    assert r.json() == KORE_MENU
    assert r.headers["Cache-Control"] == "no-store"
    assert kore.tokens[-1] == f"token {LAB_TOKEN}"  # asked with the lab's own token


def test_server_kore_menu_for_a_student(server, kore):
    kore.courses = STUDENT_COURSES
    r = server.get("ananke/kore")
    assert r.status_code == 200
    assert r.json() == {"instructor": False, "kore_url": BROWSER_KORE, "courses": []}


@pytest.mark.parametrize("mode", ["forbidden", "error", "garbage"])
def test_server_kore_menu_when_kore_fails(server, kore, mode):
    kore.mode = mode
    r = server.get("ananke/kore")
    assert r.status_code == 503
    assert set(r.json()) == {"message"}
    assert "Kore" in r.json()["message"]
    assert "Traceback" not in r.text


def test_server_kore_menu_with_kore_down(down_server):
    r = down_server.get("ananke/kore")
    assert r.status_code == 503
    assert r.json() == {
        "message": "Kore, the course service, is not reachable right now. Refresh the "
        "list in a minute; if it keeps failing, tell the hub admin."
    }
    assert "ananke kore menu: GET http://127.0.0.1:" in down_server.log


def test_server_kore_menu_needs_login(server):
    r = httpx.get(f"{server.base}/ananke/kore", timeout=60, follow_redirects=False)
    assert r.status_code == 403


# --- the kernels a lab offers -----------------------------------------------------------------

SANDBOX_KERNEL = "ananke-sandbox"


@pytest.mark.parametrize(
    "name, groups, offered",
    [
        ("u3", ["nbgrader-c-00000000000000aa"], False),  # a student
        ("u2", ["formgrade-c-00000000000000aa"], False),  # an instructor's own lab
        ("grader-c-00000000000000aa", ["formgrade-c-00000000000000aa"], True),
    ],
)
def test_only_the_grader_accounts_lab_offers_the_sandbox_kernel(
    tmp_path, kore_server, name, groups, offered
):
    """The autograding sandbox's kernel spec is for autograding and the formgrader's
    Validate in the grader account's lab: a student's or an instructor's launcher and
    kernel picker (both read api/kernelspecs) must not offer it. A real jupyter server
    in the environment the spawner gives each kind of lab."""
    from test_lab_kore_entry import lab_environment

    env = lab_environment(tmp_path, name, groups)
    (tmp_path / "lab").mkdir()
    server = JupyterServer(tmp_path / "lab", kore_server.url, env).start()
    try:
        r = server.get("api/kernelspecs")
        assert r.status_code == 200, r.text
        specs = r.json()["kernelspecs"]
    finally:
        server.stop()
    assert "python3" in specs  # the kernel people work with, in every lab
    assert (SANDBOX_KERNEL in specs) is offered, sorted(specs)
    if offered:
        provisioner = specs[SANDBOX_KERNEL]["spec"]["metadata"]["kernel_provisioner"]
        assert provisioner["provisioner_name"] == SANDBOX_KERNEL
