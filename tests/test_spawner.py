"""The spawners, without a running systemd: what AnankeSystemdSpawner would ask systemd-run
for, the fixes of upstream bugs, and AnankeLocalSpawner's home, args and environment."""

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub.objects import Hub
from systemdspawner import systemd
from traitlets import TraitError
from traitlets.config import Config

from ananke_hub import spawner as spawner_mod
from ananke_hub.fragments import load_fragment, load_fragments
from ananke_hub.paths import SHIPPED_CONFIG_DIR
from ananke_hub.spawner import (
    AnankeLocalSpawner,
    AnankeSystemdSpawner,
    remove_dangling_runtime_link,
)


def fake_user(name="u123", uid=7):
    return SimpleNamespace(name=name, id=uid, url=f"/user/{name}/", escaped_name=name, groups=[])


class FakeSystemd:
    """Stands in for systemdspawner.systemd's calls to systemctl and systemd-run."""

    def __init__(self):
        self.running = set()
        self.started = []

    async def start_transient_service(self, unit_name, **kwargs):
        self.started.append({"unit_name": unit_name, **kwargs})
        self.running.add(unit_name)
        return 0

    async def service_running(self, unit_name):
        return unit_name in self.running

    async def service_failed(self, unit_name):
        return False

    async def stop_service(self, unit_name):
        self.running.discard(unit_name)

    async def reset_service(self, unit_name):
        pass


@pytest.fixture
def fake_systemd(monkeypatch, tmp_path):
    fake = FakeSystemd()
    for name in (
        "start_transient_service",
        "service_running",
        "service_failed",
        "stop_service",
        "reset_service",
    ):
        monkeypatch.setattr(systemd, name, getattr(fake, name))
    # Whatever systemctl says on this machine, the spawner sees a recent systemd.
    monkeypatch.setattr(systemd, "get_systemd_version", lambda: 252)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(systemd, "RUN_ROOT", str(run))
    fake.run = run
    return fake


@pytest.fixture
def shipped_config():
    return load_fragments(SHIPPED_CONFIG_DIR).config


def fake_orm_spawner(server_name):
    """What Spawner.name and Spawner.server read: the server's row in the hub's database."""
    return SimpleNamespace(name=server_name, server=None, display_name=server_name)


def make_systemd_spawner(config=None, user=None, server_name="", **kwargs):
    return AnankeSystemdSpawner(
        user=user or fake_user(),
        orm_spawner=fake_orm_spawner(server_name),
        hub=Hub(),
        config=config or Config(),
        cmd=["/usr/bin/env", "jupyterhub-singleuser"],
        # No start queue: it would wait for a lab to answer HTTP, and systemd is faked here
        # (tests/test_start_queue.py tests the queue with a real hub).
        **{"concurrent_starts": 0, **kwargs},
    )


async def started_properties(fake_systemd, spawner):
    await spawner.start()
    return fake_systemd.started[-1]


async def test_unit_properties_from_shipped_config(fake_systemd, shipped_config):
    spawner = make_systemd_spawner(shipped_config)
    call = await started_properties(fake_systemd, spawner)
    props = call["properties"]

    assert call["unit_name"] == "jupyter-u123"
    assert props["DynamicUser"] == "yes"
    assert props["StateDirectory"] == "u123"
    assert props["User"] == "u123"
    assert props["ReadOnlyDirectories"] == ["/"]
    assert "/opt/nbgrader_exchange" in props["ReadWriteDirectories"]
    # 10_servers.py: mem_limit "2G", cpu_limit 2.0
    assert props["MemoryMax"] == 2 * 1024**3
    assert props["MemoryAccounting"] == "yes"
    assert props["CPUQuota"] == "200%"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    # Dynamic users: no uid/gid given, home is the state directory.
    assert call["uid"] is None and call["gid"] is None
    assert call["working_dir"] == "/var/lib/u123"
    assert call["environment_variables"]["HOME"] == "/var/lib/u123"
    assert call["environment_variables"]["JUPYTERHUB_USER"] == "u123"


async def test_exchange_root_stays_writable_when_admin_sets_paths(fake_systemd):
    config = Config()
    config.AnankeSystemdSpawner.readwrite_paths = ["/srv/shared"]
    config.AnankeSystemdSpawner.exchange_root = "/srv/exchange"
    props = (await started_properties(fake_systemd, make_systemd_spawner(config)))["properties"]
    assert props["ReadWriteDirectories"] == ["/srv/shared", "/srv/exchange"]


async def test_user_property_kept_when_admin_sets_other_properties(fake_systemd):
    config = Config()
    config.AnankeSystemdSpawner.unit_extra_properties = {"CPUWeight": "50"}
    props = (await started_properties(fake_systemd, make_systemd_spawner(config)))["properties"]
    assert props["CPUWeight"] == "50"
    assert props["User"] == "u123"


async def test_list_values_in_unit_extra_properties_are_joined(fake_systemd):
    config = Config()
    config.AnankeSystemdSpawner.unit_extra_properties = {
        "ReadWritePaths": ["/srv/a", "/srv/{USERNAME}"],
        "Environment": ("A=1", "B=2"),
        "ProtectHome": True,
    }
    spawner = make_systemd_spawner(config)
    assert spawner.unit_extra_properties["ReadWritePaths"] == "/srv/a /srv/{USERNAME}"
    props = (await started_properties(fake_systemd, spawner))["properties"]
    assert props["ReadWritePaths"] == "/srv/a /srv/u123"
    assert props["Environment"] == "A=1 B=2"
    assert props["ProtectHome"] == "yes"


def test_unit_extra_properties_rejects_nested_dicts(fake_systemd):
    spawner = make_systemd_spawner()
    with pytest.raises(TraitError, match="unit_extra_properties\\['X'\\]"):
        spawner.unit_extra_properties = {"X": {"a": 1}}


async def test_config_dict_is_not_mutated_by_a_start(fake_systemd):
    # Upstream expands {USERNAME} in place; a dict shared through the config must not
    # carry the first user's name to the next one.
    config = Config()
    config.AnankeSystemdSpawner.unit_extra_properties = {"User": "{USERNAME}"}
    first = make_systemd_spawner(config, user=fake_user("u1", 1))
    await first.start()
    second = make_systemd_spawner(config, user=fake_user("u2", 2))
    await second.start()
    assert fake_systemd.started[-1]["properties"]["User"] == "u2"
    assert config.AnankeSystemdSpawner.unit_extra_properties == {"User": "{USERNAME}"}


async def test_named_servers_get_their_own_units(fake_systemd):
    default = make_systemd_spawner()
    named = make_systemd_spawner(server_name="room")
    other = make_systemd_spawner(server_name="lab2")
    assert default.unit_name == "jupyter-u123"
    assert named.unit_name == "jupyter-u123-room"
    assert len({default.unit_name, named.unit_name, other.unit_name}) == 3

    await default.start()
    await named.start()
    # Starting the named server did not stop the default one.
    assert fake_systemd.running == {"jupyter-u123", "jupyter-u123-room"}
    props = fake_systemd.started[-1]["properties"]
    # One user, one dynamic user name and one home for all their servers.
    assert props["User"] == "u123"
    assert props["StateDirectory"] == "u123"


def test_named_server_template_must_name_the_server(fake_systemd):
    config = Config()
    config.AnankeSystemdSpawner.named_server_unit_name_template = "jupyter-{USERNAME}"
    with pytest.raises(TraitError, match="SERVERNAME"):
        make_systemd_spawner(config, server_name="room")


def test_invalid_unit_name_is_refused(fake_systemd):
    with pytest.raises(ValueError, match="not valid"):
        make_systemd_spawner(user=fake_user("../etc"))


def test_no_systemctl_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="systemctl not found: .*use the local spawner"):
        make_systemd_spawner()


# -- systemdspawner issue 76: dangling /run/<unit> links ---------------------------------------


def test_dangling_link_is_removed(tmp_path):
    link = tmp_path / "jupyter-u123"
    link.symlink_to("private/jupyter-u123")
    assert remove_dangling_runtime_link(tmp_path, "jupyter-u123") is True
    assert not link.is_symlink()


def test_live_link_is_kept(tmp_path):
    (tmp_path / "private" / "jupyter-u123").mkdir(parents=True)
    link = tmp_path / "jupyter-u123"
    link.symlink_to("private/jupyter-u123")
    assert remove_dangling_runtime_link(tmp_path, "jupyter-u123") is False
    assert link.is_symlink() and link.is_dir()


def test_real_directory_is_kept(tmp_path):
    directory = tmp_path / "jupyter-u123"
    directory.mkdir()
    (directory / "jupyter-u123.env").write_text("A=1\n")
    assert remove_dangling_runtime_link(tmp_path, "jupyter-u123") is False
    assert (directory / "jupyter-u123.env").read_text() == "A=1\n"


def test_link_to_etc_is_not_followed(tmp_path):
    link = tmp_path / "jupyter-u123"
    link.symlink_to("/etc")
    before = sorted(os.listdir("/etc"))
    assert remove_dangling_runtime_link(tmp_path, "jupyter-u123") is False
    assert link.is_symlink()
    assert sorted(os.listdir("/etc")) == before


def test_missing_path_is_fine(tmp_path):
    assert remove_dangling_runtime_link(tmp_path, "jupyter-u123") is False


def test_unit_name_cannot_leave_run_root(tmp_path):
    with pytest.raises(ValueError):
        remove_dangling_runtime_link(tmp_path, "../etc")


async def test_start_removes_the_dangling_link(fake_systemd):
    link = fake_systemd.run / "jupyter-u123"
    link.symlink_to("private/jupyter-u123")
    await make_systemd_spawner().start()
    assert not link.is_symlink()
    assert fake_systemd.started[-1]["unit_name"] == "jupyter-u123"


async def test_second_spawn_after_stop_writes_env_file(monkeypatch, fake_systemd):
    """Upstream's own env-file code runs against RUN_ROOT; with the link left by systemd
    it would raise FileExistsError (issue 76)."""
    written = []

    async def start(unit_name, **kwargs):
        runtime_dir = Path(systemd.RUN_ROOT) / unit_name
        written.append(systemd.make_environment_file(str(runtime_dir), unit_name, {"A": "1"}))
        fake_systemd.running.add(unit_name)

    monkeypatch.setattr(systemd, "start_transient_service", start)
    (fake_systemd.run / "jupyter-u123").symlink_to("private/jupyter-u123")
    spawner = make_systemd_spawner()
    await spawner.start()
    assert Path(written[-1]).read_text() == "A=1\n"


@pytest.mark.parametrize("name", ["root", "daemon", "nobody"])
async def test_lab_never_runs_as_a_static_system_account(fake_systemd, name):
    """An empty username_prefix lets an LMS id "root" become hub user "root"; systemd
    would run that lab as the real root account (a static user wins over DynamicUser)."""
    spawner = make_systemd_spawner(user=fake_user(name))
    with pytest.raises(RuntimeError, match="existing system account"):
        await spawner.start()
    assert fake_systemd.started == []


async def test_lab_of_an_unknown_account_starts(fake_systemd):
    await make_systemd_spawner(user=fake_user("u98765432")).start()
    assert fake_systemd.started[-1]["unit_name"] == "jupyter-u98765432"


# -- AnankeLocalSpawner -------------------------------------------------------------------------


def make_local_spawner(tmp_path, user=None, **kwargs):
    return AnankeLocalSpawner(
        user=user or fake_user(),
        hub=Hub(),
        home_root=str(tmp_path / "homes"),
        **kwargs,
    )


def test_local_home_is_created_private(tmp_path):
    spawner = make_local_spawner(tmp_path)
    home = spawner.ensure_home()
    assert home == tmp_path / "homes" / "u123"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert spawner.home_dir == str(home)


def test_local_home_is_tightened_if_present(tmp_path):
    home = tmp_path / "homes" / "u123"
    home.mkdir(parents=True)
    home.chmod(0o755)
    make_local_spawner(tmp_path).ensure_home()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_local_home_cannot_leave_home_root(tmp_path):
    spawner = make_local_spawner(tmp_path, user=fake_user(".."))
    with pytest.raises(ValueError):
        spawner.home_dir  # noqa: B018


def test_local_env_names_the_hub_user(tmp_path):
    env = make_local_spawner(tmp_path).get_env()
    assert env["USER"] == "u123"
    assert env["HOME"] == str(tmp_path / "homes" / "u123")
    assert env["JUPYTERHUB_USER"] == "u123"


@pytest.mark.parametrize("euid, expected", [(0, True), (1000, False)])
def test_local_allow_root_only_as_root(tmp_path, monkeypatch, euid, expected):
    monkeypatch.setattr(spawner_mod.os, "geteuid", lambda: euid)
    spawner = make_local_spawner(tmp_path, args=["--LabApp.collaborative=True"])
    args = spawner.get_args()
    assert ("--allow-root" in args) is expected
    assert args[0] == "--LabApp.collaborative=True"
    # The configured list itself is not changed.
    assert spawner.args == ["--LabApp.collaborative=True"]


def test_local_home_root_defaults_to_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANANKE_STATE_DIR", str(tmp_path / "state"))
    spawner = AnankeLocalSpawner(user=fake_user(), hub=Hub())
    assert spawner.home_dir == str(tmp_path / "state" / "homes" / "u123")


def test_entry_points_resolve_to_our_spawners():
    from jupyterhub.app import JupyterHub

    hub = JupyterHub()
    hub.spawner_class = "ananke-systemd"
    assert hub.spawner_class is AnankeSystemdSpawner
    hub.spawner_class = "ananke-local"
    assert hub.spawner_class is AnankeLocalSpawner


@pytest.mark.parametrize("name", ["10_servers.py", "40_nbgrader.py", "80_rtc.py.disabled"])
def test_shipped_spawner_fragments_load_into_the_spawners(fake_systemd, tmp_path, name):
    fragment = tmp_path / name.removesuffix(".disabled")
    fragment.write_bytes((SHIPPED_CONFIG_DIR / name).read_bytes())
    config = load_fragment(fragment)
    systemd_spawner = make_systemd_spawner(config)
    assert systemd_spawner.exchange_root == "/opt/nbgrader_exchange"
    local = make_local_spawner(tmp_path, config=config)
    assert local.home_dir == str(tmp_path / "homes" / "u123")


def test_grader_servers_recheck_logins_with_the_hub_every_second(tmp_path):
    # The hub revokes a removed teacher's grader tokens (ananke_hub/auth/access.py); a
    # grader server that trusted the hub's earlier answer for JupyterHub's default five
    # minutes would keep their formgrader open that long.
    grader = make_local_spawner(tmp_path, user=fake_user("grader-c-0123456789abcdef"))
    assert f"--HubOAuth.cache_max_age={spawner_mod.GRADER_AUTH_CACHE_SECONDS}" in grader.get_args()
    assert spawner_mod.GRADER_AUTH_CACHE_SECONDS >= 1  # 0 would mean "cache forever"
    student = make_local_spawner(tmp_path, user=fake_user("u3"))
    assert not any("cache_max_age" in a for a in student.get_args())
