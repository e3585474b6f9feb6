"""The shipped hub config, started as root where PID 1 is not systemd, refuses root labs.

The local spawner runs every lab as the hub's OS user: as root, a student's notebook
would be root on the machine. The hub refuses to start unless an admin set
``c.AnankeLocalSpawner.allow_root`` (``ananke demo`` and the tests do), and even then
only on a loopback bind. The refusal is checked on a real ``jupyterhub`` process.
"""

import json
import os
import subprocess
import sys

import pytest

from ananke_hub import spawner as spawner_mod
from ananke_hub.paths import SHIPPED_HUB_CONFIG, shipped_fragments
from ananke_hub.spawner import AnankeLocalSpawner
from ananke_hub.testlms.demo import free_port

IS_ROOT = os.geteuid() == 0
if not IS_ROOT and not os.environ.get("CI"):
    pytest.skip("needs root (CI runs the tests as root)", allow_module_level=True)


def start_hub(tmp_path, settings: dict) -> subprocess.CompletedProcess:
    assert IS_ROOT, "CI runs the tests as root: this test must run there"
    cfg = tmp_path / "config.d"
    cfg.mkdir()
    for source in shipped_fragments():
        (cfg / source.name).write_bytes(source.read_bytes())
    settings = {
        "JupyterHub": {
            "bind_url": f"http://127.0.0.1:{free_port()}/",
            "hub_bind_url": f"http://127.0.0.1:{free_port()}",
        },
        "ConfigurableHTTPProxy": {"api_url": f"http://127.0.0.1:{free_port()}"},
        "Kore": {"port": free_port()},
        **settings,
    }
    (cfg / "90_test.json").write_text(json.dumps(settings))
    env = {
        **os.environ,
        "ANANKE_CONFIG_DIR": str(cfg),
        "ANANKE_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("JUPYTERHUB_CRYPT_KEY", None)
    # A refused hub exits while loading its config: it never listens or starts Kore.
    return subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(SHIPPED_HUB_CONFIG)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def no_systemd(monkeypatch):
    if spawner_mod.systemd_is_pid1():
        pytest.skip("PID 1 is systemd here: the hub uses the systemd spawner")


def test_root_hub_without_the_switch_refuses_and_says_what_to_do(tmp_path):
    result = start_hub(tmp_path, {})
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "labs would be local processes running as root" in out, out
    assert "c.AnankeLocalSpawner.allow_root = True" in out
    assert "systemd host" in out and "container image" in out


def test_root_labs_switch_counts_on_loopback_only(tmp_path):
    result = start_hub(
        tmp_path,
        {
            "AnankeLocalSpawner": {"allow_root": True},
            "JupyterHub": {"bind_url": f"http://0.0.0.0:{free_port()}/"},
        },
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "allowed on a loopback address only" in out, out
    assert "'0.0.0.0'" in out


def test_default_bind_is_all_interfaces_and_refused(tmp_path):
    # No bind_url at all: JupyterHub listens on every interface.
    result = start_hub(tmp_path, {"AnankeLocalSpawner": {"allow_root": True}, "JupyterHub": {}})
    assert result.returncode != 0
    assert "'all interfaces'" in result.stdout + result.stderr


async def test_local_spawner_refuses_a_root_lab_without_the_switch(tmp_path):
    from jupyterhub.objects import Hub
    from test_spawner import fake_user

    spawner = AnankeLocalSpawner(user=fake_user(), hub=Hub(), home_root=str(tmp_path / "homes"))
    with pytest.raises(RuntimeError, match="refuses to start them"):
        await spawner.start()
    assert not (tmp_path / "homes").exists()  # refused before anything was made
