"""Hub-level: the hub holds under abuse (issue 12, parts 2, 3 and 4).

One real hub, Kore and built-in LMS, started with umask 0, the hub, Kore and the LMS
at DEBUG, and secrets planted in the config (a service token, a password in the LMS's
keyset URL). Launches, a roster sync, a grade sync and the CLI's syncs run through
it; then:

- every state file is private (0600 files, 0700 directories) and another uid
  (``nobody``) cannot read any of them;
- oversized bodies to the login routes are refused with 413 from their headers, an
  oversized id_token with 413, and auth_state holds only what Ananke reads, from
  which both syncs work;
- no secret is in any log line of the hub, Kore, the LMS or the CLI.
"""

import asyncio
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hubtest import admin_stack, callback, forge, hub_api, initiate, person
from lti_browser import LTIBrowser
from test_grade_sync import add_assignment, submit
from test_grades_hub import course, finished, kore, layout, token

from ananke_hub.courses.identity import KEPT_CLAIMS, LaunchInfo, kept_claims
from ananke_hub.keys import KeyStore

pytestmark = pytest.mark.slow

PLANTED_PASSWORD = "pw-planted-7f3a9c"
PLANTED_TOKEN = "tok0planted0a1b2c3d4e5f60718293a4b"
PLANTED_LAB_TOKEN = "labtok0planted0f9e8d7c6b5a4"
PLANTED_CLAIM = "https://example.edu/planted"
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    s = admin_stack(root, platform_args=["--test-api", "--log-level=DEBUG"])
    # Planted secrets: a service's token, a token in the labs' environment added the
    # way an admin's fragment may (update: a lazy config value, which makes traitlets
    # log "Config changed: {...}" at DEBUG), and a password in the keyset URL (basic
    # auth, which the built-in LMS ignores).
    s.extra_config["JupyterHub"]["services"].append({"name": "planted", "api_token": PLANTED_TOKEN})
    s.config_dir.mkdir(parents=True)
    (s.config_dir / "95_planted.py").write_text(
        "c = get_config()  # noqa\n"
        'c.JupyterHub.log_level = "DEBUG"\n'
        'c.Kore.log_level = "DEBUG"\n'
        f'c.Spawner.environment.update({{"STORAGE_API_TOKEN": "{PLANTED_LAB_TOKEN}"}})\n'
    )
    s.registration = _with_password(s.registration)
    # Whatever the umask: files that are private are so by their own mode.
    old_umask = os.umask(0)
    try:
        await s.start()
    finally:
        os.umask(old_umask)
    try:
        s.id_tokens = []
        for sub in ("2", "3", "4"):
            async with LTIBrowser() as browser:
                assert (await browser.launch(s.platform_url, sub, "homework")).status_code == 200
        yield s
    finally:
        await s.stop()


def _with_password(registration):
    def with_password():
        values = registration()
        values["jwks_url"] = values["jwks_url"].replace(
            "http://", f"http://ananke:{PLANTED_PASSWORD}@"
        )
        return values

    return with_password


# -- part 3: request and token limits ---------------------------------------------------------


def raw_request(port: int, head: str, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) on a new connection; the answer until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode() + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and len(answer) > 4096:
                break
        return answer


@pytest.mark.parametrize("route", ["oauth_login", "oauth_callback"])
async def test_huge_declared_body_is_refused_before_it_is_sent(stack, route):
    # Only the headers go out: the 413 comes back without the hub reading any body.
    # Sent to the hub's own port: the proxy in front reads a whole body (up to tornado's
    # 100 MB) before it forwards the request; the hub then refuses it from its headers.
    head = (
        f"POST /hub/lti13/{route} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    )
    answer = await asyncio.to_thread(raw_request, stack.ports.hub_api, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


@pytest.mark.parametrize("route", ["oauth_login", "oauth_callback"])
async def test_body_over_the_limit_is_413_and_the_hub_still_serves(stack, route):
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{stack.hub_url}/hub/lti13/{route}", data={"iss": "x", "pad": "a" * 300_000}
        )
        assert resp.status_code == 413
        assert "262144 bytes" in resp.text

        # A chunked body (no Content-Length) is cut off at the same limit.
        async def chunks():
            for _ in range(10):
                yield b"a" * 65536

        try:
            chunked = await http.post(f"{stack.hub_url}/hub/lti13/{route}", content=chunks())
            # 503: the proxy's answer when the hub cut the connection at the limit while
            # the proxy was still sending (a race under load); never the hub accepting it.
            assert chunked.status_code in (400, 413, 503)
        except httpx.TransportError:
            pass  # tornado closed the connection at the limit
        assert (await http.get(f"{stack.hub_url}/hub/health")).status_code == 200


async def test_oversized_id_token_is_refused_with_413(stack):
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, "5")
        big = forge(stack, nonce, person("5"), overrides={PLANTED_CLAIM: "x" * 100_000})
        resp = await callback(browser, stack, big, state)
    assert resp.status_code == 413
    assert "max_id_token_bytes" in resp.text and "id_token" in resp.text
    assert (await hub_api(stack, "/users/u5")).status_code == 404


async def test_auth_state_keeps_only_what_ananke_reads(stack):
    # A learner of the course (a person with no course role opens nothing).
    async with LTIBrowser() as browser:
        state, nonce, _ = await initiate(browser, stack, "4")
        id_token = forge(stack, nonce, person("4"), overrides={PLANTED_CLAIM: "y" * 4000})
        stack.id_tokens.append(id_token)
        resp = await callback(browser, stack, id_token, state)
    assert resp.status_code == 302, resp.text
    auth_state = (await hub_api(stack, "/users/u4")).json()["auth_state"]
    assert set(auth_state) <= set(KEPT_CLAIMS)
    assert PLANTED_CLAIM not in auth_state and "nonce" not in auth_state
    assert auth_state["sub"] == "4"
    # What a launch is read as does not change by what is left out.
    import jwt

    full = jwt.decode(id_token, options={"verify_signature": False})
    assert LaunchInfo.from_id_token(auth_state, "u4") == LaunchInfo.from_id_token(full, "u4")
    assert kept_claims(full) == auth_state


async def test_roster_and_grade_sync_work_from_what_is_kept(stack):
    ada = await token(stack, "u2")
    started = await kore(stack, ada, "POST", "roster/sync", {})
    assert started.status_code == 202, started.text
    run = await finished(stack, ada, "roster", started.json()["run_id"])
    assert run["state"] == "finished", run

    cid = course(stack)
    add_assignment(layout(stack), cid, "hw1", 6, 4)
    submit(layout(stack), cid, "u3", "hw1", 5, 2)
    started = await kore(stack, ada, "POST", "grades/sync", {"missing": "zero"})
    assert started.status_code == 202, started.text
    run = await finished(stack, ada, "grades", started.json()["run_id"])
    assert run["state"] == "finished", run
    async with httpx.AsyncClient() as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    assert 7 in {s["scoreGiven"] for s in ds101["scores"] if s["userId"] == "3"}


async def test_cli_syncs_run(stack):
    env = {
        **os.environ,
        "ANANKE_CONFIG_DIR": str(stack.config_dir),
        "ANANKE_STATE_DIR": str(stack.layout.root),
        "JUPYTERHUB_API_URL": f"{stack.hub_url}/hub/api",
        "JUPYTERHUB_API_TOKEN": stack.admin_token,
    }
    outputs = []
    for kind in ("grades", "roster"):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ananke_hub.cli", kind, "sync", course(stack)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        outputs.append(result.stdout + result.stderr)
        assert result.returncode in (0, 1), outputs[-1]
    (stack.log_dir / "cli.log").write_text("\n".join(outputs))


# -- part 2: private state -------------------------------------------------------------------


def state_files(stack) -> list[Path]:
    """The hub's and Kore's secrets and databases (homes and the exchange are the labs')."""
    root = stack.layout.root
    files = [*root.glob("*.sqlite*"), *(p for p in stack.layout.secrets.rglob("*"))]
    return sorted(files)


async def test_state_is_private_whatever_the_umask(stack):
    root = stack.layout.root
    files = state_files(stack)
    names = {p.name for p in files}
    assert {"jupyterhub.sqlite", "courses.sqlite", "jupyterhub_crypt_key"} <= names
    assert "courses.sqlite-wal" in names  # WAL: the companion files are checked too
    assert any(p.suffix == ".pem" for p in files)
    for path in [root, stack.layout.secrets, *files]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {mode:04o}"


def _read_as_nobody(paths: list[str]) -> dict:
    """In a child process running as ``nobody``: which of ``paths`` it could open."""
    nobody = pwd.getpwnam("nobody")

    def drop():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    script = (
        "import json, sys\n"
        "readable = []\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        open(p, 'rb').close(); readable.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(readable))\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", script, json.dumps(paths)],
        preexec_fn=drop,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_another_user_cannot_read_any_state_file(stack):
    assert IS_ROOT or not os.environ.get("CI"), "CI runs the tests as root"
    if not IS_ROOT:
        pytest.skip("needs root to run a check as another uid")
    files = [str(p) for p in state_files(stack) if p.is_file()]
    assert await asyncio.to_thread(_read_as_nobody, files) == []
    # Not only because the state directory is closed: each file on its own.
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


# -- part 4: no secret in any log ------------------------------------------------------------


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")
CREDENTIAL = re.compile(
    r"\b(?:token|bearer)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]*\d[A-Za-z0-9._~+/=-]{7,}", re.I
)


def kore_environ(stack) -> dict:
    hub_pid = stack.processes["jupyterhub"].pid
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if b"-m\0kore" in cmdline and f"PPid:\t{hub_pid}\n" in status:
            raw = (proc / "environ").read_bytes().split(b"\0")
            return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    raise AssertionError("Kore is not running under the hub")


async def test_no_secret_in_any_log_at_debug(stack):
    layout = stack.layout
    key_pem = KeyStore(layout.kore_keys).signing_key().private_pem.decode()
    kore_env = kore_environ(stack)
    secrets = {
        "admin service token": stack.admin_token,
        "planted service token": PLANTED_TOKEN,
        "planted token in the labs' environment": PLANTED_LAB_TOKEN,
        "password in the keyset URL": PLANTED_PASSWORD,
        "crypt key": layout.crypt_key.read_text().strip(),
        "hub cookie secret": layout.cookie_secret.read_text().strip(),
        "Kore cookie secret": (layout.secrets / "kore_cookie_secret").read_text().strip(),
        "Kore's hub API token": kore_env["JUPYTERHUB_API_TOKEN"],
        "Kore's private key": key_pem.splitlines()[1],
        "a user's API token": await token(stack, "u2"),
    }
    for i, id_token in enumerate(stack.id_tokens):
        secrets[f"id_token {i}"] = id_token.split(".")[2]  # its signature
    logs = {p.name: p.read_text(errors="replace") for p in stack.log_dir.glob("*.log")}
    assert {"jupyterhub.log", "platform.log", "cli.log"} <= set(logs)
    # The hub and Kore logged at DEBUG, Kore its whole config (or this test would prove
    # little); the LMS runs with --log-level=DEBUG but its format shows no level below
    # WARNING.
    assert "Config changed" in logs["jupyterhub.log"]
    assert re.search(r"^\[D .* JupyterHub ", logs["jupyterhub.log"], re.M)
    assert re.search(r"^\[D \S+ \S+ (Kore|tornado\.\w+)\]", logs["jupyterhub.log"], re.M)
    found = [
        f"{what} in {name}"
        for name, text in logs.items()
        for what, value in secrets.items()
        if value and value in text
    ]
    found += [
        f"a JWT in {name}: {m[:40]}" for name, text in logs.items() for m in JWT.findall(text)
    ]
    found += [
        f"a credential in {name}: {m[:40]}"
        for name, text in logs.items()
        for m in CREDENTIAL.findall(text)
    ]
    assert found == []
