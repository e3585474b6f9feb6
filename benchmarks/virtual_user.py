"""One virtual user's LTI 1.3 login against a running hub, timed.

A launch here is the hub's part of the login (IMS Security Framework 1.0, 5.1.1 and
5.1.3, https://www.imsglobal.org/spec/security/v1p0/#openid_connect_launch_flow):

1. login initiation: POST ``<hub>/hub/lti13/oauth_login``; the hub sets its state and
   nonce cookies and redirects to the platform's /auth with ``state`` and ``nonce``;
2. callback: POST ``<hub>/hub/lti13/oauth_callback`` with the id_token and ``state``;
   the hub verifies the token, logs the user in and redirects into the hub.

The platform's /auth is not used: it knows four demo users, and what it costs is the
LMS's time, not the hub's. The id_token is built and signed here with the platform's
own key, as /auth would. The spawn that follows a real launch is not part of it.
"""

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from ananke_hub.keys import KeyStore
from ananke_hub.testlms import constants as C
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, DemoStack
from ananke_hub.testlms.demo_data import Context, Member, ResourceLink, User
from ananke_hub.testlms.settings import PlatformSettings
from ananke_hub.testlms.tokens import launch_claims, sign_id_token

#: The cookie JupyterHub sets once a user is logged in to the hub.
HUB_LOGIN_COOKIE = "jupyterhub-hub-login"
FIRST_SUB = 1000

BENCH_LINK = ResourceLink("bench-homework", "Benchmark homework")

# One TLS context for every client: httpx builds one per client otherwise (tens of ms of
# CPU each), and all traffic is plain HTTP to 127.0.0.1 anyway.
_TLS = ssl.create_default_context()


def bench_user(index: int) -> User:
    sub = str(FIRST_SUB + index)
    return User(sub, "Bench", f"User {sub}", f"bench{sub}@example.edu", f"bench{sub}")


def bench_course(users: int) -> Context:
    """A course in which every virtual user is a learner."""
    return Context(
        id="bench101",
        label="BENCH101",
        title="Benchmark 101",
        links=(BENCH_LINK,),
        members=tuple(Member(bench_user(i).sub, (C.ROLE_LEARNER,)) for i in range(users)),
    )


@dataclass
class LaunchResult:
    sub: str
    ok: bool
    initiation_ms: float | None = None
    callback_ms: float | None = None
    error: str | None = None

    @property
    def login_ms(self) -> float | None:
        if self.initiation_ms is None or self.callback_ms is None:
            return None
        return self.initiation_ms + self.callback_ms


class LaunchFailed(Exception):
    """A step of the launch did not answer as a working hub does."""


def _local_only(url: str) -> str:
    # The benchmark talks to the demo stack on 127.0.0.1 and nowhere else.
    host = urlsplit(url).hostname
    if host != "127.0.0.1":
        raise ValueError(f"refusing to send benchmark traffic to {host!r}: 127.0.0.1 only")
    return url


class LaunchDriver:
    """Launches of virtual users against one :class:`DemoStack`."""

    def __init__(
        self, stack: DemoStack, users: int, *, direct: bool = False, timeout: float = 60.0
    ):
        #: The hub's public URL: its proxy, which forwards /hub/ to the hub's own server.
        self.proxy_url = _local_only(stack.hub_url)
        #: The hub's own server (JupyterHub.hub_bind_url), without the proxy in between.
        self.hub_server_url = _local_only(f"http://127.0.0.1:{stack.ports.hub_api}")
        # Where launches go: through the proxy as a browser does, or straight to the hub.
        self.hub_url = self.hub_server_url if direct else self.proxy_url
        self.platform_url = _local_only(stack.platform_url)
        self.login_url = f"{self.hub_url}/hub/lti13/oauth_login"
        self.callback_url = f"{self.hub_url}/hub/lti13/oauth_callback"
        self.target_link_uri = f"{self.hub_url}/hub/"
        self.timeout = timeout
        self.course = bench_course(users)
        self.settings = PlatformSettings(
            issuer=self.platform_url,
            client_id=DEMO_CLIENT_ID,
            deployment_id=DEMO_DEPLOYMENT_ID,
            tool_target_link_uri=self.target_link_uri,
        )
        # The platform created its key at start-up; the hub fetches its public half.
        self.signing_key = KeyStore(Path(stack.root) / "platform" / "keys").signing_key()

    def new_client(self) -> httpx.AsyncClient:
        """A browser of its own: one cookie jar, redirects not followed, no proxies."""
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.timeout,
            trust_env=False,
            verify=_TLS,
            # A top-level window of a modern browser (Fetch Metadata): without it the hub
            # first asks the browser whether it is in a frame (ananke_hub/framing.py).
            headers={"Sec-Fetch-Dest": "document"},
        )

    async def launch(
        self,
        client: httpx.AsyncClient,
        user: User,
        *,
        link: ResourceLink = BENCH_LINK,
        context: Context | None = None,
    ) -> LaunchResult:
        """One launch of ``link`` (in ``context``, by default the benchmark course) by ``user``."""
        result = LaunchResult(sub=user.sub, ok=False)
        try:
            await self._launch(client, user, result, link, context or self.course)
            result.ok = True
        except LaunchFailed as exc:
            result.error = str(exc)
        except httpx.HTTPError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    async def _launch(
        self,
        client: httpx.AsyncClient,
        user: User,
        result: LaunchResult,
        link: ResourceLink,
        context: Context,
    ):
        # 1. Third-party initiated login, as the LMS's auto-submitting form posts it.
        started = time.perf_counter()
        resp = await client.post(
            self.login_url,
            data={
                "iss": self.platform_url,
                "login_hint": user.sub,
                "target_link_uri": self.target_link_uri,
                "client_id": DEMO_CLIENT_ID,
                "lti_deployment_id": DEMO_DEPLOYMENT_ID,
            },
        )
        result.initiation_ms = (time.perf_counter() - started) * 1000
        location = resp.headers.get("location", "")
        if resp.status_code != 302 or not location.startswith(f"{self.platform_url}/auth?"):
            raise LaunchFailed(
                f"login initiation answered HTTP {resp.status_code}, "
                "not a redirect to the platform's /auth"
            )
        query = parse_qs(urlsplit(location).query)
        try:
            (state,) = query["state"]
            (nonce,) = query["nonce"]
        except (KeyError, ValueError):
            raise LaunchFailed("the redirect to /auth carries no single state and nonce") from None

        # 2. What the platform's /auth would answer: an id_token for this user and nonce.
        claims = launch_claims(self.settings, user, link, nonce, context=context)
        id_token = sign_id_token(claims, self.signing_key)

        started = time.perf_counter()
        resp = await client.post(self.callback_url, data={"id_token": id_token, "state": state})
        result.callback_ms = (time.perf_counter() - started) * 1000
        target = urlsplit(resp.headers.get("location", ""))
        into_hub = target.path.startswith("/hub/") and target.netloc in (
            "",
            urlsplit(self.hub_url).netloc,
        )
        if resp.status_code != 302 or not into_hub:
            raise LaunchFailed(
                f"callback answered HTTP {resp.status_code}, not a redirect into the hub"
            )
        if HUB_LOGIN_COOKIE not in client.cookies:
            raise LaunchFailed("callback redirected, but set no hub login cookie")
