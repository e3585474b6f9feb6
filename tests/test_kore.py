"""Kore as the hub runs it: a real ``python -m kore`` subprocess.

Each Kore gets its own state and config directories and a free port. Where a test
needs a hub, the one fake of the hub's API answers (``tests/fake_hub.py``: here the
routes Kore's login uses, ``GET /hub/api/user`` and ``POST /hub/api/oauth2/token``);
logging in through a real JupyterHub is covered by the integration tests.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from fake_hub import CLIENT_ID, KORE_SCOPE, SERVICE_TOKEN, FakeHub

from ananke_hub.paths import SHIPPED_CONFIG_DIR, StateLayout

PREFIX = "/services/kore/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url_to_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def rfc7638(jwk: dict) -> str:
    members = {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- running Kore --------------------------------------------------------------------------


class Kore:
    """One ``python -m kore`` process with the environment a hub-managed service gets."""

    def __init__(self, root: Path, api_url: str):
        self.root = root
        self.state_dir = root / "state"
        self.config_dir = root / "config.d"
        self.log_path = root / "kore.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_url = api_url
        self.proc = None
        self.drop_env: set[str] = set()
        self.extra_env: dict[str, str] = {}
        if not self.config_dir.exists():
            shutil.copytree(SHIPPED_CONFIG_DIR, self.config_dir)

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "ANANKE_"))}
        env.update(
            ANANKE_CONFIG_DIR=str(self.config_dir),
            ANANKE_STATE_DIR=str(self.state_dir),
            JUPYTERHUB_SERVICE_NAME="kore",
            JUPYTERHUB_SERVICE_URL=self.base,
            JUPYTERHUB_SERVICE_PREFIX=PREFIX,
            JUPYTERHUB_BASE_URL="/",
            JUPYTERHUB_API_URL=self.api_url,
            JUPYTERHUB_API_TOKEN=SERVICE_TOKEN,
            JUPYTERHUB_CLIENT_ID=CLIENT_ID,
            JUPYTERHUB_OAUTH_CALLBACK_URL=PREFIX + "oauth_callback",
            JUPYTERHUB_OAUTH_ACCESS_SCOPES=json.dumps(["access:services", KORE_SCOPE]),
        )
        env.update(self.extra_env)
        return {k: v for k, v in env.items() if k not in self.drop_env}

    def start(self, wait=True):
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kore"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Kore exited with {self.proc.returncode}:\n{self.log}")
            try:
                if httpx.get(self.url("jwks"), timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"Kore did not answer within 60 s:\n{self.log}")

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def url(self, path: str = "") -> str:
        return self.base + PREFIX + path

    def jwks(self) -> list[dict]:
        r = httpx.get(self.url("jwks"))
        assert r.status_code == 200, r.text
        return r.json()["keys"]


def rotate_keys(state_dir: Path) -> str:
    """Run `ananke keys rotate` as an admin would; return the new kid it reports."""
    result = subprocess.run(
        [sys.executable, "-m", "ananke_hub.cli", "keys", "--state-dir", str(state_dir), "rotate"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split("New signing key ", 1)[1].split(".", 1)[0]


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def kore(tmp_path_factory, hub):
    """A Kore shared by the tests that do not change its keys or config."""
    k = Kore(tmp_path_factory.mktemp("kore"), hub.api_url).start()
    yield k
    k.stop()


@pytest.fixture
def own_kore(tmp_path, hub):
    """A Kore of this test only (restarts, rotations)."""
    k = Kore(tmp_path, hub.api_url)
    yield k
    k.stop()


# --- the keyset ----------------------------------------------------------------------------


def test_jwks_publishes_one_rsa_signing_key(kore):
    r = httpx.get(kore.url("jwks"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert "max-age=300" in r.headers["cache-control"]
    (jwk,) = r.json()["keys"]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
    assert set(jwk) == {"kty", "e", "n", "kid", "alg", "use"}  # nothing private
    assert b64url_to_int(jwk["e"]) == 65537
    assert b64url_to_int(jwk["n"]).bit_length() == 2048
    assert jwk["kid"] == rfc7638(jwk)


def test_jwks_key_verifies_tokens_of_the_stored_private_key(kore):
    (jwk,) = kore.jwks()
    (pem,) = StateLayout(kore.state_dir).kore_keys.glob("*.pem")
    token = jwt.encode({"aud": "lms"}, pem.read_bytes(), algorithm="RS256")
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="lms")


def test_jwks_needs_no_login(kore):
    # The LMS has no hub login: no redirect, no cookie needed.
    r = httpx.get(kore.url("jwks"), follow_redirects=False)
    assert r.status_code == 200
    assert "set-cookie" not in r.headers


def test_key_files_are_private(kore):
    layout = StateLayout(kore.state_dir)
    assert mode(layout.secrets) == 0o700
    assert mode(layout.kore_keys) == 0o700
    (pem,) = layout.kore_keys.glob("*.pem")
    assert mode(pem) == 0o600
    assert mode(layout.secrets / "kore_cookie_secret") == 0o600


def test_restart_keeps_the_key_and_sigterm_stops_cleanly(own_kore):
    first = own_kore.start().jwks()
    assert own_kore.stop() == 0
    assert "Kore stopping" in own_kore.log
    assert own_kore.start().jwks() == first


def test_rotation_is_published_without_restart(own_kore):
    (old,) = own_kore.start().jwks()
    new_kid = rotate_keys(own_kore.state_dir)
    keys = own_kore.jwks()
    assert [k["kid"] for k in keys] == [old["kid"], new_kid]  # the signing key last
    assert keys[0] == old

    newer_kid = rotate_keys(own_kore.state_dir)
    assert [k["kid"] for k in own_kore.jwks()] == [new_kid, newer_kid]
    assert own_kore.proc.poll() is None
    # Kore started its key store once; the rotation did not restart it.
    assert own_kore.log.count("tool keyset:") == 1


def test_rotated_key_is_kept_after_restart(own_kore):
    own_kore.start()
    new_kid = rotate_keys(own_kore.state_dir)
    own_kore.stop()
    assert [k["kid"] for k in own_kore.start().jwks()][-1] == new_kid


# --- login -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "courses/anything", "no/such/page"])
def test_pages_send_anonymous_users_to_the_hub_login(kore, path):
    r = httpx.get(kore.url(path), follow_redirects=False)
    assert r.status_code == 302
    location = urlparse(r.headers["location"])
    assert location.path == "/hub/api/oauth2/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [PREFIX + "oauth_callback"]
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"]
    assert f"{CLIENT_ID}-oauth-state=" in r.headers["set-cookie"]


@pytest.mark.parametrize("path", ["api/me", "api/no-such-api"])
def test_api_without_token_is_403_json(kore, path):
    r = httpx.get(kore.url(path), follow_redirects=False)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == 403
    assert "Not logged in" in body["message"]


def test_api_with_a_token_the_hub_does_not_know_is_403(kore):
    r = httpx.get(kore.url("api/me"), headers={"Authorization": "token nobody-has-this"})
    assert r.status_code == 403
    assert r.json()["status"] == 403


def test_api_me_is_the_hub_user_of_the_token(kore, hub):
    hub.add_user("token-alice", "alice", admin=True, groups=["nbgrader-c2", "formgrade-c1"])
    r = httpx.get(kore.url("api/me"), headers={"Authorization": "token token-alice"})
    assert r.status_code == 200
    assert r.json() == {
        "kind": "user",
        "name": "alice",
        "admin": True,
        "groups": ["formgrade-c1", "nbgrader-c2"],
    }
    assert r.headers["cache-control"] == "no-store"


def test_api_me_takes_no_user_name_from_the_client(kore, hub):
    hub.add_user("token-bob", "bob")
    r = httpx.get(
        kore.url("api/me"),
        params={"user": "alice", "name": "alice"},
        headers={"Authorization": "token token-bob", "X-Forwarded-User": "alice"},
    )
    assert r.json()["name"] == "bob"


def test_hub_user_without_kore_scope_is_refused(kore, hub):
    hub.add_user("token-eve", "eve", scopes=["self"])
    r = httpx.get(kore.url("api/me"), headers={"Authorization": "token token-eve"})
    assert r.status_code == 403
    assert "eve may not use Kore" in r.json()["message"]
    page = httpx.get(
        kore.url(), headers={"Authorization": "token token-eve"}, follow_redirects=False
    )
    assert page.status_code == 403  # no login loop: logging in again would not help
    assert page.headers["content-type"].startswith("text/html")


def test_home_page_greets_the_user_escaped(kore, hub):
    hub.add_user("token-odd", "<script>x</script>")
    r = httpx.get(kore.url(), headers={"Authorization": "token token-odd"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "Hello, &lt;script&gt;x&lt;/script&gt;!" in r.text
    assert "<script>" not in r.text


def test_oauth_login_through_the_hub(kore, hub):
    hub.add_user("token-carol", "carol")
    with httpx.Client(base_url=kore.base, follow_redirects=False) as browser:
        r = browser.get(PREFIX)
        assert r.status_code == 302
        query = parse_qs(urlparse(r.headers["location"]).query)
        # The hub would now log carol in and send her back with a code.
        hub.codes["code-1"] = ("token-carol", query["code_challenge"][0])
        r = browser.get(
            PREFIX + "oauth_callback", params={"code": "code-1", "state": query["state"][0]}
        )
        assert r.status_code == 302, r.text
        assert r.headers["location"] == PREFIX
        request = hub.token_requests[-1]
        assert request["redirect_uri"] == PREFIX + "oauth_callback"

        r = browser.get(PREFIX)
        assert r.status_code == 200
        assert "Hello, carol!" in r.text
        assert browser.get(PREFIX + "api/me").json()["name"] == "carol"

    # The request log shows paths, not the OAuth code, state or tokens.
    log = kore.log
    assert "/services/kore/oauth_callback" in log
    for secret in ("code-1", query["state"][0], "token-carol", SERVICE_TOKEN):
        assert secret not in log


def test_a_url_token_is_ignored_as_jupyterhub_does_by_default(kore, hub):
    hub.add_user("token-gus", "gus")
    with httpx.Client(base_url=kore.base, follow_redirects=False) as browser:
        assert browser.get(PREFIX + "api/me", params={"token": "token-gus"}).status_code == 403
        assert not browser.cookies


def test_an_allowed_url_token_is_kept_in_the_cookie_for_the_next_requests(own_kore, hub):
    # JUPYTERHUB_ALLOW_TOKEN_IN_URL (c.HubOAuth.allow_token_in_url): then, as in
    # JupyterHub's own HubOAuthenticated, a navigation's ?token= becomes the login cookie.
    own_kore.extra_env["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] = "1"
    own_kore.start()
    hub.add_user("token-fay", "fay")
    with httpx.Client(base_url=own_kore.base, follow_redirects=False) as browser:
        r = browser.get(PREFIX + "api/me", params={"token": "token-fay"})
        assert r.status_code == 200 and r.json()["name"] == "fay"
        # The next request carries only the cookie.
        assert browser.get(PREFIX + "api/me").json()["name"] == "fay"
    with httpx.Client(base_url=own_kore.base, follow_redirects=False) as script:
        # Not from a page's script (fetch, XHR): only navigations.
        r = script.get(
            PREFIX + "api/me", params={"token": "token-fay"}, headers={"Sec-Fetch-Mode": "cors"}
        )
        assert r.status_code == 200
        assert script.get(PREFIX + "api/me").status_code == 403
        # A token the hub does not know is refused and kept nowhere.
        assert script.get(PREFIX + "api/me", params={"token": "nobody"}).status_code == 403
        assert script.get(PREFIX + "api/me").status_code == 403


def test_oauth_callback_with_a_forged_state_is_refused(kore, hub):
    hub.add_user("token-dave", "dave")
    with httpx.Client(base_url=kore.base, follow_redirects=False) as browser:
        r = browser.get(PREFIX)
        query = parse_qs(urlparse(r.headers["location"]).query)
        hub.codes["code-2"] = ("token-dave", query["code_challenge"][0])
        r = browser.get(PREFIX + "oauth_callback", params={"code": "code-2", "state": "forged"})
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("text/html")
        assert "state does not match" in r.text
        assert browser.get(PREFIX + "api/me").status_code == 403


def test_oauth_callback_needs_no_login_and_explains_errors(kore):
    r = httpx.get(kore.url("oauth_callback"), follow_redirects=False)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    assert "OAuth callback made without a token" in r.text


def test_prefix_without_slash_redirects_to_the_prefix(kore):
    r = httpx.get(kore.base + PREFIX.rstrip("/"), follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == PREFIX


# --- start-up errors -----------------------------------------------------------------------


def test_broken_fragment_stops_kore_with_the_file_name(own_kore):
    (own_kore.config_dir / "55_broken.py").write_text("c = get_config()  # noqa\nc.Kore.port = (\n")
    own_kore.start(wait=False)
    assert own_kore.proc.wait(timeout=60) != 0
    lines = [line for line in own_kore.log.splitlines() if "cannot start" in line]
    assert len(lines) == 1
    assert "55_broken.py" in lines[0]
    assert "Traceback" not in own_kore.log


def test_fragment_raising_stops_kore_with_the_file_and_line(own_kore):
    (own_kore.config_dir / "55_broken.py").write_text(
        "c = get_config()  # noqa\n\nc.Kore.port = int('not a number')\n"
    )
    own_kore.start(wait=False)
    assert own_kore.proc.wait(timeout=60) != 0
    assert "55_broken.py:3" in own_kore.log
    assert "Traceback" not in own_kore.log


def test_wrong_kore_setting_names_the_fragment(own_kore):
    (own_kore.config_dir / "55_port.py").write_text("c = get_config()  # noqa\nc.Kore.port = 'x'\n")
    own_kore.start(wait=False)
    assert own_kore.proc.wait(timeout=60) != 0
    assert "55_port.py" in own_kore.log
    assert "Traceback" not in own_kore.log


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("c.LTIAdvantage.concurrency = 100", "must be 1 to 64, not 100"),
        ("c.LTIAdvantage.request_timeout = 'slow'", "expected a float"),
        ("c.CourseRegistry.threads = 0", "at least 1"),
        ("c.CourseManager.max_backup_bytes = -1", "CourseManager.max_backup_bytes"),
        ("c.Kore.roster_sync_interval = 5", "at least 60 seconds"),
        ("c.LTIAdvantage.concurency = 8", "has no setting 'concurency'"),
    ],
)
def test_a_bad_setting_stops_kore_at_start_naming_file_line_and_setting(own_kore, setting, words):
    # Before, a bad c.LTIAdvantage value started Kore fine and gave the instructor a 500
    # at the first "Send grades".
    (own_kore.config_dir / "55_tuning.py").write_text(f"c = get_config()  # noqa\n\n{setting}\n")
    own_kore.start(wait=False)
    assert own_kore.proc.wait(timeout=60) != 0
    section_key = setting.split(" =")[0].removeprefix("c.")
    line = next(x for x in own_kore.log.splitlines() if "55_tuning.py:3" in x)
    assert section_key in line and words in line, own_kore.log
    assert "Traceback" not in own_kore.log


def test_corrupt_key_file_stops_kore_with_the_file_name(own_kore):
    keys = StateLayout(own_kore.state_dir).kore_keys
    keys.mkdir(parents=True)
    (keys / "01700000000000000000-broken.pem").write_text("garbage")
    own_kore.start(wait=False)
    assert own_kore.proc.wait(timeout=60) != 0
    assert "01700000000000000000-broken.pem" in own_kore.log
    assert "Traceback" not in own_kore.log


def test_without_hub_credentials_only_jwks_works(own_kore):
    own_kore.drop_env = {"JUPYTERHUB_API_TOKEN", "JUPYTERHUB_CLIENT_ID"}
    own_kore.start()
    assert own_kore.jwks()
    r = httpx.get(own_kore.url(), follow_redirects=False)
    assert r.status_code == 503
    assert "Start Kore through the hub" in r.text


# --- with a real JupyterHub ----------------------------------------------------------------


@pytest.mark.slow
async def test_hub_starts_kore_and_its_oauth_login_works(tmp_path):
    """The shipped hub config starts Kore; an LTI-launched user logs in to Kore by OAuth."""
    from lti_browser import LTIBrowser

    from ananke_hub.testlms.demo import DemoStack

    async with DemoStack(tmp_path) as stack:
        hub = stack.hub_url
        async with LTIBrowser() as b:
            # Through the hub's proxy, without login: the LMS's view of the keyset.
            # (DemoStack.start returns once this route answers 200.)
            r = await b.get(f"{hub}/services/kore/jwks")
            assert r.status_code == 200, r.text
            (jwk,) = r.json()["keys"]
            assert jwk["kid"] == rfc7638(jwk)

            await b.launch(stack.platform_url, "3", "homework")
            r = await b.get(f"{hub}/services/kore/")
            assert r.status_code == 200, r.text
            assert urlparse(str(r.url)).path == "/services/kore/"
            # The hub sent the browser through its OAuth authorize step to Kore.
            assert any("/hub/api/oauth2/authorize" in str(h.url) for h in b.history)
            me = (await b.get(f"{hub}/services/kore/api/me")).json()
            assert me["kind"] == "user"
            assert me["name"] == "u3"
            assert "Hello, Alan Turing!" in r.text  # the person's name from the LMS
