"""The container manager: config.py -> podman arguments (pure), its refusals of bad values,
the templates and shipped optional fragments, and create/remove/list/logs against a fake
podman that records what it was asked."""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from traitlets.config import Config

from ananke_hub.checkconfig import ERROR, check_config_dir
from ananke_hub.container import manager
from ananke_hub.container.args import run_argv
from ananke_hub.container.config import (
    IN_CONTAINER_CA_FILE,
    IN_CONTAINER_CONFIG_DIR,
    IN_CONTAINER_EXCHANGE_DIR,
    IN_CONTAINER_HOMES_DIR,
    IN_CONTAINER_STATE_DIR,
    ConfigError,
    load_container,
)
from ananke_hub.container.manager import ContainerError, PodmanNotFound
from ananke_hub.fragments import load_fragments
from ananke_hub.paths import SHIPPED_CONFIG_DIR, shipped_fragments

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = {
    "template-base": "ananke-base",
    "template-nbgrader": "ananke-nbgrader",
}


@pytest.fixture(autouse=True)
def zoneinfo(tmp_path_factory, monkeypatch):
    """A zoneinfo directory of our own: the tests do not depend on the host's tzdata."""
    root = tmp_path_factory.mktemp("zoneinfo")
    for zone in ("UTC", "Europe/Berlin", "Europe/Paris", "America/New_York"):
        (root / zone).parent.mkdir(parents=True, exist_ok=True)
        (root / zone).write_bytes(b"TZif2")
    monkeypatch.setattr("ananke_hub.container.config.ZONEINFO_DIR", root)
    return root


def make_container(root: Path, body: str, name: str = "my-hub") -> Path:
    """A container directory with this config.py and an (empty) fragments directory."""
    directory = root / name
    (directory / "jupyterhub_config.d").mkdir(parents=True)
    (directory / "config.py").write_text("c = get_config()  # noqa\n" + textwrap.dedent(body))
    return directory


def argv_of(root: Path, body: str) -> list[str]:
    return run_argv(load_container(make_container(root, body)))


# -- good config -> exact argv ------------------------------------------------------------


def test_every_setting_gives_exactly_these_podman_arguments(tmp_path):
    directory = make_container(
        tmp_path,
        """
        c.Container.image = "my-registry.local/ananke-nbgrader:1.0"
        c.Container.name = "hub_ds"
        c.Container.port = 8443
        c.Container.bind_address = "0.0.0.0"
        c.Container.memory = "16G"
        c.Container.memory_swap = "24g"
        c.Container.cpus = 2.5
        c.Container.pids_limit = 4096
        c.Container.gpus = ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-4b9a-11ef"]
        c.Container.volumes = ["/srv/datasets:/srv/datasets:ro", "/srv/shared/:/srv/shared"]
        c.Container.timezone = "Europe/Berlin"
        c.Container.ca_file = "/etc/ssl/campus-root.pem"
        c.Container.runtime = "crun"
        c.Container.ulimits = {"nofile": "4096:8192", "nproc": 2048}
        c.Container.restart = "no"
        c.Container.stop_timeout = 90
        c.Container.persist_journal = True
        c.Container.extra_args = ["--dns", "10.0.0.53"]
        """,
    )
    d = directory
    assert run_argv(load_container(directory), podman="/usr/bin/podman") == [
        "/usr/bin/podman", "--runtime", "crun", "run", "--detach",
        "--name", "hub_ds", "--hostname", "hub-ds",
        "--label=io.ananke.container=hub_ds", f"--label=io.ananke.directory={d}",
        "--pull=never", "--systemd=always", "--stop-timeout=90",
        "--cap-add", "SYS_ADMIN",
        "--network", "bridge", "-p", "0.0.0.0:8443:8000",
        "-m", "16g", "--memory-swap", "24g", "--cpus", "2.5", "--pids-limit", "4096",
        "--ulimit", "nofile=4096:8192", "--ulimit", "nproc=2048",
        "--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=GPU-4b9a-11ef",
        "--tz=Europe/Berlin", "--restart=no",
        "--mount", f"type=bind,source={d}/runtime/homes,destination=/var/lib/private",
        "--mount", f"type=bind,source={d}/runtime/state,destination=/var/lib/ananke",
        "--mount", f"type=bind,source={d}/runtime/exchange,destination=/opt/nbgrader_exchange",
        "--mount",
        f"type=bind,source={d}/jupyterhub_config.d,destination=/etc/ananke/config.d,readonly=true",
        "--mount", f"type=bind,source={d}/runtime/logs,destination=/var/log/journal",
        "--mount",
        "type=bind,source=/etc/ssl/campus-root.pem,"
        f"destination={IN_CONTAINER_CA_FILE},readonly=true",
        "--volume", "/srv/datasets:/srv/datasets:ro", "--volume", "/srv/shared:/srv/shared",
        "--dns", "10.0.0.53",
        "my-registry.local/ananke-nbgrader:1.0",
    ]  # fmt: skip


def test_defaults_carry_the_seeds_arguments_and_the_images_paths(tmp_path):
    argv = argv_of(tmp_path, "")
    d = tmp_path / "my-hub"

    def follows(flag, value):
        return any(argv[i] == flag and argv[i + 1] == value for i in range(len(argv) - 1))

    # The original's run.sh: -p, --cap-add SYS_ADMIN, the homes at /var/lib/private, -m.
    assert follows("-p", "127.0.0.1:8000:8000")
    assert follows("--cap-add", "SYS_ADMIN")
    assert follows("-m", "8g")
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    assert mounts == [
        f"type=bind,source={d}/runtime/homes,destination={IN_CONTAINER_HOMES_DIR}",
        f"type=bind,source={d}/runtime/state,destination={IN_CONTAINER_STATE_DIR}",
        f"type=bind,source={d}/runtime/exchange,destination={IN_CONTAINER_EXCHANGE_DIR}",
        f"type=bind,source={d}/jupyterhub_config.d,destination={IN_CONTAINER_CONFIG_DIR},"
        "readonly=true",
    ]
    assert "--systemd=always" in argv and "--pull=never" in argv
    assert argv[:4] == ["podman", "--runtime", "runc", "run"]
    assert follows("--ulimit", "nofile=16384:16384") and follows("--ulimit", "nproc=16384:16384")
    assert "--tz=local" in argv and "--restart=always" in argv
    assert argv[-1] == "ananke-nbgrader"
    assert not any(a.startswith("--device") or a == "--cpus" for a in argv)


def test_host_network_publishes_no_port_and_ipv6_addresses_get_brackets(tmp_path):
    host = argv_of(tmp_path / "a", 'c.Container.network = "host"')
    assert "-p" not in host and host[host.index("--network") + 1] == "host"
    v6 = argv_of(tmp_path / "b", 'c.Container.bind_address = "::1"\nc.Container.port = 9000')
    assert v6[v6.index("-p") + 1] == "[::1]:9000:8000"


def test_all_gpus_and_no_limits(tmp_path):
    argv = argv_of(
        tmp_path,
        """
        c.Container.gpus = ["all"]
        c.Container.memory = None
        c.Container.pids_limit = -1
        c.Container.ulimits = {}
        """,
    )
    assert argv[argv.index("--device") + 1] == "nvidia.com/gpu=all"
    assert "-m" not in argv and "--ulimit" not in argv
    assert argv[argv.index("--pids-limit") + 1] == "-1"


# -- bad values -> ConfigError naming file, setting and fix -------------------------------

HOME = os.path.expanduser("~")

BAD = [
    # (config line, setting, words the message must contain)
    ('c.Container.memory = "-8g"', "memory", ["negative", '"8g"']),
    ('c.Container.memory = "0"', "memory", ["too little", '"8g"']),
    ('c.Container.memory = "lots"', "memory", ["not a size", '"512m"']),
    ('c.Container.memory = "8gb"', "memory", ["not a size"]),
    ('c.Container.memory_swap = "-2g"', "memory_swap", ["negative"]),
    ('c.Container.memory_swap = "4g"', "memory_swap", ["less than memory", '"-1"']),
    ('c.Container.gpus = ["amd.com/gpu=0"]', "gpus", ["unknown GPU", "nvidia.com/gpu=0"]),
    ('c.Container.gpus = ["gpu0"]', "gpus", ["unknown GPU", "nvidia-ctk cdi list"]),
    ('c.Container.gpus = ["all", "nvidia.com/gpu=1"]', "gpus", ['"all" already']),
    ('c.Container.volumes = ["~/data:/data"]', "volumes", ["'~'", f"'{HOME}/data'"]),
    ('c.Container.volumes = ["~bob/data:/data"]', "volumes", ["'~'", "absolute path"]),
    ('c.Container.volumes = ["data:/data"]', "volumes", ["relative", "'/srv/data'"]),
    ('c.Container.volumes = ["./data:/data:ro"]', "volumes", ["relative"]),
    ('c.Container.volumes = ["/srv/data"]', "volumes", ["HOST:CONTAINER"]),
    ('c.Container.volumes = ["/srv/data:data"]', "volumes", ["must be absolute"]),
    ('c.Container.volumes = ["/srv/h:/var/lib/private/u1"]', "volumes", ["would hide"]),
    ('c.Container.volumes = ["/srv/c:/etc/ananke/config.d"]', "volumes", ["would hide"]),
    ('c.Container.volumes = ["/srv/data:/data:rx"]', "volumes", ["unknown volume option"]),
    ('c.Container.volumes = ["/a:/data", "/b:/data/"]', "volumes", ["two volumes"]),
    ('c.Container.ca_file = "~/campus.pem"', "ca_file", ["'~'", f"'{HOME}/campus.pem'"]),
    ('c.Container.ca_file = "campus.pem"', "ca_file", ["relative"]),
    ("c.Container.port = 0", "port", ["1 to 65535"]),
    ("c.Container.port = 70000", "port", ["1 to 65535"]),
    ("c.Container.container_port = -1", "container_port", ["1 to 65535"]),
    ('c.Container.port = "8000"', "port", ["expected an int"]),
    ('c.Container.bind_address = "localhost"', "bind_address", ["not an IP", "127.0.0.1"]),
    ('c.Container.timezone = "Mars/Olympus_Mons"', "timezone", ["unknown time zone", "UTC"]),
    ('c.Container.timezone = "Europe/Berlim"', "timezone", ["Did you mean 'Europe/Berlin'"]),
    ('c.Container.timezone = "../../etc/passwd"', "timezone", ["unknown time zone"]),
    ('c.Container.timezone = "/usr/share/zoneinfo/UTC"', "timezone", ["unknown time zone"]),
    ('c.Container.timezone = "Europe"', "timezone", ["unknown time zone"]),
    ('c.Container.timezone = ""', "timezone", ["unknown time zone"]),
    ("c.Container.cpus = 0", "cpus", ["above 0"]),
    ("c.Container.cpus = -2.0", "cpus", ["above 0"]),
    ("c.Container.pids_limit = 0", "pids_limit", ["-1"]),
    ('c.Container.ulimits = {"nofiles": 1024}', "ulimits", ["unknown ulimit", "nofile"]),
    ('c.Container.ulimits = {"nofile": "many"}', "ulimits", ["SOFT:HARD"]),
    ('c.Container.ulimits = {"nofile": "8192:1024"}', "ulimits", ["soft limit is above"]),
    ('c.Container.ulimits = {"nproc": 0}', "ulimits", ["positive"]),
    ('c.Container.runtime = "run c"', "runtime", ['"runc"']),
    ('c.Container.name = "my hub"', "name", ['"my-hub"']),
    ('c.Container.hostname = "hub_1"', "hostname", ["not a host name"]),
    ('c.Container.image = ""', "image", ["podman images"]),
    ('c.Container.image = "--privileged"', "image", ["not an image name"]),
    ('c.Container.network = "macvlan"', "network", ["'bridge'", "'host'"]),
    ('c.Container.restart = "sometimes"', "restart", ["'always'"]),
    ("c.Container.stop_timeout = 0", "stop_timeout", ["at least 1"]),
]


@pytest.mark.parametrize(("line", "setting", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_refused_with_file_setting_and_fix(tmp_path, line, setting, words):
    directory = make_container(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_container(directory)
    error = info.value
    assert error.path == directory.absolute() / "config.py"
    assert error.setting == setting
    text = str(error)
    assert text.startswith(f"{directory.absolute()}/config.py: c.Container.{setting}:")
    for word in words:
        assert word in text


def test_unknown_setting_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match=r"memroy: is not a setting.*c\.Container\.memory\?"):
        load_container(make_container(tmp_path, 'c.Container.memroy = "8g"\n'))


def test_hub_settings_in_config_py_are_sent_to_the_fragments(tmp_path):
    with pytest.raises(ConfigError, match="c.JupyterHub.*jupyterhub_config.d") as info:
        load_container(make_container(tmp_path, "c.JupyterHub.bind_url = 'http://:9000'\n"))
    assert info.value.setting == "c.JupyterHub"


def test_missing_config_py_says_to_copy_a_template(tmp_path):
    (tmp_path / "my-hub").mkdir()
    with pytest.raises(ConfigError, match="no config.py.*ananke container init"):
        load_container(tmp_path / "my-hub")


def test_config_py_that_raises_names_its_line(tmp_path):
    directory = make_container(tmp_path, "c.Container.port = 8000\nc.Container.memory = 8 / 0\n")
    with pytest.raises(ConfigError, match=r"config.py: line 3: ZeroDivisionError") as info:
        load_container(directory)
    assert info.value.setting is None


def test_config_py_with_a_syntax_error_names_its_line(tmp_path):
    directory = make_container(tmp_path, 'c.Container.port = (8000\n\nc.Container.image = "x"\n')
    with pytest.raises(ConfigError, match=r"line \d+: SyntaxError"):
        load_container(directory)


def test_comma_in_the_container_path_is_refused(tmp_path):
    directory = make_container(tmp_path / "a,b", "")
    with pytest.raises(ConfigError, match="comma"):
        run_argv(load_container(directory))


# -- the templates ------------------------------------------------------------------------

FILLED_LMS = """\
c = get_config()  # noqa
lms = "https://moodle.school.internal"
c.LMSRegistration.issuer = lms
c.LMSRegistration.client_id = "t9Kx2bQ"
c.LMSRegistration.deployment_ids = ["3"]
c.LMSRegistration.authorize_url = f"{lms}/mod/lti/auth.php"
c.LMSRegistration.jwks_url = f"{lms}/mod/lti/certs.php"
c.LMSRegistration.access_token_url = f"{lms}/mod/lti/token.php"
"""


@pytest.fixture(params=sorted(TEMPLATES))
def template(request, tmp_path):
    """A container made from a template as an admin makes it: containers/my-hub."""
    containers = tmp_path / "containers"
    shutil.copytree(REPO / "containers", containers)
    kind = request.param.removeprefix(manager.TEMPLATE_PREFIX)
    assert manager.init(containers, "my-hub", kind, out=lambda _: None) == 0
    return request.param, containers / "my-hub"


def test_template_config_loads_and_names_its_image(template):
    name, directory = template
    container = load_container(directory)
    assert container.name == "my-hub"
    assert run_argv(container)[-1] == TEMPLATES[name]
    # Every setting is in the template, commented or not, so admins find them all.
    text = (directory / "config.py").read_text()
    for setting in container.settings.class_traits(config=True):
        assert f"c.Container.{setting} =" in text


def test_template_fragments_pass_check_config_once_the_lms_is_filled_in(template):
    _, directory = template
    fragments = directory / "jupyterhub_config.d"
    problems = check_config_dir(fragments, check_network=False)
    # As shipped, only the placeholder client id is an error: the admin must fill it in.
    assert [p.setting for p in problems if p.level == ERROR] == ["LMSRegistration.client_id"]
    (fragments / "30_lms.py").write_text(FILLED_LMS)
    assert [
        p.format() for p in check_config_dir(fragments, check_network=False) if p.level == ERROR
    ] == []
    for disabled in fragments.glob("*.disabled"):
        disabled.rename(disabled.with_suffix(""))
    problems = check_config_dir(fragments, check_network=False)
    assert [p.format() for p in problems if p.level == ERROR] == []


def test_init_gives_the_container_exactly_the_shipped_fragments(template):
    """The templates hold no copies: the container gets the installed package's fragments
    (config.d/ at the repository's root), byte for byte, plus the container-only ones."""
    name, directory = template
    fragments = directory / "jupyterhub_config.d"
    shipped = {p.name: p for p in shipped_fragments()}
    assert SHIPPED_CONFIG_DIR.resolve() == (REPO / "config.d").resolve()
    got = {p.name: p for p in fragments.iterdir()}
    for same in got.keys() & shipped.keys():
        assert got[same].read_bytes() == shipped[same].read_bytes(), same
    extra = {"15_volumes.py.disabled"} | (
        {"35_plain_login.py"} if name == "template-base" else set()
    )
    assert got.keys() - shipped.keys() == extra
    # The base image has no nbgrader (no course fragment, and launches make no courses)
    # and no jupyter-fs (no shared folders).
    if name == "template-base":
        assert shipped.keys() - got.keys() == {"40_nbgrader.py", "85_shared_folders.py.disabled"}
        config = load_fragments(fragments).config
        assert config.AnankeLTI13Authenticator.provision_courses is False
    else:
        assert shipped.keys() - got.keys() == set()
    # The config.py is the template's; everything is private to the admin.
    assert (directory / "config.py").read_bytes() == (REPO / "containers" / name / "config.py").read_bytes()
    assert stat.S_IMODE(fragments.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in got.values()} == {0o600}
    assert not (directory / manager.TEMPLATE_MANIFEST).exists()


def test_templates_hold_no_copy_of_a_shipped_fragment():
    shipped = {p.name for p in shipped_fragments()}
    for name in TEMPLATES:
        own = REPO / "containers" / name / "jupyterhub_config.d"
        names = {p.name for p in own.iterdir()} if own.is_dir() else set()
        assert not names & shipped, name


def test_init_never_overwrites_and_refuses_bad_templates(tmp_path):
    containers = tmp_path / "containers"
    shutil.copytree(REPO / "containers", containers)
    assert manager.init(containers, "my-hub", out=lambda _: None) == 0
    lms = containers / "my-hub" / "jupyterhub_config.d" / "30_lms.py"
    lms.write_text(FILLED_LMS)
    with pytest.raises(ContainerError, match="exists already; init never overwrites"):
        manager.init(containers, "my-hub")
    assert lms.read_text() == FILLED_LMS
    with pytest.raises(ContainerError, match="no template .*template-lab"):
        manager.init(containers, "other-hub", "lab")
    with pytest.raises(ContainerError, match="is a template"):
        manager.init(containers, "template-mine")
    manifest = containers / "template-base" / manager.TEMPLATE_MANIFEST
    manifest.write_text('leave_out = ["40_nbgrader.py", "45_gone.py"]\n')
    with pytest.raises(ContainerError, match="leave_out names 45_gone.py, which Ananke does not ship"):
        manager.init(containers, "other-hub", "base")
    manifest.write_text("leave_out = [\n")
    with pytest.raises(ContainerError, match="template.toml: .*A template needs it"):
        manager.init(containers, "other-hub", "base")
    manifest.write_text("leave_out = []\n")
    (containers / "template-base" / "jupyterhub_config.d" / "30_lms.py").write_text("# mine\n")
    with pytest.raises(ContainerError, match="has the name of a shipped fragment"):
        manager.init(containers, "other-hub", "base")
    # Nothing half-made is left by a refusal.
    assert sorted(p.name for p in containers.iterdir()) == sorted(
        ["my-hub", "template-base", "template-nbgrader"]
    )


def test_init_on_the_command_line(tmp_path):
    containers = tmp_path / "containers"
    shutil.copytree(REPO / "containers", containers)
    result = subprocess.run(
        [sys.executable, "-m", "ananke_hub.cli", "container", "init", "my-hub",
         "--template", "base", "--containers-dir", str(containers)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ananke container create my-hub" in result.stdout
    assert (containers / "my-hub" / "jupyterhub_config.d" / "35_plain_login.py").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "ananke_hub.cli", "container", "init", "my-hub",
         "--containers-dir", str(containers)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 2
    assert "ananke container init: " in again.stderr and "exists already" in again.stderr


# -- the optional features as shipped fragments -------------------------------------------


def test_idle_culler_is_on_checks_every_12_hours_and_culls_after_3_days():
    config = load_fragments(SHIPPED_CONFIG_DIR).config
    [culler] = config.JupyterHub.services
    assert culler["name"] == "idle-culler"
    assert culler["command"][:3] == [sys.executable, "-m", "jupyterhub_idle_culler"]
    assert f"--timeout={3 * 24 * 3600}" in culler["command"]
    assert f"--cull-every={12 * 3600}" in culler["command"]
    [role] = config.JupyterHub.load_roles
    assert role["services"] == ["idle-culler"]
    assert set(role["scopes"]) == {
        "list:users",
        "read:users:activity",
        "read:servers",
        "delete:servers",
    }
    # The culler's own command line accepts these options (its traitlets aliases).
    from jupyterhub_idle_culler import IdleCuller

    app = IdleCuller()
    app.parse_command_line(culler["command"][3:])
    assert (app.timeout, app.cull_every) == (3 * 24 * 3600, 12 * 3600)


def test_named_servers_are_offered_off_with_a_limit_of_3_and_rtc_switches_them_on(tmp_path):
    config = load_fragments(SHIPPED_CONFIG_DIR).config
    assert config.JupyterHub.allow_named_servers is False
    assert config.JupyterHub.named_server_limit_per_user == 3
    fragments = tmp_path / "config.d"
    shutil.copytree(SHIPPED_CONFIG_DIR, fragments)
    (fragments / "80_rtc.py.disabled").rename(fragments / "80_rtc.py")
    config = load_fragments(fragments).config
    assert config.JupyterHub.allow_named_servers is True
    assert config.JupyterHub.named_server_limit_per_user == 3


def test_the_hub_keeps_the_culler_next_to_kore(tmp_path, monkeypatch):
    from ananke_hub.hubconfig import KORE_SERVICE, configure
    from ananke_hub.paths import StateLayout

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "")  # configure() sets it; restored after
    # Not about root labs (test_root_labs.py): the shipped bind is not loopback.
    monkeypatch.setattr("ananke_hub.hubconfig.check_root_labs", lambda c: None)
    c = Config()
    configure(c, SHIPPED_CONFIG_DIR, StateLayout(tmp_path / "state"))
    assert [s["name"] for s in c.JupyterHub.services] == ["idle-culler", KORE_SERVICE]
    assert "idle-culler" in [r["name"] for r in c.JupyterHub.load_roles]


# -- the manager against a fake podman ------------------------------------------------------

FAKE_PODMAN = """\
#!{python}
# A stand-in for podman: records argv, answers from FAKE_PODMAN_* variables.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PODMAN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
while args and args[0] == "--runtime":
    args = args[2:]
containers = [n for n in os.environ.get("FAKE_PODMAN_CONTAINERS", "").split(",") if n]
running = [n for n in os.environ.get("FAKE_PODMAN_RUNNING", "").split(",") if n]
images = [n for n in os.environ.get("FAKE_PODMAN_IMAGES", "").split(",") if n]
if args[:2] == ["container", "exists"]:
    sys.exit(0 if args[2] in containers else 1)
if args[:2] == ["image", "exists"]:
    sys.exit(0 if args[2] in images else 1)
if args[:1] == ["ps"]:
    print(json.dumps([
        {{"Names": [n], "State": "running" if n in running else "exited",
          "Status": "Up 2 hours" if n in running else "Exited (0)", "Image": "localhost/x",
          "Labels": {{}}}}
        for n in containers
    ]))
    sys.exit(0)
if args[:2] == ["container", "inspect"]:
    if args[-1] not in containers:
        sys.exit(125)
    print("true" if args[-1] in running else "false")
    sys.exit(0)
sys.exit(int(os.environ.get("FAKE_PODMAN_EXIT", "0")))
"""


@pytest.fixture
def podman(tmp_path, monkeypatch):
    """A fake podman on ANANKE_PODMAN; returns a function listing the calls made."""
    program = tmp_path / "bin" / "podman"
    program.parent.mkdir()
    program.write_text(FAKE_PODMAN.format(python=sys.executable))
    program.chmod(0o755)
    log = tmp_path / "podman-calls.jsonl"
    log.touch()
    monkeypatch.setenv("ANANKE_PODMAN", str(program))
    monkeypatch.setenv("FAKE_PODMAN_LOG", str(log))
    monkeypatch.setenv("FAKE_PODMAN_IMAGES", "ananke-nbgrader")
    for var in ("FAKE_PODMAN_CONTAINERS", "FAKE_PODMAN_RUNNING", "FAKE_PODMAN_EXIT"):
        monkeypatch.delenv(var, raising=False)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()]

    calls.program = str(program)
    return calls


@pytest.fixture
def hub(tmp_path):
    """containers/my-hub from the nbgrader template, LMS filled in."""
    containers = tmp_path / "containers"
    containers.mkdir()
    shutil.copytree(REPO / "containers" / "template-nbgrader", containers / "template-nbgrader")
    manager.init(containers, "my-hub", out=lambda _: None)
    (containers / "my-hub" / "jupyterhub_config.d" / "30_lms.py").write_text(FILLED_LMS)
    return containers


def test_create_makes_the_runtime_and_runs_the_generated_command(hub, podman):
    out = []
    assert manager.create(hub, "my-hub", out=out.append) == 0
    runtime = hub / "my-hub" / "runtime"
    for sub, mode in [("homes", 0o700), ("state", 0o700), ("exchange", 0o755)]:
        assert stat.S_IMODE((runtime / sub).stat().st_mode) == mode, sub
    *checks, run = podman()
    assert checks == [["container", "exists", "my-hub"], ["image", "exists", "ananke-nbgrader"]]
    assert run == run_argv(load_container(hub / "my-hub"), rootless=manager.is_rootless())[1:]
    assert any("(new)" in line for line in out)


def test_re_create_reuses_the_runtime_and_keeps_its_files(hub, podman):
    state = hub / "my-hub" / "runtime" / "state"
    manager.create(hub, "my-hub", out=lambda _: None)
    (state / "secrets").mkdir()
    (state / "secrets" / "jupyterhub_cookie_secret").write_text("kept")
    (hub / "my-hub" / "runtime" / "homes" / "u1").mkdir()
    assert manager.remove(hub, "my-hub", out=lambda _: None) == 0  # no container: nothing to do
    out = []
    manager.create(hub, "my-hub", out=out.append)
    assert (state / "secrets" / "jupyterhub_cookie_secret").read_text() == "kept"
    assert (hub / "my-hub" / "runtime" / "homes" / "u1").is_dir()
    assert any("(reused)" in line for line in out)


def test_remove_stops_and_removes_but_keeps_runtime(hub, podman, monkeypatch):
    manager.create(hub, "my-hub", out=lambda _: None)
    (hub / "my-hub" / "runtime" / "homes" / "u1").mkdir()
    monkeypatch.setenv("FAKE_PODMAN_CONTAINERS", "my-hub")
    out = []
    assert manager.remove(hub, "my-hub", out=out.append) == 0
    assert podman()[-2:] == [["stop", "my-hub"], ["rm", "my-hub"]]
    assert (hub / "my-hub" / "runtime" / "homes" / "u1").is_dir()
    assert "runtime" in out[-1]


def test_create_refuses_an_existing_container_and_a_missing_image(hub, podman, monkeypatch):
    monkeypatch.setenv("FAKE_PODMAN_CONTAINERS", "my-hub")
    with pytest.raises(ContainerError, match="exists already.*ananke container remove my-hub"):
        manager.create(hub, "my-hub")
    monkeypatch.delenv("FAKE_PODMAN_CONTAINERS")
    monkeypatch.setenv("FAKE_PODMAN_IMAGES", "")
    with pytest.raises(ContainerError, match="image ananke-nbgrader not found.*podman load"):
        manager.create(hub, "my-hub")
    assert not (hub / "my-hub" / "runtime").exists()


def test_create_reports_a_failed_podman_run_with_the_command(hub, podman, monkeypatch):
    monkeypatch.setenv("FAKE_PODMAN_EXIT", "125")
    with pytest.raises(
        ContainerError, match=r"(?s)podman run failed \(exit 125\).*--systemd=always"
    ):
        manager.create(hub, "my-hub", out=lambda _: None)


def test_create_refuses_fragment_errors_and_missing_host_paths(hub, podman):
    fragments = hub / "my-hub" / "jupyterhub_config.d"
    shutil.copy(SHIPPED_CONFIG_DIR / "30_lms.py", fragments / "30_lms.py")  # placeholder
    with open(hub / "my-hub" / "config.py", "a") as f:
        f.write('c.Container.volumes = ["/nonexistent/ananke-data:/srv/data:ro"]\n')
    with pytest.raises(ContainerError) as info:
        manager.create(hub, "my-hub")
    assert "30_lms.py:" in str(info.value) and "REPLACE-WITH-CLIENT-ID" in str(info.value)
    assert "/nonexistent/ananke-data does not exist" in str(info.value)
    assert podman() == []
    # Dry run prints the same problems and the command, and needs no podman.
    out = []
    assert manager.create(hub, "my-hub", dry_run=True, out=out.append) == 1
    assert out[-1].startswith("podman --runtime runc run ")


def test_dry_run_prints_the_command_without_podman(hub, monkeypatch):
    monkeypatch.setenv("ANANKE_PODMAN", "/nonexistent/podman")
    out = []
    assert manager.create(hub, "my-hub", dry_run=True, out=out.append) == 0
    assert out[-1].split(" ")[:4] == ["podman", "--runtime", "runc", "run"]
    assert not (hub / "my-hub" / "runtime").exists()


def test_missing_podman_is_a_clear_error(hub, monkeypatch):
    monkeypatch.setenv("ANANKE_PODMAN", "/nonexistent/podman")
    with pytest.raises(PodmanNotFound, match="apt-get install podman"):
        manager.create(hub, "my-hub")
    result = subprocess.run(
        [sys.executable, "-m", "ananke_hub.cli", "container", "create", "my-hub",
         "--containers-dir", str(hub)],
        capture_output=True, text=True, check=False, env=os.environ,
    )  # fmt: skip
    assert result.returncode == 2
    assert "ananke container create: podman not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_templates_and_unknown_names_are_refused(hub):
    shutil.copytree(REPO / "containers" / "template-base", hub / "template-base")
    with pytest.raises(ContainerError, match="is a template. Make a container from it"):
        manager.create(hub, "template-base")
    with pytest.raises(ContainerError, match="no container directory.*ananke container init"):
        manager.create(hub, "other-hub")
    with pytest.raises(ContainerError, match="not a container name"):
        manager.create(hub, "../my-hub")


def test_list_shows_podmans_state_per_directory(hub, podman, monkeypatch):
    shutil.copytree(REPO / "containers" / "template-base", hub / "template-base")
    shutil.copytree(hub / "my-hub", hub / "other-hub")
    monkeypatch.setenv("FAKE_PODMAN_CONTAINERS", "my-hub")
    monkeypatch.setenv("FAKE_PODMAN_RUNNING", "my-hub")
    listed = {c.directory: c for c in manager.list_containers(hub)}
    assert (listed["my-hub"].state, listed["my-hub"].status) == ("running", "Up 2 hours")
    assert listed["other-hub"].state == "not created"
    assert listed["template-base"].state == "template"
    assert podman() == [["ps", "--all", "--format", "json"]]
    monkeypatch.setenv("ANANKE_PODMAN", "/nonexistent/podman")
    assert {c.state for c in manager.list_containers(hub) if c.name != "-"} == {"unknown"}


def test_logs_read_the_hubs_journal_or_the_console_when_stopped(hub, podman, monkeypatch):
    monkeypatch.setenv("FAKE_PODMAN_CONTAINERS", "my-hub")
    monkeypatch.setenv("FAKE_PODMAN_RUNNING", "my-hub")
    assert manager.logs(hub, "my-hub", follow=True) == 0
    assert podman()[-1] == [
        "exec", "my-hub", "journalctl", "--no-pager", "-u", "jupyterhub.service",
        "-u", "jupyterhub-proxy.service", "--follow"
    ]  # fmt: skip
    monkeypatch.setenv("FAKE_PODMAN_RUNNING", "")
    out = []
    assert manager.logs(hub, "my-hub", out=out.append) == 0
    assert podman()[-1] == ["logs", "my-hub"]
    assert "not running" in out[0]


def test_shell_needs_a_running_container(hub, podman, monkeypatch):
    monkeypatch.setenv("FAKE_PODMAN_CONTAINERS", "my-hub")
    with pytest.raises(ContainerError, match="not running"):
        manager.shell(hub, "my-hub")
    monkeypatch.setenv("FAKE_PODMAN_RUNNING", "my-hub")
    assert manager.shell(hub, "my-hub") == 0
    assert podman()[-1] == ["exec", "-it", "my-hub", "bash"]


def test_host_checks_warn_about_cpus_beyond_the_cores_and_gpus_without_cdi(tmp_path):
    cores = os.cpu_count() or 1
    container = load_container(
        make_container(tmp_path, f'c.Container.cpus = {cores + 1}.0\nc.Container.gpus = ["all"]')
    )
    report = manager.check_host(container)
    assert report.errors == []
    assert any(f"has {cores} cores" in w for w in report.warnings)
    if not any(Path(d).is_dir() and any(Path(d).glob("nvidia*")) for d in manager.CDI_SPEC_DIRS):
        assert any("nvidia-ctk cdi generate" in w for w in report.warnings)
