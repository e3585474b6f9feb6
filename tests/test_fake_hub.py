"""The fake hub answers as the real JupyterHub does.

The same requests go to a real JupyterHub (the installed release, with the proxy Ananke
ships and a service holding Kore's scopes) and to ``tests/fake_hub.py``; every status
code must be the same. A new route in the fake needs its requests here.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fake_hub import FakeHub
from test_kore import free_port

pytestmark = pytest.mark.slow

TOKEN = secrets.token_hex(16)
#: Kore's scopes (ananke_hub/hubconfig.py, the kore-service role) and the group ones.
SCOPES = ["servers", "read:users:name", "admin:users", "admin:groups", "groups", "read:groups"]

#: (method, path below /hub/api, JSON body): run in order, on the same state.
CALLS = [
    ("GET", "/user", None),  # the service's own token: 200, a service model
    ("GET", "/users/nobody", None),
    ("POST", "/users/u1", None),
    ("POST", "/users/u1", None),  # exists
    ("POST", "/users", {"usernames": ["u1", "u2"]}),  # one new
    ("POST", "/users", {"usernames": ["u1", "u2"]}),  # all exist
    ("POST", "/users", {"usernames": []}),
    ("GET", "/users/u2", None),
    ("GET", "/groups/g1", None),  # missing
    ("POST", "/groups/g1", None),
    ("POST", "/groups/g1", None),  # exists
    ("GET", "/groups/g1", None),
    ("POST", "/groups/g1/users", {"users": ["u1"]}),
    ("POST", "/groups/g1/users", {"users": ["u1", "nobody"]}),  # an unknown user: 400
    ("POST", "/groups/g1/users", {}),  # no users
    ("POST", "/groups/nogroup/users", {"users": ["u1"]}),
    ("DELETE", "/groups/g1/users", {"users": ["nobody"]}),
    ("DELETE", "/groups/nogroup/users", {"users": ["u1"]}),  # the group went meanwhile
    ("DELETE", "/groups/nogroup/users", {"users": ["nobody"]}),  # ... and the user too
    ("POST", "/groups/nogroup/users", {"users": ["nobody"]}),
    ("DELETE", "/groups/g1/users", {"users": ["u1"]}),
    ("DELETE", "/users/u2/server", None),  # not running
    ("POST", "/users/nobody/server", None),
    ("DELETE", "/users/nobody/server", None),
    ("DELETE", "/users/u2", None),
    ("DELETE", "/users/u2", None),  # gone
    ("DELETE", "/users/u2/server", None),  # a server of a user who is gone
    ("POST", "/groups/g1/users", {"users": ["u1"]}),
    ("DELETE", "/groups/g1/users", {"users": ["u1", "u2"]}),  # u2 was deleted meanwhile
    ("GET", "/groups/g1", None),  # u1 is still in: a refused removal removed no one
    ("DELETE", "/groups/g1", None),
    ("DELETE", "/groups/g1", None),  # gone
]


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    port, hub_port, api_port = free_port(), free_port(), free_port()
    config = {
        "JupyterHub": {
            "ip": "127.0.0.1",
            "port": port,
            "hub_ip": "127.0.0.1",
            "hub_port": hub_port,
            "authenticator_class": "dummy",
            "db_url": f"sqlite:///{root / 'jupyterhub.sqlite'}",
            "cookie_secret_file": str(root / "cookie_secret"),
            "pid_file": str(root / "jupyterhub.pid"),
            "services": [{"name": "kore", "api_token": TOKEN}],
            "load_roles": [{"name": "kore-service", "scopes": SCOPES, "services": ["kore"]}],
        },
        "Authenticator": {"allow_all": True},
        "ConfigurableHTTPProxy": {
            "command": [sys.executable, "-m", "ananke_hub.proxy"],
            "api_url": f"http://127.0.0.1:{api_port}",
            "pid_file": str(root / "proxy.pid"),
        },
    }
    (root / "jupyterhub_config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(16)
    log = open(root / "hub.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(root / "jupyterhub_config.json")],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    api_url = f"http://127.0.0.1:{hub_port}/hub/api"
    for _ in range(450):  # up to ~90 s for the hub to answer
        assert proc.poll() is None, (root / "hub.log").read_text()
        try:
            if httpx.get(api_url + "/", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        pytest.fail("the hub did not answer: " + (root / "hub.log").read_text())
    yield api_url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def statuses(api_url: str, token: str) -> list[tuple[str, str, int]]:
    answers = []
    with httpx.Client(headers={"Authorization": f"token {token}"}, timeout=30) as client:
        for method, path, body in CALLS:
            content = json.dumps(body).encode() if body is not None else None
            status = client.request(method, api_url + path, content=content).status_code
            answers.append((method, path, status))
    return answers


def test_the_fake_answers_every_call_as_the_real_hub(real_hub):
    real = statuses(real_hub, TOKEN)
    with FakeHub(service_token=TOKEN) as fake:
        fake.users_by_token[TOKEN] = {"kind": "service", "name": "kore"}
        assert statuses(fake.api_url, TOKEN) == real


def test_a_token_the_hub_does_not_know_is_refused_alike(real_hub):
    with FakeHub(service_token=TOKEN) as fake:
        for api_url in (real_hub, fake.api_url):
            with httpx.Client(headers={"Authorization": "token nobody-has-this"}) as client:
                assert client.get(api_url + "/user").status_code == 403
                assert client.post(api_url + "/groups/g2").status_code == 403
