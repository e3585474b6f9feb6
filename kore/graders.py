"""A course's formgrader: the default server of the hub user ``grader-<course id>``.

Provisioning creates the grader account at the course's first launch; its server runs
nbgrader's formgrader with the course directory as its home. Kore starts that server
on demand through the hub's REST API (``GET /users/{name}``, ``POST
/users/{name}/server``), with its own API token, which needs the scopes
``read:servers`` (see the server) and ``servers`` (start it).

All calls are asynchronous, through Kore's one hub client (:mod:`kore.hub_api`,
httpx): a slow hub never blocks Kore's event loop. A server that is still starting is reported as such; the caller
decides whether to wait or to show a progress page.
"""

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

from ananke_hub.courses.layout import grader_username

from .hub_api import HubAPIClient

#: Seconds between two looks at a starting server while a request waits for it.
POLL_INTERVAL = 0.5
#: How long Kore remembers that it asked the hub to start a server. A server that is
#: neither running nor starting within this time after Kore asked failed to start.
START_MEMORY = 600.0
#: The hub answers POST /users/{name}/server within its slow_spawn_timeout (10 s by
#: default), then with 202 while the spawn goes on; allow for a busy hub.
START_REQUEST_TIMEOUT = 60.0
READ_REQUEST_TIMEOUT = 20.0


class GraderState(StrEnum):
    READY = "ready"
    STARTING = "starting"  # the hub is spawning it (or stopping it; Kore then restarts it)
    FAILED = "failed"  # Kore asked the hub to start it and the spawn failed


@dataclass(frozen=True)
class GraderServer:
    username: str
    state: GraderState
    #: Path of the server behind the hub's proxy, e.g. ``/user/grader-c-.../``.
    url: str


class GraderError(Exception):
    """The hub did not let Kore see or start a grader server.

    ``admin_detail`` is for Kore's log; the caller shows the user its own message.
    """

    def __init__(self, admin_detail: str):
        super().__init__(admin_detail)
        self.admin_detail = admin_detail


class GraderAccountMissing(GraderError):
    """The hub has no user ``grader-<course>``: provisioning did not finish."""


class GraderServers(HubAPIClient):
    """Looks at and starts the grader servers of courses through the hub's REST API."""

    error = GraderError
    scopes = "read:servers and servers"

    def __init__(self, *, api_url: str, api_token: str, hub_base_url: str, log, transport=None):
        super().__init__(api_url=api_url, token=api_token, transport=transport)
        #: The hub's public base path ("/" or "/jhub/"), from JUPYTERHUB_BASE_URL.
        self.hub_base_url = "/" + hub_base_url.strip("/") + "/" if hub_base_url.strip("/") else "/"
        self.log = log
        self._asked_at: dict[str, float] = {}
        # One check-and-start at a time per grader: two instructors clicking together
        # make one start request.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def default_url(self, username: str) -> str:
        return f"{self.hub_base_url}user/{username}/"

    async def _hub(self, method: str, path: str, timeout: float) -> tuple[int, dict | None]:
        """One hub API call; the status and the JSON body (None if there is none)."""
        async with self._client(timeout) as client:
            code, body = await self._call(client, method, path)
        return code, body if isinstance(body, dict) else None

    @staticmethod
    def _hub_message(code: int, body: dict | None) -> str:
        message = (body or {}).get("message") or ""
        return f"{code} {message}".strip()

    async def server(self, username: str) -> dict | None:
        """The hub's model of the user's default server if it is active, else None."""
        code, body = await self._hub("GET", f"/users/{username}", READ_REQUEST_TIMEOUT)
        if code == 404:
            raise GraderAccountMissing(f"the hub has no user {username}")
        if code != 200 or body is None:
            raise GraderError(
                f"GET /users/{username} answered {self._hub_message(code, body)}; Kore's "
                "API token needs the scopes read:servers and servers"
            )
        servers = body.get("servers")
        if not isinstance(servers, dict):
            raise GraderError(
                f"the hub's model of {username} has no servers: Kore's API token lacks "
                "the read:servers scope"
            )
        model = servers.get("")
        return model if isinstance(model, dict) else None

    def _state(self, username: str, model: dict | None) -> GraderServer | None:
        """What an observed server model means; None: not active, start it."""
        if model is None:
            return None
        url = model.get("url") if isinstance(model.get("url"), str) else ""
        url = url or self.default_url(username)
        if model.get("ready"):
            self._asked_at.pop(username, None)
            return GraderServer(username, GraderState.READY, url)
        # pending "spawn": on its way; pending "stop": Kore starts it again once stopped.
        return GraderServer(username, GraderState.STARTING, url)

    async def _start(self, username: str) -> GraderServer:
        code, body = await self._hub("POST", f"/users/{username}/server", START_REQUEST_TIMEOUT)
        if code == 201:
            self.log.info("grader:%s server started", username)
            self._asked_at.pop(username, None)
            return GraderServer(username, GraderState.READY, self.default_url(username))
        if code == 202:
            self.log.info("grader:%s server starting", username)
            self._asked_at[username] = time.monotonic()
            return GraderServer(username, GraderState.STARTING, self.default_url(username))
        if code == 400:
            # Another client started or is stopping it since Kore looked: look again.
            return self._state(username, await self.server(username)) or GraderServer(
                username, GraderState.STARTING, self.default_url(username)
            )
        if code == 404:
            raise GraderAccountMissing(f"the hub has no user {username}")
        raise GraderError(
            f"POST /users/{username}/server answered {self._hub_message(code, body)}; "
            "Kore's API token needs the scope servers"
        )

    async def _check_and_start(self, username: str) -> GraderServer:
        async with self._locks[username]:
            state = self._state(username, await self.server(username))
            if state is not None:
                return state
            asked = self._asked_at.pop(username, None)
            if asked is not None and time.monotonic() - asked < START_MEMORY:
                # Kore asked for it, it never became ready and it is gone: the spawn
                # failed. Report it once; the next request tries again.
                self.log.warning("grader:%s server failed to start", username)
                return GraderServer(username, GraderState.FAILED, self.default_url(username))
            return await self._start(username)

    async def ensure_running(self, course_id: str, wait: float = 0.0) -> GraderServer:
        """Start the course's grader server if needed; wait up to ``wait`` s for it."""
        username = grader_username(course_id)
        state = await self._check_and_start(username)
        deadline = time.monotonic() + wait
        while state.state is GraderState.STARTING and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
            state = await self._check_and_start(username)
        return state
