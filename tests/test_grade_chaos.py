"""Chaos for the grade sync (issue 11): Kore killed mid-sync, writes answered late.

``python -m kore`` (as the hub runs it, with the fake hub of test_kore.py) syncs a
course of 150 learners (one assignment and the course total: 300 scores) to the built-in
platform in its Moodle profile, which fetches Kore's keyset during each token request,
refuses a score that is not newer than the last (409) and counts every score post
(``/_test/scores.json``). The proof is at the LMS: every score accepted exactly once,
none refused, no second column.

The kill points are chosen by a seeded random generator (``ANANKE_CHAOS_SEED``, default
11) as progress counts of the run (done of 300) and reported in
``test-artifacts/chaos.json`` with what happened.
"""

import json
import os
import random
import signal
import time
from pathlib import Path

import httpx
import pytest
from fake_hub import FakeHub
from test_grade_sync import add_assignment, submit
from test_kore_settings import HubStartedKore
from test_platform import CLIENT_ID, running_platform

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.keys import KeyStore
from ananke_hub.paths import StateLayout
from ananke_hub.testlms import constants as C
from ananke_hub.testlms import demo_data
from ananke_hub.testlms.settings import PlatformSettings
from ananke_hub.testlms.tokens import launch_claims
from ananke_hub.usernames import hub_username

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
]

LEARNERS = 150  # x (hw1, total) = 300 scores
KILLS = 10
SEED = int(os.environ.get("ANANKE_CHAOS_SEED", "11"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        fake.add_user("t-inst", "u2")  # Ada, the demo course's instructor
        yield fake


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture(scope="module")
def layout(root):
    return CourseLayout(homes_root=str(root / "homes"), exchange_root=str(root / "exchange"))


@pytest.fixture(scope="module")
def kore(root, hub, layout):
    k = HubStartedKore(root / "kore", hub.api_url, layout)
    KeyStore(StateLayout(k.state_dir).kore_keys).ensure()
    return k


@pytest.fixture(scope="module")
def platform(root, kore):
    # The platform fetches the tool's keyset from Kore itself, during each token request.
    with running_platform(
        root / "lms",
        flags=["--test-api"],
        tool_jwks_url=kore.url("jwks"),
        roster_size=LEARNERS,
    ) as p:
        yield PlatformSettings(
            issuer=p.url,
            client_id=CLIENT_ID,
            deployment_id="1",
            tool_target_link_uri="http://hub.invalid/hub/",
        )


@pytest.fixture(scope="module")
def registry(root):
    reg = CourseRegistry(url=f"sqlite:///{root / 'courses.sqlite'}")
    reg.engine  # noqa: B018 - the schema exists before Kore opens the file
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def running_kore(kore, platform, registry):
    (kore.config_dir / "55_test_chaos.py").write_text(
        "c = get_config()  # noqa\n"
        f"c.CourseRegistry.url = {registry.url!r}\n"
        f"c.LMSRegistration.issuer = {platform.issuer!r}\n"
        f"c.LMSRegistration.client_id = {platform.client_id!r}\n"
        f"c.LMSRegistration.access_token_url = {platform.access_token_url!r}\n"
        "c.LTIAdvantage.retry_delay = 0.01\n"
        "c.LTIAdvantage.max_retry_delay = 0.05\n"
        # the slow-write test answers after 2 s: Kore gives up after 1 s
        "c.LTIAdvantage.request_timeout = 1.0\n"
        # A pace the kill points can hit: with the default ceiling (64, kept-alive
        # connections) a 300-score sync can end between two polls of its progress.
        "c.LTIAdvantage.concurrency = 4\n"
    )
    kore.start()
    yield kore
    kore.stop()


def course_of(platform, registry, layout, link) -> str:
    """The demo course's activity ``link`` as launches leave it: Ada and 150 learners,
    hw1 (10 points) submitted by every tenth learner."""

    def record(user, roles):
        claims = launch_claims(
            platform, user, link, "n", context=demo_data.DS101, overrides={C.ROLES: roles}
        )
        info = LaunchInfo.from_id_token(claims, hub_username(user.sub))
        registry.record_launch(info)
        return info.course_id

    course_id = record(demo_data.ADA, [C.ROLE_INSTRUCTOR])
    subs = [str(demo_data.FIRST_EXTRA_SUB + n) for n in range(LEARNERS)]
    for sub in subs:
        record(demo_data.extra_learner(sub), [C.ROLE_LEARNER])
    nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, CourseSettings())
    add_assignment(layout, course_id, "hw1", 10)
    for sub in subs[::10]:
        submit(layout, course_id, hub_username(sub), "hw1", int(sub) % 11)
    return course_id


def lms(platform, method, path, **kwargs):
    r = httpx.request(method, platform.url(path), timeout=30, **kwargs)
    assert r.status_code < 300, r.text
    return r


def start_sync(kore, course_id) -> dict:
    r = httpx.post(
        kore.url(f"api/courses/{course_id}/grades/sync"),
        headers={"Authorization": "token t-inst"},
        json={"missing": "zero"},
        timeout=30,
    )
    assert r.status_code == 202, f"{r.status_code} {r.text}"  # never 409 after a kill
    return r.json()


def run_of(kore, course_id, run_id) -> dict:
    r = httpx.get(
        kore.url(f"api/courses/{course_id}/grades/sync/{run_id}"),
        headers={"Authorization": "token t-inst"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait_end(kore, course_id, run_id) -> dict:
    for _ in range(3000):
        run = run_of(kore, course_id, run_id)
        if run["state"] != "running":
            return run
        time.sleep(0.05)
    raise AssertionError(f"the sync did not end: {run}\n{kore.log}")


def tally_of(platform, course_lineitems: set[str]) -> list[dict]:
    posts = lms(platform, "GET", "/_test/scores.json").json()["posts"]
    return [p for p in posts if p["lineitem"] in course_lineitems]


def lineitems_of(platform, link_id: str) -> list[dict]:
    book = lms(platform, "GET", "/gradebook.json").json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    return [i for i in ds101["lineitems"] if i.get("resourceLinkId") == link_id]


def test_kore_killed_at_ten_points_of_a_300_score_sync(running_kore, platform, registry, layout):
    kore = running_kore
    course_id = course_of(platform, registry, layout, demo_data.HOMEWORK)
    # A slow LMS, so that the kill points fall inside the sync.
    lms(platform, "POST", "/_test/faults", json={"delay": 0.02})
    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(1, LEARNERS * 2), KILLS))
    report = {"seed": SEED, "scores": LEARNERS * 2, "kills": []}
    killed_runs = []
    for target in targets:
        began = time.monotonic()
        if kore.proc.poll() is not None:
            kore.start()
        started = time.monotonic()
        run = start_sync(kore, course_id)
        done = 0
        for _ in range(20000):
            done = run_of(kore, course_id, run["run_id"])["done"]
            if done >= target:
                break
            time.sleep(0.005)
        kore.proc.send_signal(signal.SIGKILL)
        kore.proc.wait()
        killed_runs.append(run["run_id"])
        report["kills"].append(
            {
                "target": target,
                "done_at_kill": done,
                # for the notes on CI time; nothing is asserted about them
                "start_s": round(started - began, 2),
                "until_kill_s": round(time.monotonic() - started, 2),
            }
        )
    kore.start()
    final = start_sync(kore, course_id)
    end = wait_end(kore, course_id, final["run_id"])
    lms(platform, "DELETE", "/_test/faults")

    items = lineitems_of(platform, demo_data.HOMEWORK.id)
    ids = {i["id"] for i in items}
    posts = tally_of(platform, ids)
    duplicates = sum(max(0, p["accepted"] - 1) for p in posts)
    refused = sum(sum(p["refused"].values()) for p in posts)
    lost = LEARNERS * 2 - sum(1 for p in posts if p["accepted"] >= 1)
    states = [run_of(kore, course_id, r)["state"] for r in killed_runs]
    report.update(
        final=end["counts"], duplicates=duplicates, refused=refused, lost=lost, states=states
    )
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "chaos.json").write_text(json.dumps(report, indent=1))
    print("chaos:", json.dumps(report))

    assert end["state"] == "finished", (end, report)
    # one column for hw1, and the activity's own
    assert sorted(i["label"] for i in items) == sorted(["hw1", demo_data.HOMEWORK.title]), items
    assert (duplicates, refused, lost) == (0, 0, 0), report
    assert len(posts) == LEARNERS * 2
    # every killed run says so, with a message: none is left "running"
    assert states == ["interrupted"] * KILLS, report
    message = run_of(kore, course_id, killed_runs[0])["message"]
    assert "Kore stopped while this sync ran" in message
    again = wait_end(kore, course_id, start_sync(kore, course_id)["run_id"])
    assert again["counts"] == {"unchanged": LEARNERS * 2}


def test_writes_answered_after_the_timeout_make_no_second_column_or_score(
    running_kore, platform, registry, layout
):
    kore = running_kore
    course_id = course_of(platform, registry, layout, demo_data.EXAM)
    # The first 8 writes (the hw1 column, scores) are carried out and answered after
    # 2 s, when Kore has given up on them (1 s).
    lms(
        platform,
        "POST",
        "/_test/faults",
        json={"after": "late", "delay": 2, "methods": ["POST"], "count": 8},
    )
    end = wait_end(kore, course_id, start_sync(kore, course_id)["run_id"])
    lms(platform, "DELETE", "/_test/faults")
    assert end["state"] == "finished", end
    assert end["counts"] == {"sent": LEARNERS * 2}, end
    items = lineitems_of(platform, demo_data.EXAM.id)
    assert sorted(i["label"] for i in items) == sorted(["hw1", demo_data.EXAM.title]), items
    posts = tally_of(platform, {i["id"] for i in items})
    assert len(posts) == LEARNERS * 2
    assert all(p["accepted"] == 1 and not p["refused"] for p in posts), posts
