"""`ananke check-config`: the shipped fragments against the real classes, and the mistakes
admins make (wrong types, typos, broken files, an unreachable LMS keyset)."""

import json
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ananke_hub.checkconfig import (
    ERROR,
    WARNING,
    Problem,
    check_config_dir,
    fetch_jwks_problem,
    print_report,
)
from ananke_hub.paths import SHIPPED_CONFIG_DIR

FILLED_LMS = """\
c = get_config()  # noqa

lms = "https://moodle.school.internal"

c.LMSRegistration.issuer = lms
c.LMSRegistration.client_id = "t9Kx2bQ"
c.LMSRegistration.deployment_ids = ["3"]
c.LMSRegistration.authorize_url = f"{lms}/mod/lti/auth.php"
c.LMSRegistration.jwks_url = JWKS_URL
c.LMSRegistration.access_token_url = f"{lms}/mod/lti/token.php"

c.LTI13LaunchValidator.time_leeway = 0
c.LTI13LaunchValidator.max_age = 600
"""


def write_lms(directory: Path, jwks_url="https://moodle.school.internal/mod/lti/certs.php"):
    (directory / "30_lms.py").write_text(FILLED_LMS.replace("JWKS_URL", repr(jwks_url)))


@pytest.fixture
def shipped(tmp_path):
    """A copy of the shipped fragments, 30_lms.py as shipped (with placeholders)."""
    directory = tmp_path / "config.d"
    shutil.copytree(SHIPPED_CONFIG_DIR, directory)
    return directory


@pytest.fixture
def filled(shipped):
    """The shipped fragments with a 30_lms.py holding real-looking values."""
    write_lms(shipped)
    return shipped


def errors(problems):
    return [p for p in problems if p.level == ERROR]


def warnings_(problems):
    return [p for p in problems if p.level == WARNING]


def only(problems, setting):
    return [p for p in problems if p.setting == setting]


# -- the shipped fragments --------------------------------------------------------------------


def test_filled_shipped_fragments_pass(filled):
    problems = check_config_dir(filled, check_network=False)
    assert errors(problems) == []
    assert [p for p in problems if (p.setting or "").startswith("LMSRegistration")] == []


def test_shipped_placeholders_give_exactly_the_expected_error(shipped):
    problems = check_config_dir(shipped, check_network=False)
    [error] = errors(problems)
    assert error.file.name == "30_lms.py"
    assert error.setting == "LMSRegistration.client_id"
    assert "REPLACE-WITH-CLIENT-ID" in error.message
    lines = (shipped / "30_lms.py").read_text().splitlines()
    assert "c.LMSRegistration.client_id" in lines[error.line - 1]
    # The example LMS address and the empty deployment list are only warnings.
    settings = {p.setting for p in warnings_(problems)}
    assert {"LMSRegistration", "LMSRegistration.deployment_ids"} <= settings


def test_disabled_fragment_is_skipped_and_passes_when_enabled(filled):
    rtc = filled / "80_rtc.py.disabled"
    rtc.write_text(rtc.read_text() + "\nc.Spawner.no_such_setting = 1\n")
    assert only(check_config_dir(filled, check_network=False), "Spawner.no_such_setting") == []

    shutil.copy(SHIPPED_CONFIG_DIR / "80_rtc.py.disabled", filled / "80_rtc.py")
    rtc.unlink()
    problems = check_config_dir(filled, check_network=False)
    assert errors(problems) == []


def test_empty_registration_names_the_lms_fragment(shipped):
    (shipped / "30_lms.py").unlink()
    problems = check_config_dir(shipped, check_network=False)
    # No LMS in 30_lms.py is allowed: LMSs register by URL (LTI Dynamic Registration).
    assert not errors(problems)
    (warning,) = [p for p in problems if p.setting == "LMSRegistration"]
    assert warning.file.name == "30_lms.py"
    assert "registration URL" in warning.message and "ananke lms registration-url" in warning.hint


def test_half_filled_registration_names_what_is_missing(shipped):
    lms = shipped / "30_lms.py"
    lms.write_text(
        "c = get_config()  # noqa\n"
        "c.LMSRegistration.issuer = 'https://moodle.example.edu'\n"
    )
    problems = check_config_dir(shipped, check_network=False)
    missing = {p.setting for p in errors(problems)}
    assert missing == {
        "LMSRegistration.client_id",
        "LMSRegistration.authorize_url",
        "LMSRegistration.jwks_url",
    }
    assert {p.file.name for p in errors(problems)} == {"30_lms.py"}


# -- mistakes in settings ---------------------------------------------------------------------


def test_string_where_an_int_belongs(filled):
    lms = filled / "30_lms.py"
    lms.write_text(lms.read_text().replace("time_leeway = 0", "time_leeway = '0'"))
    [error] = errors(check_config_dir(filled, check_network=False))
    assert error.file.name == "30_lms.py"
    assert error.setting == "LTI13LaunchValidator.time_leeway"
    assert error.message == "expected an int, got the str '0'"
    assert "without quotes" in error.hint
    assert error.format().startswith(
        "ERROR   30_lms.py:12: LTI13LaunchValidator.time_leeway: expected an int, got the str '0'"
    )


def test_unknown_trait_gets_a_suggestion(filled):
    (filled / "25_more.py").write_text('c = get_config()\nc.Authenticator.admin_user = {"u1"}\n')
    [error] = errors(check_config_dir(filled, check_network=False))
    assert error.setting == "Authenticator.admin_user"
    assert (error.file.name, error.line) == ("25_more.py", 2)
    assert "Authenticator.admin_users" in error.hint


def test_tls_in_the_hub_is_refused_with_the_reverse_proxy_as_the_fix(filled):
    """The hub's proxy (the PyPI port) has no TLS: with ssl_cert it exits at every start."""
    (filled / "25_tls.py").write_text(
        'c = get_config()\nc.JupyterHub.bind_url = "https://:8443"\n'
        'c.JupyterHub.ssl_cert = "/etc/ssl/hub.pem"\nc.JupyterHub.ssl_key = "/etc/ssl/hub.key"\n'
    )
    found = errors(check_config_dir(filled, check_network=False))
    assert [(e.setting, e.file.name, e.line) for e in found] == [
        ("JupyterHub.ssl_cert", "25_tls.py", 3),
        ("JupyterHub.ssl_key", "25_tls.py", 4),
    ]
    assert "cannot terminate TLS" in found[0].message
    assert "reverse proxy" in found[0].hint


def test_the_hubs_proxy_refuses_tls_arguments_with_the_fix():
    """What JupyterHub passes for ssl_cert: a clear refusal, not a traceback."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "ananke_hub.proxy", "--ssl-cert", "/c.pem", "--ssl-key", "/k"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot terminate TLS" in done.stderr and "reverse proxy" in done.stderr
    assert "Traceback" not in done.stderr


def test_setting_of_another_class_is_pointed_there(filled):
    (filled / "25_more.py").write_text(
        'c = get_config()\nc.AnankeLTI13Authenticator.access_token_url = "https://x.internal/t"\n'
    )
    [error] = errors(check_config_dir(filled, check_network=False))
    assert "c.LMSRegistration.access_token_url" in error.hint


def test_subclass_setting_through_parent_section_is_accepted(filled):
    # traitlets applies c.Spawner.* to the spawner subclass with its own traits.
    (filled / "25_more.py").write_text('c = get_config()\nc.Spawner.readonly_paths = ["/"]\n')
    assert errors(check_config_dir(filled, check_network=False)) == []


def test_unknown_class_is_a_warning(filled):
    (filled / "25_more.py").write_text("c = get_config()\nc.Authenticatr.allow_all = True\n")
    problems = check_config_dir(filled, check_network=False)
    assert errors(problems) == []
    [warning] = only(problems, "Authenticatr")
    assert warning.level == WARNING
    assert "no class Authenticatr among those Ananke loads; typo?" in warning.message
    assert "Authenticator" in warning.message


@pytest.mark.parametrize(
    "line, setting, expected",
    [
        ('c.Spawner.mem_limit = "2Q"', "Spawner.mem_limit", "not a valid memory"),
        ('c.Authenticator.allow_all = "yes"', "Authenticator.allow_all", "expected a boolean"),
        ("c.LMSRegistration.deployment_ids = 1", "LMSRegistration.deployment_ids", "list"),
        (
            'c.LMSRegistration.jwks_url = "ftp://x"',
            "LMSRegistration.jwks_url",
            "must be an http(s) URL",  # LMSRegistration's own @validate
        ),
        (
            'c.AnankeSystemdSpawner.unit_extra_properties = {"A": {"b": 1}}',
            "AnankeSystemdSpawner.unit_extra_properties",
            "must be a string or a list of strings",
        ),
        (
            'c.JupyterHub.spawner_class = "no-such-spawner"',
            "JupyterHub.spawner_class",
            "cannot import",
        ),
        (
            'c.JupyterHub.spawner_class = "jupyterhub.auth.Authenticator"',
            "JupyterHub.spawner_class",
            "subclass",
        ),
        (
            'c.Authenticator.allowed_users.append("u1")',
            "Authenticator.allowed_users",
            "is a set",
        ),
    ],
)
def test_rejected_values(filled, line, setting, expected):
    (filled / "25_more.py").write_text(f"c = get_config()\n{line}\n")
    problems = errors(check_config_dir(filled, check_network=False))
    assert [p.setting for p in problems] == [setting]
    assert expected in problems[0].message
    assert "object at 0x" not in problems[0].message


@pytest.mark.parametrize(
    "line",
    [
        'c.Authenticator.admin_users.add("u123")',
        'c.Spawner.args.append("--debug")',
        'c.JupyterHub.spawner_class = "ananke-local"',
        'c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"',
        'c.AnankeSystemdSpawner.unit_extra_properties = {"ReadWritePaths": ["/a", "/b"]}',
        'c.LMSRegistration.client_id = ["a", "b"]',
        'c.Spawner.mem_limit = "512M"',
    ],
)
def test_accepted_values(filled, line):
    (filled / "25_more.py").write_text(f"c = get_config()\n{line}\n")
    assert errors(check_config_dir(filled, check_network=False)) == []


def test_problems_name_their_own_fragment(filled):
    # Config.merge shares sections between fragments: a problem must still name the
    # fragment that has it, not the first one that configured the same class.
    (filled / "25_more.py").write_text('c = get_config()\nc.Spawner.mem_limit = "2Q"\n')
    [error] = errors(check_config_dir(filled, check_network=False))
    assert error.file.name == "25_more.py"


# -- broken fragments -------------------------------------------------------------------------


def test_syntax_error_names_file_and_line(filled):
    (filled / "25_broken.py").write_text('c = get_config()\n\nc.Spawner.args = ["a"\n')
    problems = check_config_dir(filled, check_network=False)
    [error] = errors(problems)
    assert (error.file.name, error.line) == ("25_broken.py", 3)
    assert "SyntaxError" in error.message
    assert error.format().startswith("ERROR   25_broken.py:3:")


def test_exception_names_file_and_line_and_other_files_are_still_checked(filled):
    (filled / "25_broken.py").write_text("c = get_config()\nx = 1\nx = x / 0\n")
    (filled / "26_more.py").write_text("c = get_config()\nc.Spawner.mem_limt = 1\n")
    problems = errors(check_config_dir(filled, check_network=False))
    assert [(p.file.name, p.line) for p in problems] == [("25_broken.py", 3), ("26_more.py", 2)]
    assert "ZeroDivisionError" in problems[0].message


def test_missing_directory(tmp_path):
    [error] = check_config_dir(tmp_path / "nope", check_network=False)
    assert error.level == ERROR
    assert "ananke init-config" in error.message


def test_top_level_value_is_not_a_setting(filled):
    (filled / "25_more.py").write_text("c = get_config()\nc.mem_limit = 1\n")
    [error] = errors(check_config_dir(filled, check_network=False))
    assert error.setting == "c.mem_limit"


# -- the LMS keyset ---------------------------------------------------------------------------


class _JWKSHandler(BaseHTTPRequestHandler):
    routes = {
        "/certs.php": (200, {"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}),
        "/notjwks": (200, {"hello": "world"}),
        "/nokeys": (200, {"keys": []}),
        "/gone": (404, {"error": "not found"}),
    }

    def do_GET(self):
        status, body = self.routes.get(self.path, (404, {}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def lms_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JWKSHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port():
    """A port bound by us but not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_reachable_jwks_gives_no_warning(filled, lms_server):
    write_lms(filled, f"{lms_server}/certs.php")
    problems = check_config_dir(filled, check_network=True)
    assert only(problems, "LMSRegistration.jwks_url") == []


def test_unreachable_jwks_is_a_warning(filled, closed_port):
    write_lms(filled, f"http://127.0.0.1:{closed_port}/mod/lti/certs.php")
    problems = check_config_dir(filled, check_network=True)
    [warning] = only(problems, "LMSRegistration.jwks_url")
    assert warning.level == WARNING
    assert "unreachable" in warning.message
    assert errors(problems) == []


def test_offline_does_not_fetch(filled, closed_port):
    write_lms(filled, f"http://127.0.0.1:{closed_port}/mod/lti/certs.php")
    assert only(check_config_dir(filled, check_network=False), "LMSRegistration.jwks_url") == []


@pytest.mark.parametrize(
    "path, expected",
    [("/notjwks", 'without a "keys" list'), ("/gone", "HTTP 404"), ("/nokeys", "no keys")],
)
def test_bad_jwks_answers(lms_server, path, expected):
    assert expected in fetch_jwks_problem(f"{lms_server}{path}")


def test_good_jwks_answer(lms_server):
    assert fetch_jwks_problem(f"{lms_server}/certs.php") is None


# -- output and the command -------------------------------------------------------------------


def test_report_exit_codes(capsys):
    warning = Problem(WARNING, Path("30_lms.py"), "LMSRegistration", "example", "fix it", 3)
    error = Problem(ERROR, Path("10_servers.py"), "Spawner.mem_limit", "bad", "fix it", 9)
    assert print_report([]) == 0
    assert print_report([warning]) == 0
    assert print_report([error, warning]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "check-config: no problems found."
    assert out[-3] == "ERROR   10_servers.py:9: Spawner.mem_limit: bad -> fix it"
    assert out[-2] == "WARNING 30_lms.py:3: LMSRegistration: example -> fix it"
    assert out[-1].startswith("check-config: 1 error, 1 warning.")


def _ananke(*args):
    script = Path(sys.executable).with_name("ananke")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ananke_hub.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_exit_codes(shipped, tmp_path):
    result = _ananke("check-config", "--offline", str(shipped))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "LMSRegistration.client_id" in result.stdout

    write_lms(shipped)
    result = _ananke("check-config", "--offline", str(shipped))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("check-config:")

    result = _ananke("check-config", "--offline", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "not found" in result.stdout


# -- private state and fragments --------------------------------------------------------------


def test_fragment_with_a_password_readable_by_others_is_a_warning(filled):
    fragment = filled / "60_db.py"
    fragment.write_text(
        "c = get_config()  # noqa\n"
        'c.CourseRegistry.url = "postgresql+psycopg://ananke:s3cret@db.internal/ananke"\n'
    )
    fragment.chmod(0o644)
    (warning,) = [p for p in check_config_dir(filled, check_network=False) if p.file == fragment]
    assert warning.level == WARNING and warning.setting == "c.CourseRegistry.url"
    assert "mode 0644" in warning.message and "s3cret" not in warning.format()
    assert f"chmod 600 {fragment}" in warning.hint

    fragment.chmod(0o600)
    assert [p for p in check_config_dir(filled, check_network=False) if p.file == fragment] == []


def test_service_token_in_a_fragment_is_a_secret(filled):
    fragment = filled / "60_services.json"
    fragment.write_text(
        json.dumps({"JupyterHub": {"services": [{"name": "x", "api_token": "abc123"}]}})
    )
    fragment.chmod(0o640)
    (warning,) = [p for p in check_config_dir(filled, check_network=False) if p.file == fragment]
    assert "c.JupyterHub.services[0].api_token" in warning.message


def test_state_dir_readable_by_others_is_a_warning(filled, tmp_path):
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True, mode=0o700)
    (state / "courses.sqlite").write_bytes(b"")
    state.chmod(0o755)
    (state / "courses.sqlite").chmod(0o644)
    problems = check_config_dir(filled, check_network=False, state_dir=state)
    flagged = {
        p.file: p
        for p in problems
        if p.file in (state, state / "secrets", state / "courses.sqlite")
    }
    assert set(flagged) == {state, state / "courses.sqlite"}
    assert "chmod 700" in flagged[state].hint and "mode 0755" in flagged[state].message

    state.chmod(0o700)
    (state / "courses.sqlite").chmod(0o600)
    problems = check_config_dir(filled, check_network=False, state_dir=state)
    assert [p for p in problems if p.file in (state, state / "courses.sqlite")] == []


def test_init_config_writes_private_fragments_whatever_the_umask(tmp_path):
    import os
    import stat

    target = tmp_path / "etc" / "config.d"
    old = os.umask(0)
    try:
        result = _ananke("init-config", str(target))
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    files = list(target.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


# --- traitlets' own loading: what the real class does with a setting ---------------------------


def test_settings_go_through_the_classs_own_observers_and_validators(tmp_path):
    from traitlets import Integer, TraitError, Unicode, observe, validate
    from traitlets.config import Configurable, PyFileConfigLoader

    from ananke_hub.checkconfig import KnownClasses, check_fragment

    class Queue(Configurable):
        size = Integer(1, config=True)
        mode = Unicode("fifo", config=True)

        @validate("size")
        def _positive(self, proposal):
            if proposal.value < 1:
                raise TraitError("size must be at least 1")
            return proposal.value

        @observe("mode")
        def _known_mode(self, change):
            # Checked where the hub checks it: when the setting is loaded.
            if change.new not in ("fifo", "lifo"):
                raise TraitError(f"mode must be fifo or lifo, not {change.new!r}")

    fragment = tmp_path / "25_queue.py"
    fragment.write_text("c.Queue.size = 0\nc.Queue.mode = 'random'\nc.Queue.size = 3\n")
    config = PyFileConfigLoader(fragment.name, path=str(tmp_path)).load_config()
    known = KnownClasses.empty()
    known.add(Queue)
    problems = check_fragment(fragment, config, known)
    assert [(p.setting, p.line) for p in problems] == [("Queue.mode", 2)]
    assert "mode must be fifo or lifo, not 'random'" in problems[0].message
