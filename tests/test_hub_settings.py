"""Hub-wide settings read through the classes that own them, and one course layout.

- The hub config reads a setting as its class does: traitlets gives an instance the
  settings of its parent classes' sections too (``c.LTI13Authenticator.x`` reaches the
  ``AnankeLTI13Authenticator``), which a raw ``c.<Class>.get("x")`` misses.
- Where course files are is resolved once (``courses.layout.resolved_layout_config``):
  the hub, Kore and the ``ananke grades/roster sync`` commands get the same answer.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from ananke_hub import hubconfig
from ananke_hub.auth.authenticator import AnankeLTI13Authenticator
from ananke_hub.courses.layout import CourseLayout, resolved_layout_config
from ananke_hub.fragments import class_setting, load_fragments
from ananke_hub.paths import DEFAULT_KORE_PORT, KORE_SECTIONS, StateLayout, kore_port
from ananke_hub.spawner import AnankeLocalSpawner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cfg_dir(tmp_path):
    directory = tmp_path / "config.d"
    directory.mkdir()
    return directory


def fragment(cfg_dir: Path, name: str, *lines: str) -> None:
    (cfg_dir / name).write_text("c = get_config()  # noqa\n" + "\n".join(lines) + "\n")


def configure(tmp_path, cfg_dir, monkeypatch, *, systemd=False, root=False) -> Config:
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "")  # configure() sets it; restored after
    monkeypatch.setattr(hubconfig, "systemd_is_pid1", lambda: systemd)
    monkeypatch.setattr(hubconfig.os, "geteuid", lambda: 0 if root else 1000)
    c = Config()
    c.JupyterHub.bind_url = "http://127.0.0.1:8000/"
    hubconfig.configure(c, cfg_dir=cfg_dir, layout=StateLayout(tmp_path / "state"))
    return c


# --- one owner per setting, read through its class ---------------------------------------------


@pytest.mark.parametrize("section", ["AnankeLTI13Authenticator", "LTI13Authenticator", "Authenticator"])
def test_provision_courses_off_in_any_section_the_authenticator_reads(
    tmp_path, cfg_dir, monkeypatch, section
):
    # ltiauthenticator's own docs set c.LTI13Authenticator.*: an admin puts it there.
    fragment(cfg_dir, "30_lms.py", f"c.{section}.provision_courses = False")
    c = configure(tmp_path, cfg_dir, monkeypatch)
    assert AnankeLTI13Authenticator(config=c).provision_courses is False
    # The hub then leaves groups and roles alone, as it does for the class's own section.
    assert c.Authenticator.manage_groups is False
    assert c.Authenticator.manage_roles is False


def test_provision_courses_on_by_default(tmp_path, cfg_dir, monkeypatch):
    c = configure(tmp_path, cfg_dir, monkeypatch)
    assert c.Authenticator.manage_groups is True and c.Authenticator.manage_roles is True


@pytest.mark.parametrize("section", ["AnankeLocalSpawner", "LocalProcessSpawner", "Spawner"])
def test_the_root_labs_switch_counts_in_any_section_the_spawner_reads(
    tmp_path, cfg_dir, monkeypatch, section
):
    fragment(cfg_dir, "10_servers.py", f"c.{section}.allow_root = True")
    c = configure(tmp_path, cfg_dir, monkeypatch, root=True)  # no SystemExit
    assert class_setting(c, AnankeLocalSpawner, "allow_root") is True


def test_without_the_root_labs_switch_a_root_hub_still_refuses(tmp_path, cfg_dir, monkeypatch):
    with pytest.raises(SystemExit, match="allow_root"):
        configure(tmp_path, cfg_dir, monkeypatch, root=True)


def test_class_setting_is_what_the_class_gets():
    c = Config()
    c.Authenticator.provision_courses = False
    c.AnankeLTI13Authenticator.provision_courses = True  # the own class's section wins
    assert class_setting(c, AnankeLTI13Authenticator, "provision_courses") is True
    assert AnankeLTI13Authenticator(config=c).provision_courses is True
    assert class_setting(Config(), AnankeLTI13Authenticator, "provision_courses") is True
    assert "AnankeLTI13Authenticator" not in Config()  # reading made no section


def test_the_kore_port_is_read_as_kore_reads_it(tmp_path, cfg_dir, monkeypatch):
    from kore.app import Kore

    assert tuple(Kore.section_names()) == KORE_SECTIONS
    assert Kore.class_traits()["port"].default() == DEFAULT_KORE_PORT
    assert kore_port(Config()) == DEFAULT_KORE_PORT
    fragment(cfg_dir, "50_kore.py", "c.Kore.port = 10555")
    c = configure(tmp_path, cfg_dir, monkeypatch)
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "kore"]
    assert service["url"] == "http://127.0.0.1:10555"
    assert kore_port(c) == Kore(config=c).port == 10555


# --- one course layout -------------------------------------------------------------------------


@pytest.mark.parametrize("systemd", [False, True])
@pytest.mark.parametrize("exchange", [None, "/srv/exchange"])
def test_hub_kore_and_the_sync_commands_resolve_one_course_layout(
    tmp_path, cfg_dir, monkeypatch, systemd, exchange
):
    from kore.sync.command import hub_config

    if exchange:
        fragment(cfg_dir, "40_nbgrader.py", f"c.CourseLayout.exchange_root = {exchange!r}")
    state = StateLayout(tmp_path / "state")
    c = configure(tmp_path, cfg_dir, monkeypatch, systemd=systemd)
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "kore"]
    hub = CourseLayout(config=c)
    handed_to_kore = {k: v for k, v in service["environment"].items() if k.startswith("ANANKE_")}
    assert handed_to_kore["ANANKE_HOMES_ROOT"] == hub.homes_root
    assert handed_to_kore["ANANKE_EXCHANGE_ROOT"] == hub.exchange_root
    if exchange:
        assert hub.exchange_root == exchange
    elif systemd:
        assert hub.exchange_root == "/opt/nbgrader_exchange"
    else:
        assert hub.exchange_root == str(state.root / "exchange")

    fragments = load_fragments(cfg_dir).config
    # Kore, started by the hub: the hub's answer, whatever else it would find.
    kore = resolved_layout_config(fragments, state, handed_to_kore, systemd=not systemd)
    assert CourseLayout(config=kore).exchange_root == hub.exchange_root
    assert CourseLayout(config=kore).homes_root == hub.homes_root
    # The sync commands on the hub's machine, without the hub's environment.
    for var in ("ANANKE_HOMES_ROOT", "ANANKE_EXCHANGE_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("ananke_hub.courses.layout.systemd_is_pid1", lambda: systemd)
    cli = CourseLayout(config=hub_config(cfg_dir, state))
    assert (cli.homes_root, cli.exchange_root) == (hub.homes_root, hub.exchange_root)


def test_the_sync_commands_resolve_the_layout_without_the_spawner(tmp_path, cfg_dir):
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ananke_hub.paths import StateLayout\n"
        "from kore.sync.command import hub_config\n"
        f"hub_config(Path({str(cfg_dir)!r}), StateLayout(Path({str(tmp_path)!r})))\n"
        "print(json.dumps([m in sys.modules for m in "
        "('ananke_hub.spawner', 'systemdspawner', 'ananke_hub.hubconfig')]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False, False]
