"""Kore's background course operations, through a real Kore process.

A backup answers 202 at once and runs on; while it runs, every other operation on the
course is refused with 409 naming it. Kore is then killed (SIGKILL) in the middle of it:
the next Kore marks that backup "interrupted" (its half-written archive removed) and a
new backup can start and finish. The backup is made long on purpose with a big sparse
file in the course (gigabytes of zeros: little disk, much reading and compressing), so
the kill lands while it runs; nothing about its speed is asserted.
"""

import os

import httpx
import pytest
from fake_hub import FakeHub
from kore_operations import follow
from test_kore import PREFIX
from test_kore_security import auth, build_school
from test_kore_settings import HubStartedKore

from ananke_hub.courses.registry import CourseRegistry

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

#: The sparse file's size: minutes of gzip, a few MB of disk.
BIG = 64 * 1024**3


@pytest.fixture
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture
def registry(tmp_path):
    reg = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    reg.engine  # noqa: B018 - the schema exists before Kore opens the file
    yield reg
    reg.close()


@pytest.fixture
def school(tmp_path, registry, hub):
    return build_school(tmp_path, registry, hub)


@pytest.fixture
def kore(tmp_path, hub, school):
    k = HubStartedKore(tmp_path / "kore", hub.api_url, school.layout)
    url = f"sqlite:///{tmp_path / 'courses.sqlite'}"
    (k.config_dir / "55_test_registry.py").write_text(
        f"c = get_config()  # noqa\nc.CourseRegistry.url = {url!r}\n"
    )
    k.start()
    yield k
    k.stop()


def get(kore, path: str) -> httpx.Response:
    return httpx.get(kore.base + path, headers=auth("t-ann"), timeout=60)


def post(kore, path: str, body=None) -> httpx.Response:
    return httpx.post(kore.url(path), headers=auth("t-ann"), json=body, timeout=60)


def test_a_backup_killed_with_kore_is_interrupted_and_a_new_one_runs(kore, school):
    course = school.courses["A"]
    big = school.home("A") / "source" / "hw1" / "big.bin"
    with open(big, "wb") as f:
        f.truncate(BIG)

    started = post(kore, f"api/courses/{course}/backups")
    assert started.status_code == 202, started.text
    entry = started.json()
    assert (entry["kind"], entry["state"]) == ("backup", "running")
    assert started.headers["location"] == entry["url"]
    assert get(kore, entry["url"]).json()["state"] == "running"

    # One operation per course: the others are refused, naming the running one.
    for path, body in (("backups", None), ("reset", {"confirm": course})):
        refused = post(kore, f"api/courses/{course}/{path}", body)
        assert refused.status_code == 409, refused.text
        answer = refused.json()
        assert (answer["operation_id"], answer["url"]) == (entry["operation_id"], entry["url"])
    other = post(kore, f"api/courses/{school.courses['A2']}/backups")
    assert follow(lambda p: get(kore, p), other)["state"] == "finished"  # others go on
    assert get(kore, entry["url"]).json()["state"] == "running"

    kore.proc.kill()  # SIGKILL: no shutdown, no cleanup
    kore.proc.wait()
    partials = [n for n in os.listdir(school.backups_dir) if entry["backup_id"] in n]
    assert partials and all(".partial-" in n for n in partials), partials
    big.unlink()
    kore.start()

    after = get(kore, entry["url"]).json()
    assert after["state"] == "interrupted", after
    assert "new backup" in after["message"]
    assert not [n for n in os.listdir(school.backups_dir) if entry["backup_id"] in n]
    listed = get(kore, f"{PREFIX}api/courses/{course}/backups")
    assert entry["backup_id"] not in {b["backup_id"] for b in listed.json()["backups"]}

    again = follow(lambda p: get(kore, p), post(kore, f"api/courses/{course}/backups"))
    assert again["state"] == "finished", again
    assert get(kore, f"{PREFIX}api/backups/{again['backup_id']}").status_code == 200
