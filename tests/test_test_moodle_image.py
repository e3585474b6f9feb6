"""Static checks of images/test-moodle (the image itself needs a Moodle source tarball,
which CI cannot download; it is tried by hand, see docs/developer/testing.md)."""

import configparser
import re
import shutil
import subprocess
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "images" / "test-moodle" / "assets"


def _unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(ASSETS / name)
    return parser


def test_init_script_is_valid_shell():
    sh = shutil.which("sh")
    assert sh, "sh is missing"
    result = subprocess.run([sh, "-n", str(ASSETS / "test-moodle-init.sh")], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_init_never_restarts_a_unit_it_requires():
    # systemd stops a unit when a unit it Requires= is stopped or restarted: the first
    # start looped (init killed by SIGTERM every 3 s) when the script restarted PostgreSQL.
    required = _unit("test-moodle-init.service")["Unit"].get("Requires", "").split()
    assert required, "the init unit is expected to require PostgreSQL"
    script = (ASSETS / "test-moodle-init.sh").read_text()
    for unit in required:
        name = re.escape(unit.removesuffix(".service"))
        pattern = rf"systemctl\s+(restart|stop|try-restart|reload-or-restart)\s+{name}\b"
        assert not re.search(pattern, script), f"the init script restarts {unit}"


def test_init_unit_runs_the_script_the_image_installs():
    command = _unit("test-moodle-init.service")["Service"]["ExecStart"].split()[0]
    containerfile = (ASSETS.parent / "Containerfile").read_text()
    assert f"COPY assets/test-moodle-init.sh {command}\n" in containerfile


def test_moodle_site_answers_on_any_port():
    # On the host's network (the default of scripts/test-moodle.sh) Apache listens on the
    # Moodle URL's port; a <VirtualHost *:80> then matched nothing and every page was 404.
    conf = (ASSETS / "apache-moodle.conf").read_text()
    hosts = re.findall(r"^<VirtualHost\s+([^>]+)>", conf, re.MULTILINE)
    assert hosts == ["*:*"], hosts
