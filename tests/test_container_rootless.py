"""Rootless Podman: the arguments a container admin's `ananke container create` runs,
`ananke container doctor` on a fake host tree, and `ananke host add-admin` with a
recording stand-in for useradd, usermod and loginctl."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from test_container_args import (  # noqa: F401
    FILLED_LMS,
    REPO,
    make_container,
    podman,  # noqa: F401  (fixture)
)

from ananke_hub.container import manager
from ananke_hub.container.args import run_argv
from ananke_hub.container.config import load_container
from ananke_hub.container.host import (
    MIN_SUBIDS,
    PORT_RANGES_FILE,
    Account,
    Host,
    HostError,
    add_admin,
    doctor,
)

UID = 1001
#: The uid of admins made by FakeSystem: owner of their homes (chmod needs that).
ADMIN_UID = os.getuid() or UID


def own(path: Path) -> None:
    if os.getuid() == 0:
        os.chown(path, ADMIN_UID, ADMIN_UID)


def argv_pair(tmp_path, body=""):
    container = load_container(make_container(tmp_path, body))
    return run_argv(container), run_argv(container, rootless=True)


# -- the generated arguments --------------------------------------------------------------


def test_rootless_arguments_differ_only_in_user_namespace_and_network(tmp_path):
    rootful, rootless = argv_pair(tmp_path)
    # Pinned user namespace: the same mapping on every create, whatever containers.conf
    # says, so dynamic users' homes keep their owners across re-creation.
    assert rootless.count("--userns=host") == 1
    assert rootless[rootless.index("--network") + 1] == "slirp4netns"
    assert rootful[rootful.index("--network") + 1] == "bridge"
    stripped = [a for a in rootless if a != "--userns=host"]
    stripped[stripped.index("slirp4netns")] = "bridge"
    assert stripped == rootful
    # What rootless needs as much as rootful: SYS_ADMIN for DynamicUser=, systemd as
    # PID 1, the port on the loopback address only.
    i = rootless.index("--cap-add")
    assert rootless[i + 1] == "SYS_ADMIN"
    assert "--systemd=always" in rootless
    assert rootless[rootless.index("-p") + 1] == "127.0.0.1:8000:8000"


def test_rootless_port_goes_to_the_configured_address_and_host_network_stays(tmp_path):
    _, rootless = argv_pair(
        tmp_path / "a", 'c.Container.bind_address = "10.1.2.3"\nc.Container.port = 20001'
    )
    assert rootless[rootless.index("-p") + 1] == "10.1.2.3:20001:8000"
    _, host_net = argv_pair(tmp_path / "b", 'c.Container.network = "host"')
    assert host_net[host_net.index("--network") + 1] == "host" and "-p" not in host_net


@pytest.fixture
def hub(tmp_path):
    import shutil

    containers = tmp_path / "containers"
    shutil.copytree(REPO / "containers", containers)  # the templates, as in the repository
    assert manager.init(containers, "my-hub", out=lambda _: None) == 0
    (containers / "my-hub" / "jupyterhub_config.d" / "30_lms.py").write_text(FILLED_LMS)
    return containers


def test_create_by_an_unprivileged_admin_runs_the_rootless_command(hub, podman, monkeypatch):  # noqa: F811
    monkeypatch.setattr(manager.os, "geteuid", lambda: UID)
    monkeypatch.setattr(manager, "host_findings", lambda container=None: [])
    assert manager.create(hub, "my-hub", out=lambda line: None) == 0
    run = podman()[-1]
    assert run == run_argv(load_container(hub / "my-hub"), rootless=True)[1:]
    assert "--userns=host" in run and "slirp4netns" in run


def test_create_refuses_what_doctor_finds_missing_unless_told(hub, podman, monkeypatch):  # noqa: F811
    from ananke_hub.container.host import Finding

    monkeypatch.setattr(manager.os, "geteuid", lambda: UID)
    missing = Finding("error", "ann has 0 subordinate uids.", "as root: ananke host add-admin ann")
    monkeypatch.setattr(manager, "host_findings", lambda container=None: [missing])
    with pytest.raises(manager.ContainerError) as refused:
        manager.create(hub, "my-hub", out=lambda line: None)
    assert "ananke host add-admin ann" in str(refused.value)
    assert "--no-host-check" in str(refused.value)
    assert not any("run" in call for call in podman())
    assert manager.create(hub, "my-hub", check_rootless_host=False, out=lambda line: None) == 0
    assert "run" in podman()[-1]


# -- doctor on a fake host ------------------------------------------------------------------


def write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def good_host(root: Path) -> tuple[Host, Account, dict]:
    """A host where everything a rootless systemd container needs is in place."""
    account = Account("ann", UID, UID, "/home/ann")
    write(
        root,
        "/etc/passwd",
        f"root:x:0:0::/root:/bin/bash\nann:x:{UID}:{UID}::/home/ann:/bin/bash\n",
    )
    write(root, "/etc/subuid", "ann:100000:65536\nbob:165536:65536\n")
    write(root, "/etc/subgid", "ann:100000:65536\nbob:165536:65536\n")
    write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
    manager_cg = f"/user.slice/user-{UID}.slice/user@{UID}.service"
    write(root, f"/sys/fs/cgroup{manager_cg}/cgroup.controllers", "cpu io memory pids\n")
    write(root, "/proc/sys/kernel/unprivileged_userns_clone", "1\n")
    write(root, "/proc/sys/user/max_user_namespaces", "28633\n")
    write(root, "/proc/sys/net/ipv4/ip_unprivileged_port_start", "1024\n")
    write(root, "/proc/mounts", "proc /proc proc rw,nosuid,nodev,noexec,hidepid=invisible 0 0\n")
    write(root, "/var/lib/systemd/linger/ann", "")
    (root / "run/user" / str(UID)).mkdir(parents=True)
    (root / "home/ann").mkdir(parents=True)
    (root / "home/ann").chmod(0o700)
    write(root, "/" + PORT_RANGES_FILE, "ann 20000 20099\nbob 20100 20199\n")
    host = Host(root=root, which=lambda tool: f"/usr/bin/{tool}")
    return host, account, {"XDG_RUNTIME_DIR": f"/run/user/{UID}"}


def levels(findings, level):
    return [f for f in findings if f.level == level]


def test_doctor_finds_nothing_wrong_on_a_prepared_host(tmp_path):
    host, account, env = good_host(tmp_path)
    findings = doctor(host, account, env, port=20001, bind_address="127.0.0.1", runtime="crun")
    assert levels(findings, "error") == [] and levels(findings, "warning") == []


def _break(root: Path, what: str, host: Host):
    if what == "subuid":
        write(root, "/etc/subuid", "ann:100000:1000\n")
    elif what == "overlap":
        write(root, "/etc/subgid", "ann:100000:65536\nbob:150000:65536\n")
    elif what == "cgroup v1":
        (root / "sys/fs/cgroup/cgroup.controllers").unlink()
    elif what == "delegation":
        write(
            root,
            f"/sys/fs/cgroup/user.slice/user-{UID}.slice/user@{UID}.service/cgroup.controllers",
            "cpu\n",
        )
    elif what == "userns":
        write(root, "/proc/sys/kernel/unprivileged_userns_clone", "0\n")
    elif what == "uidmap":
        host.which = lambda tool: None if tool == "newuidmap" else f"/usr/bin/{tool}"
    elif what == "slirp4netns":
        host.which = lambda tool: None if tool == "slirp4netns" else f"/usr/bin/{tool}"


@pytest.mark.parametrize(
    "what, words",
    [
        ("subuid", ["1000 subordinate uids", "ananke host add-admin ann"]),
        ("overlap", ["overlap those of bob", "range of its own"]),
        ("cgroup v1", ["cgroup v2", "systemd.unified_cgroup_hierarchy=1"]),
        ("delegation", ["memory, pids are not delegated", "Delegate=cpu cpuset io memory pids"]),
        ("userns", ["user namespaces", "unprivileged_userns_clone=1"]),
        ("uidmap", ["newuidmap is not installed", "apt-get install uidmap"]),
        ("slirp4netns", ["slirp4netns is not installed", "apt-get install slirp4netns"]),
    ],
)
def test_doctor_names_each_missing_piece_with_its_fix(tmp_path, what, words):
    host, account, env = good_host(tmp_path)
    _break(tmp_path, what, host)
    errors = levels(doctor(host, account, env), "error")
    assert len(errors) == 1, errors
    text = errors[0].format()
    assert all(word in text for word in words), text


def test_doctor_without_a_login_session_says_how_to_log_in(tmp_path):
    host, account, _ = good_host(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / f"sys/fs/cgroup/user.slice/user-{UID}.slice")
    errors = levels(doctor(host, account, {}), "error")
    assert len(errors) == 2, errors
    assert "no XDG_RUNTIME_DIR" in errors[0].what and "machinectl shell ann@" in errors[0].fix
    assert "user@1001.service" in errors[1].what and "enable-linger ann" in errors[1].fix


def test_doctor_warns_about_linger_open_home_and_visible_processes(tmp_path):
    host, account, env = good_host(tmp_path)
    (tmp_path / "var/lib/systemd/linger/ann").unlink()
    (tmp_path / "home/ann").chmod(0o755)
    write(tmp_path, "/proc/mounts", "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n")
    warnings = "\n".join(f.format() for f in levels(doctor(host, account, env), "warning"))
    assert "loginctl enable-linger ann" in warnings
    assert "0755" in warnings and "chmod 700 /home/ann" in warnings
    assert "hidepid" in warnings


@pytest.mark.parametrize(
    "port, address, level, words",
    [
        (80, "127.0.0.1", "error", "below 1024"),
        (20150, "127.0.0.1", "error", "bob's port range 20100-20199"),
        (30000, "127.0.0.1", "warning", "outside your range 20000-20099"),
        (20001, "0.0.0.0", "warning", "beyond this host"),
    ],
)
def test_doctor_checks_the_containers_port(tmp_path, port, address, level, words):
    host, account, env = good_host(tmp_path)
    found = levels(doctor(host, account, env, port=port, bind_address=address), level)
    assert any(words in f.what for f in found), found


def test_doctor_command_reads_the_containers_config(hub, monkeypatch, capsys):
    seen = {}

    def fake_doctor(host, account, env, **extra):
        seen.update(extra)
        return []

    monkeypatch.setattr("ananke_hub.container.host.doctor", fake_doctor)
    (hub / "my-hub" / "config.py").write_text(
        "c = get_config()  # noqa\nc.Container.port = 20005\nc.Container.runtime = 'crun'\n"
    )
    assert manager.doctor_command(hub, "my-hub") == 0
    assert seen == {
        "port": 20005, "bind_address": "127.0.0.1", "runtime": "crun", "wants_cpus": False
    }  # fmt: skip


# -- ananke host add-admin -------------------------------------------------------------------


class FakeSystem:
    """useradd, usermod and loginctl acting on a fake root tree, calls recorded."""

    def __init__(self, root: Path, useradd_subids: bool = False):
        self.root = root
        self.calls = []
        self.useradd_subids = useradd_subids

    def _append(self, path, line):
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as f:
            f.write(line + "\n")

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[0] == "useradd":
            name = argv[-1]
            # The home belongs to the new admin (add_admin tightens only such a home).
            self._append("etc/passwd", f"{name}:x:{ADMIN_UID}:{ADMIN_UID}::/home/{name}:/bin/bash")
            home = self.root / "home" / name
            home.mkdir(parents=True)
            own(home)
            home.chmod(0o755)  # Debian's useradd default (HOME_MODE unset)
        elif argv[0] == "usermod":
            kind = "uid" if "subuids" in argv[1] else "gid"
            start, end = (int(x) for x in argv[2].split("-"))
            self._append(f"etc/sub{kind}", f"{argv[3]}:{start}:{end - start + 1}")
        elif argv[0] == "loginctl":
            self._append(f"var/lib/systemd/linger/{argv[2]}", "")
        return subprocess.CompletedProcess(argv, 0)


def admin_host(root: Path, system: FakeSystem) -> Host:
    write(root, "/etc/passwd", "root:x:0:0::/root:/bin/bash\n")
    write(root, "/etc/subuid", "olduser:100000:65536\nbob:165536:65536\n")
    write(root, "/etc/subgid", "olduser:100000:65536\nbob:165536:65536\n")
    write(root, "/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    write(root, "/proc/mounts", "proc /proc proc rw,hidepid=invisible 0 0\n")
    write(root, "/" + PORT_RANGES_FILE, "bob 20100 20199\n")
    return Host(root=root, run=system, euid=lambda: 0)


def test_add_admin_makes_a_private_account_with_its_own_ranges(tmp_path):
    system = FakeSystem(tmp_path)
    host = admin_host(tmp_path, system)
    out = []
    assert add_admin("ann", ports="20000-20099", host=host, out=out.append) == 0
    assert [c[0] for c in system.calls] == ["useradd", "usermod", "usermod", "loginctl"]
    # A range after every existing one: no overlap with olduser's or bob's.
    assert (tmp_path / "etc/subuid").read_text().splitlines()[-1] == f"ann:231072:{MIN_SUBIDS}"
    assert (tmp_path / "etc/subgid").read_text().splitlines()[-1] == f"ann:231072:{MIN_SUBIDS}"
    assert stat.S_IMODE((tmp_path / "home/ann").stat().st_mode) == 0o700
    assert (tmp_path / "var/lib/systemd/linger/ann").exists()
    ranges = (tmp_path / PORT_RANGES_FILE).read_text()
    assert "ann 20000 20099" in ranges and "bob 20100 20199" in ranges
    assert stat.S_IMODE((tmp_path / PORT_RANGES_FILE).stat().st_mode) == 0o644
    # Run again: nothing new to allocate.
    system.calls.clear()
    assert add_admin("ann", host=host, out=out.append) == 0
    assert [c[0] for c in system.calls] == ["loginctl"]
    # And doctor, as ann, is content with it.
    account = Account("ann", ADMIN_UID, ADMIN_UID, "/home/ann")
    for kind in ("uid", "gid"):
        assert not [f for f in doctor(host, account, {}) if f"subordinate {kind}s" in f.what
                    and f.level == "error"]  # fmt: skip


def test_add_admin_keeps_the_ranges_useradd_gave(tmp_path):
    system = FakeSystem(tmp_path)
    host = admin_host(tmp_path, system)
    write(
        tmp_path,
        "/etc/passwd",
        f"root:x:0:0::/root:/bin/bash\nann:x:{ADMIN_UID}:0::/home/ann:/bin/sh\n",
    )
    (tmp_path / "home/ann").mkdir(parents=True)
    own(tmp_path / "home/ann")
    (tmp_path / "home/ann").chmod(0o755)
    for kind in ("uid", "gid"):
        write(tmp_path, f"/etc/sub{kind}", "bob:165536:65536\nann:231072:65536\n")
    assert add_admin("ann", host=host, out=lambda line: None) == 0
    assert [c[0] for c in system.calls] == ["loginctl"]
    assert stat.S_IMODE((tmp_path / "home/ann").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "name, ports, setup, words",
    [
        ("Ann Smith", None, None, "not a user name"),
        ("../x", None, None, "not a user name"),
        ("ann", "20150-20250", None, "overlap bob's range 20100-20199"),
        ("ann", "80-90", None, "unprivileged ports"),
        ("ann", "20000", None, "not a port range"),
        ("ann", None, "overlap", "overlap those of bob"),
        ("root", None, None, "is root"),
    ],
)
def test_add_admin_refuses_unsafe_requests(tmp_path, name, ports, setup, words):
    system = FakeSystem(tmp_path)
    host = admin_host(tmp_path, system)
    if setup == "overlap":
        write(tmp_path, "/etc/passwd", f"ann:x:{ADMIN_UID}:0::/home/ann:/bin/sh\n")
        write(tmp_path, "/etc/subuid", "bob:165536:65536\nann:200000:65536\n")
    with pytest.raises(HostError) as refused:
        add_admin(name, ports=ports, host=host, out=lambda line: None)
    assert words in str(refused.value)
    assert [c for c in system.calls if c[0] != "useradd"] == []


def test_add_admin_needs_root_unless_dry_run(tmp_path):
    system = FakeSystem(tmp_path)
    host = admin_host(tmp_path, system)
    host.euid = lambda: UID
    with pytest.raises(HostError, match="run as root"):
        add_admin("ann", host=host, out=lambda line: None)
    out = []
    assert add_admin("ann", host=host, dry_run=True, out=out.append) == 0
    assert system.calls == [] and "+ useradd --create-home" in "\n".join(out)


def test_cli_has_doctor_and_host_add_admin():
    from ananke_hub.cli import build_parser

    args = build_parser().parse_args(["container", "doctor", "my-hub"])
    assert args.name == "my-hub"
    args = build_parser().parse_args(["host", "add-admin", "ann", "--ports", "20000-20099"])
    assert (args.name, args.ports) == ("ann", "20000-20099")
    assert json.dumps(args.dry_run) == "false"
