"""The hub's LTI 1.3 launch against a platform we did not write: PyPI ``lti1p3platform``.

``tests/external_platform`` wraps the library in a tornado server with the built-in
platform's flags and routes; ``DemoStack`` starts it instead of ours. The library
builds the login initiation, checks the authentication request and signs the id_token;
its quirks are listed in ``external_platform/__init__.py``.
"""

import os
import stat
from pathlib import Path
from urllib.parse import urlparse

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from hubtest import wait_for_lab
from lti_browser import LTIBrowser, auto_submit_form

from ananke_hub.keys import thumbprint
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, DemoStack

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent
LINK = "ext-lab-1"
LTI = "https://purl.imsglobal.org/spec/lti/claim/"
LEARNER_ROLE = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
INSTRUCTOR_ROLE = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # DemoStack copies os.environ into the platform's process: `python -m
        # external_platform` must find the package in tests/.
        inherited = os.environ.get("PYTHONPATH")
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), inherited])))
        root = tmp_path_factory.mktemp("external-platform")
        # It keeps no gradebook across restarts: no --persist.
        stand_in = {"platform_module": "external_platform", "persist_platform": False}
        async with DemoStack(root, **stand_in) as demo:
            yield demo


open_lab = wait_for_lab


async def launch_and_read_token(b: LTIBrowser, stack: DemoStack, sub: str) -> tuple:
    """Launch as ``sub``; stop at the id_token post; return (page, its form, the verified claims)."""
    callback = f"{stack.hub_url}/hub/lti13/oauth_callback"
    page = await b.launch(stack.platform_url, sub, LINK, stop_before=callback)
    form = auto_submit_form(page)
    assert form is not None and form.action == callback, page.text
    assert form.method == "POST"
    jwks = (await b.get(f"{stack.platform_url}/jwks")).json()
    (jwk,) = jwks["keys"]
    claims = jwt.decode(
        form.fields["id_token"],
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=DEMO_CLIENT_ID,
        issuer=stack.platform_url,
    )
    return page, form, claims


async def test_keyset_is_the_library_view_of_a_private_key_file(stack):
    async with LTIBrowser() as b:
        r = await b.get(f"{stack.platform_url}/jwks")
    assert r.status_code == 200
    (jwk,) = r.json()["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    (key_file,) = (stack.root / "platform" / "keys").glob("*.pem")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The library's kid (jwcrypto's RFC 7638 thumbprint) names the key in the file.
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert jwk["kid"] == thumbprint(private.public_key())


async def test_learner_launch_logs_in_u101_and_opens_the_lab(stack):
    async with LTIBrowser() as b:
        page, form, claims = await launch_and_read_token(b, stack, "101")
        # What the library put into the id_token the hub is about to check.
        assert claims["sub"] == "101"
        assert claims[LTI + "roles"] == [LEARNER_ROLE]
        assert claims[LTI + "deployment_id"] == DEMO_DEPLOYMENT_ID
        assert claims[LTI + "resource_link"]["id"] == LINK
        assert claims[LTI + "context"]["id"] == "ext-phys-201"
        assert claims[LTI + "target_link_uri"] == f"{stack.hub_url}/hub/"
        assert claims["nonce"]

        r = await b.submit_form(page, form=form)
        assert r.status_code == 200, r.text
        path = urlparse(str(r.url)).path
        assert path.startswith(("/hub/spawn-pending/u101", "/user/u101/")), path
        lab = await open_lab(b, stack.hub_url, "u101")
        assert "JupyterLab" in lab.text
        # The server's API now takes this browser's cookie: it is u101's own server.
        status = await b.get(f"{stack.hub_url}/user/u101/api/status")
        assert status.status_code == 200 and "last_activity" in status.json()
        # Logged in to the hub as u101 and no one else.
        user = (await b.get(f"{stack.hub_url}/hub/api/user")).json()
        assert user["name"] == "u101"


async def test_instructor_launch_logs_in_u102(stack):
    async with LTIBrowser() as b:
        page, form, claims = await launch_and_read_token(b, stack, "102")
        assert claims["sub"] == "102"
        assert claims[LTI + "roles"] == [INSTRUCTOR_ROLE]
        r = await b.submit_form(page, form=form)
        assert r.status_code == 200, r.text
        await open_lab(b, stack.hub_url, "u102")
        user = (await b.get(f"{stack.hub_url}/hub/api/user")).json()
        assert user["name"] == "u102"


async def test_platform_refuses_a_redirect_uri_it_did_not_register(stack):
    """The library would post the id_token anywhere; our prepare_launch refuses."""
    login_url = f"{stack.hub_url}/hub/lti13/oauth_login"
    async with LTIBrowser() as b:
        page = await b.launch(stack.platform_url, "101", LINK, stop_before=login_url)
        init = auto_submit_form(page)
        assert init is not None and init.action == login_url
        # The hub's redirect to /auth, with the redirect_uri swapped.
        redirect = await b.submit_form(page, form=init, stop_before=f"{stack.platform_url}/auth")
        location = redirect.headers["location"]
        callback = f"{stack.hub_url}/hub/lti13/oauth_callback"
        assert callback.replace(":", "%3A").replace("/", "%2F") in location
        evil = location.replace("oauth_callback", "elsewhere")
        r = await b.get(evil)
        assert r.status_code == 400
        assert "is not the registered" in r.text
        assert "id_token" not in r.text
