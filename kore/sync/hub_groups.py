"""The hub's side of a roster sync: learners in the course's group before they launch.

nbgrader finds a student's courses by the hub group ``nbgrader-<course>``
(JupyterHubAuthPlugin). A learner the roster lists gets a hub user (``POST
/hub/api/users/{name}``) and joins the group (``POST /hub/api/groups/{name}/users``);
one the roster dropped leaves it (``DELETE``). The hub token needs the scopes
``admin:users`` (create users) and ``admin:groups`` (create the group, change members).

At a launch the authenticator sets the user's groups from the registry
(``manage_groups``): the same answer, since the roster sync wrote the registry first.
"""

import asyncio
import json
from urllib.parse import quote

import httpx

from ..lti.errors import clean


class HubAPIError(Exception):
    """The hub API refused or failed; the message says what to do."""


class HubGroups:
    def __init__(self, *, api_url: str, token: str, timeout: float = 20.0, concurrency: int = 8):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.concurrency = concurrency

    async def _call(self, client: httpx.AsyncClient, method: str, path: str, body=None):
        try:
            response = await client.request(
                method,
                self.api_url + path,
                headers={"Authorization": f"token {self.token}"},
                content=json.dumps(body).encode() if body is not None else None,
            )
        except httpx.HTTPError as exc:
            raise HubAPIError(f"no answer from the hub API at {self.api_url}: {exc}") from exc
        data = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                data = None
        return response.status_code, data

    @staticmethod
    def _refused(method: str, path: str, code: int, data) -> HubAPIError:
        said = clean(str(data.get("message", ""))) if isinstance(data, dict) else ""
        hint = ""
        if code == 403:
            hint = (
                " Kore's hub token needs the scopes admin:users and admin:groups (the "
                "kore-service role in the hub's config)."
            )
        return HubAPIError(
            f"the hub answered {code} to {method} {path}"
            + (f": {said}" if said else "")
            + "."
            + hint
        )

    async def sync_group(self, group: str, members: set[str], former: set[str]) -> dict[str, str]:
        """Put ``members`` in ``group`` (creating users as needed), take ``former`` out.

        Returns the problem per user name ("" = done). Raises :class:`HubAPIError` when
        the group itself cannot be read or made.
        """
        problems = dict.fromkeys(members | former, "")
        group_path = f"/groups/{quote(group, safe='')}"
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            code, data = await self._call(client, "GET", group_path)
            if code == 404:
                code, data = await self._call(client, "POST", group_path)
                if code not in (201, 409):
                    raise self._refused("POST", group_path, code, data)
                current: set[str] = set()
            elif code == 200 and isinstance(data, dict):
                current = {u for u in data.get("users", []) if isinstance(u, str)}
            else:
                raise self._refused("GET", group_path, code, data)

            missing = sorted(members - current)
            limit = asyncio.Semaphore(self.concurrency)

            async def ensure_user(name: str):
                async with limit:
                    path = f"/users/{quote(name, safe='')}"
                    try:
                        code, data = await self._call(client, "POST", path)
                    except HubAPIError as exc:
                        problems[name] = str(exc)
                        return
                    if code not in (201, 409):  # 409: the user exists
                        problems[name] = str(self._refused("POST", path, code, data))

            await asyncio.gather(*(ensure_user(n) for n in missing))
            ready = [n for n in missing if not problems[n]]
            if ready:
                path = group_path + "/users"
                code, data = await self._call(client, "POST", path, {"users": ready})
                if code != 200:
                    error = str(self._refused("POST", path, code, data))
                    for name in ready:
                        problems[name] = error
            leaving = sorted(former & current)
            if leaving:
                path = group_path + "/users"
                code, data = await self._call(client, "DELETE", path, {"users": leaving})
                if code != 200:
                    error = str(self._refused("DELETE", path, code, data))
                    for name in leaving:
                        problems[name] = error
        return problems
