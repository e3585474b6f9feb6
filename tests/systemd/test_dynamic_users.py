"""Labs as systemd dynamic users, under a real systemd (a booted systemd-nspawn container).

Inside the container: the built-in LMS and JupyterHub with Ananke's shipped config run as
systemd units, so the config picks AnankeSystemdSpawner. Two students launch from the
LMS; their labs must run as transient units ``jupyter-u3`` / ``jupyter-u4`` with dynamic
users named after them (systemd.exec(5), "DynamicUser=", "User="), homes in
``/var/lib/private/<user>`` owned by those users ("StateDirectory="). A stopped lab must
start again with the same uid (systemdspawner issue 76 broke the second spawn), and a
file the hub writes into a running lab's home must belong to the lab's user and leave
the home writable for the lab (issue 3, safe ownership).
"""

import os
import stat
from pathlib import Path

import pytest
from container_hub import ContainerHub

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

USERS = ("u3", "u4")
HUB_WRITE = Path(__file__).with_name("hub_write.py")
HUB_WRITE_IN_CONTAINER = "/opt/ananke-test/hub_write.py"


@pytest.fixture(scope="module")
def hub(systemd_container, request):
    hub = ContainerHub(systemd_container)
    try:
        hub.start()
    except BaseException:
        print(hub.logs())
        raise
    failed_before = request.session.testsfailed
    yield hub
    if request.session.testsfailed > failed_before:
        print(hub.logs())  # the units' journals, shown with the failure


@pytest.fixture(scope="module")
def labs(hub) -> dict[str, int]:
    """Both students launched from the LMS, their labs up; their dynamic uids."""
    result = hub.launch(["3", "4"])
    for user in USERS:
        assert result[user]["lab_status"] == 200, result
        assert result[user]["jupyterlab"], result
    uids = {user: hub.container.uid_of(user) for user in USERS}
    assert None not in uids.values(), f"dynamic users do not resolve: {uids}"
    return uids


def home(hub, user) -> Path:
    return hub.container.path(f"/var/lib/private/{user}")


def test_labs_run_as_dynamic_users_named_after_hub_users(hub, labs):
    c = hub.container
    for user in USERS:
        unit = f"jupyter-{user}"
        props = c.unit_properties(unit, "User", "DynamicUser", "ActiveState", "StateDirectory")
        assert props == {"User": user, "DynamicUser": "yes", "ActiveState": "active",
                         "StateDirectory": user}, props
        st = home(hub, user).stat()
        assert (st.st_uid, st.st_gid) == (labs[user], labs[user])
        # /var/lib/<user> is systemd's link to the private directory.
        assert c.path(f"/var/lib/{user}").is_symlink()
    assert labs["u3"] != labs["u4"]
    # The hub's shipped config chose the systemd spawner (PID 1 is systemd in here).
    spawner = hub.api("GET", "/users/u3")["body"]["servers"][""]
    assert spawner["ready"] is True


def test_second_spawn_works_and_keeps_uid_and_home(hub, labs):
    c = hub.container
    marker = home(hub, "u3") / "before-restart.txt"
    marker.write_text("kept\n")
    marker_owner = (labs["u3"], labs["u3"])
    os.chown(marker, *marker_owner)

    hub.stop_server("u3")
    assert c.unit_properties("jupyter-u3", "ActiveState")["ActiveState"] in ("inactive", "failed")
    # systemd releases a dynamic user with its unit: the name no longer resolves.
    assert c.uid_of("u3") is None
    # The runtime directory link that broke upstream's second spawn (systemdspawner #76).
    # systemd leaves it dangling when the unit stops; upstream's second spawn then died
    # on it with FileExistsError, and AnankeSystemdSpawner removes it.
    # (/run is the container's own tmpfs: look from inside; find(1) -xtype l: a dangling link.)
    dangling = c.run(["find", "/run", "-maxdepth", "1", "-name", "jupyter-u3", "-xtype", "l"])
    assert dangling.stdout.strip() == "/run/jupyter-u3", (
        "no dangling /run/jupyter-u3 after the stop: this test no longer covers issue 76"
    )

    hub.start_server("u3")
    assert c.unit_properties("jupyter-u3", "ActiveState")["ActiveState"] == "active"
    # systemd reuses the uid that owns the state directory (stable, not a fixed number).
    assert c.uid_of("u3") == labs["u3"]
    assert home(hub, "u3").stat().st_uid == labs["u3"]
    assert marker.read_text() == "kept\n"
    assert (marker.stat().st_uid, marker.stat().st_gid) == marker_owner


def test_hub_writes_into_running_home_keep_owner_and_lab_can_write(hub, labs):
    c = hub.container
    if c.unit_properties("jupyter-u3", "ActiveState")["ActiveState"] != "active":
        hub.start_server("u3")
    uid = c.uid_of("u3")
    assert uid == labs["u3"]
    c.copy_in(HUB_WRITE, HUB_WRITE_IN_CONTAINER)

    # As the hub does it: root, in the hub's code, while the lab runs.
    c.run(["/opt/ananke/venv/bin/python", HUB_WRITE_IN_CONTAINER, "/var/lib/private/u3",
           "course-files/notes.txt"], input="from the hub\n")
    written = home(hub, "u3") / "course-files" / "notes.txt"
    assert written.read_text() == "from the hub\n"
    for path in (written, written.parent):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid, uid), path
    assert not stat.S_IMODE(written.stat().st_mode) & 0o022  # not writable by others

    # The lab (jupyter-server as u3) can still overwrite that file and create new ones.
    overwrite = hub.lab_api("u3", "PUT", "/contents/course-files/notes.txt",
                            {"type": "file", "format": "text", "content": "from the lab\n"})
    assert overwrite["status"] == 200, overwrite
    created = hub.lab_api("u3", "PUT", "/contents/course-files/mine.txt",
                          {"type": "file", "format": "text", "content": "new\n"})
    assert created["status"] == 201, created
    assert written.read_text() == "from the lab\n"
    for name in ("notes.txt", "mine.txt"):
        assert (written.parent / name).stat().st_uid == uid
    read_back = hub.lab_api("u3", "GET", "/contents/course-files/notes.txt")
    assert read_back["body"]["content"] == "from the lab\n"

    # The other student's lab is untouched by all this and still up.
    assert c.unit_properties("jupyter-u4", "ActiveState")["ActiveState"] == "active"
    assert c.uid_of("u4") == labs["u4"]


def test_course_made_at_launch_and_student_uids_recorded(hub, labs):
    """The launches made the course under systemd; once each student's lab started, the
    hub recorded the student's dynamic uid for collect's owner check."""
    import json

    from ananke_hub.courses.nbgrader_setup import STUDENT_UIDS_FILE

    (grader_home,) = hub.container.path("/var/lib/private").glob("grader-c-*")
    gradebook = grader_home / "gradebook.db"
    assert gradebook.exists()
    record = json.loads((grader_home / STUDENT_UIDS_FILE).read_text())
    for user in USERS:
        assert labs[user] in record["students"][user], record
