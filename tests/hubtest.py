"""Helpers for hub-level tests: a DemoStack with an admin API token, forged launches."""

import asyncio
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

from ananke_hub.keys import KeyStore
from ananke_hub.testlms import demo_data
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, DemoStack
from ananke_hub.testlms.settings import PlatformSettings
from ananke_hub.testlms.tokens import launch_claims, sign_id_token

ADMIN_SCOPES = ["admin:users", "admin:servers", "admin:auth_state", "list:users", "read:hub", "tokens", "read:groups"]


def admin_stack(root: Path, *, extra_config: dict | None = None, **kwargs) -> DemoStack:
    """A DemoStack whose hub knows a test service holding an admin API token."""
    token = secrets.token_hex(24)
    config = {
        "JupyterHub": {
            "services": [{"name": "test-admin", "api_token": token}],
            "load_roles": [{"name": "test-admin", "scopes": ADMIN_SCOPES, "services": ["test-admin"]}],
        }
    }
    for section, values in (extra_config or {}).items():
        config.setdefault(section, {}).update(values)
    stack = DemoStack(root, extra_config=config, **kwargs)
    stack.admin_token = token
    return stack


async def hub_api(stack: DemoStack, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.request(
            method,
            f"{stack.hub_url}/hub/api{path}",
            headers={"Authorization": f"token {stack.admin_token}"},
        )


def platform_settings(stack: DemoStack) -> PlatformSettings:
    return PlatformSettings(
        issuer=stack.platform_url,
        client_id=DEMO_CLIENT_ID,
        deployment_id=DEMO_DEPLOYMENT_ID,
        tool_target_link_uri=f"{stack.hub_url}/hub/",
    )


def platform_key(stack: DemoStack):
    return KeyStore(stack.root / "platform" / "keys").signing_key()


def person(sub: str) -> demo_data.User:
    return demo_data.User(sub, "Test", f"Person {sub}", f"p{sub}@example.edu", f"p{sub}")


def initiation(stack: DemoStack, sub: str = "3", **fields) -> dict:
    """The fields of the test LMS's login initiation for its activity "homework"."""
    return {
        "iss": stack.platform_url,
        "login_hint": sub,
        "target_link_uri": f"{stack.hub_url}/hub/",
        "client_id": DEMO_CLIENT_ID,
        "lti_deployment_id": DEMO_DEPLOYMENT_ID,
        "lti_message_hint": "homework",
        **fields,
    }


async def initiate(browser, stack: DemoStack, sub: str, **fields) -> tuple[str, str, httpx.Response]:
    """Post a login initiation to the hub; return (state, nonce, response)."""
    data = {k: v for k, v in initiation(stack, sub, **fields).items() if v is not None}
    resp = await browser.post(
        f"{stack.hub_url}/hub/lti13/oauth_login", data, stop_before=stack.platform_url
    )
    if resp.status_code != 302:
        return "", "", resp
    query = parse_qs(urlparse(resp.headers["location"]).query)
    return query["state"][0], query["nonce"][0], resp


def forge(stack, nonce, user, *, overrides=None, key=None, headers=None) -> str:
    claims = launch_claims(
        platform_settings(stack), user, demo_data.HOMEWORK, nonce, overrides=overrides
    )
    return sign_id_token(claims, key or platform_key(stack), headers=headers)


async def callback(browser, stack, id_token: str, state: str) -> httpx.Response:
    """Post the authentication response; do not follow the hub's redirect after login."""
    return await browser.post(
        f"{stack.hub_url}/hub/lti13/oauth_callback",
        {"id_token": id_token, "state": state},
        stop_before=stack.hub_url,
    )


async def wait_for_lab(browser, hub_url: str, username: str, timeout: float = 90) -> httpx.Response:
    """Open the user's JupyterLab as that user's browser, until the lab itself answers.

    The lab page, not an API URL: only a page sends the browser through the hub's OAuth
    step that gives it the single-user server's cookie.
    """
    url = f"{hub_url}/user/{username}/lab"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        resp = await browser.get(url)
        if resp.status_code == 200 and urlparse(str(resp.url)).path.startswith(f"/user/{username}/lab"):
            return resp
        if loop.time() > deadline:
            raise AssertionError(f"{username}'s lab did not come up: {resp.status_code} {resp.url}")
        await asyncio.sleep(1)


def hub_log(stack: DemoStack) -> str:
    return (stack.log_dir / "jupyterhub.log").read_text(errors="replace")
