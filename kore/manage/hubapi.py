"""The hub's side of resetting and deleting a course, through the hub's REST API.

Kore's hub token has the scopes ``servers`` (stop the grader's server),
``read:users:name``, ``admin:users`` (delete the grader account) and ``admin:groups``
(change and delete the course's groups); see the ``kore-service`` role in the hub config.
Every call is idempotent: what is already gone (404; for a user named in a group change,
JupyterHub's 400 "No such user") counts as done, so a step that was interrupted half-way
is simply run again.

JupyterHub REST API: https://jupyterhub.readthedocs.io/en/stable/reference/rest-api.html
"""

import asyncio
import time
from urllib.parse import quote

import httpx

from ..hub_api import HubAPIClient
from .errors import Unavailable

#: A server that is stopping gets this long before the grader account is deleted anyway
#: (JupyterHub refuses to delete a user whose server is stopping: 400).
STOP_WAIT = 120.0
POLL_INTERVAL = 1.0
#: Reads of a group's members while users keep being deleted under ``empty_group``.
EMPTY_GROUP_ATTEMPTS = 3


def _no_such_user(data) -> bool:
    """JupyterHub's refusal of a group change naming a user it does not know
    (``apihandlers/groups.py``: 400 "No such user: <name>")."""
    return isinstance(data, dict) and str(data.get("message", "")).startswith("No such user")


class HubAdmin(HubAPIClient):
    """The few hub API calls course management needs, each idempotent."""

    error = Unavailable
    scopes = "servers, admin:users and admin:groups"

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        timeout: float = 20.0,
        stop_wait: float = STOP_WAIT,
        poll_interval: float = POLL_INTERVAL,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(api_url=api_url, token=token, timeout=timeout, transport=transport)
        self.stop_wait = stop_wait
        self.poll_interval = poll_interval

    def no_answer(self, exc: httpx.HTTPError) -> Exception:
        return Unavailable(
            f"The hub API at {self.api_url} does not answer ({type(exc).__name__}). "
            "Try again in a minute; the operation goes on where it stopped."
        )

    def what_next(self) -> str:
        return " Try again: the operation goes on where it stopped."

    # --- groups -------------------------------------------------------------------------

    async def group_members(self, group: str) -> set[str] | None:
        """The users of ``group``; None if there is no such group."""
        path = f"/groups/{quote(group, safe='')}"
        async with self._client() as client:
            code, data = await self._call(client, "GET", path)
        if code == 404:
            return None
        if code != 200 or not isinstance(data, dict):
            raise self._refused("GET", path, code, data)
        return {u for u in data.get("users", []) if isinstance(u, str)}

    async def empty_group(self, group: str) -> list[str]:
        """Take every user out of ``group`` (kept); the names that left."""
        path = f"/groups/{quote(group, safe='')}/users"
        for _ in range(EMPTY_GROUP_ATTEMPTS):
            members = await self.group_members(group)
            if not members:
                return []
            leaving = sorted(members)
            async with self._client() as client:
                code, data = await self._call(client, "DELETE", path, {"users": leaving})
            if code == 200:
                return leaving
            if code == 404:
                return []  # the group went meanwhile: nothing left to take out
            if not (code == 400 and _no_such_user(data)):
                break
            # A member was deleted meanwhile: JupyterHub refuses the whole call with 400
            # (not 404) and removes no one; a deleted user has left its groups, so the
            # members read again are the ones to take out.
        raise self._refused("DELETE", path, code, data)

    async def delete_group(self, group: str) -> bool:
        """Delete ``group``; False if it did not exist."""
        async with self._client() as client:
            return await self._delete(client, f"/groups/{quote(group, safe='')}")

    async def _delete(self, client: httpx.AsyncClient, path: str) -> bool:
        """DELETE ``path``: True when done, False when it did not exist; refusals raise."""
        code, data = await self._call(client, "DELETE", path)
        if code == 404:
            return False
        if code not in (200, 204):
            raise self._refused("DELETE", path, code, data)
        return True

    # --- users --------------------------------------------------------------------------

    async def _server_pending(self, client: httpx.AsyncClient, username: str) -> bool | None:
        """Whether the user's default server is still stopping; None if no such user."""
        path = f"/users/{quote(username, safe='')}"
        code, data = await self._call(client, "GET", path)
        if code == 404:
            return None
        if code != 200 or not isinstance(data, dict):
            raise self._refused("GET", path, code, data)
        server = (data.get("servers") or {}).get("")
        # Without read:servers the model has no servers; the DELETE below reports a stop
        # still under way (400), which then fails the step with the hub's message.
        return bool(isinstance(server, dict) and server.get("pending"))

    async def delete_user(self, username: str) -> bool:
        """Stop the user's server and delete the user; False if there was no such user."""
        user_path = f"/users/{quote(username, safe='')}"
        async with self._client() as client:
            code, data = await self._call(client, "DELETE", user_path + "/server")
            if code == 404:
                return False
            if code not in (202, 204):
                raise self._refused("DELETE", user_path + "/server", code, data)
            deadline = time.monotonic() + self.stop_wait
            while code == 202:  # stopping: wait for it (the hub refuses to delete meanwhile)
                pending = await self._server_pending(client, username)
                if pending is None:
                    return False
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"The hub is still stopping the server of {username} after "
                        f"{self.stop_wait:.0f} s. Try again later; the operation goes on "
                        "where it stopped."
                    )
                await asyncio.sleep(self.poll_interval)
            return await self._delete(client, user_path)
