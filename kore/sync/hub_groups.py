"""The hub's side of a roster sync: learners in the course's group before they launch.

nbgrader finds a student's courses by the hub group ``nbgrader-<course>``
(JupyterHubAuthPlugin). Learners the roster lists get hub users (one bulk ``POST
/hub/api/users`` for all of them) and join the group (``POST /hub/api/groups/{name}/users``);
one the roster dropped leaves it (``DELETE``). The hub token needs the scopes
``admin:users`` (create users) and ``admin:groups`` (create the group, change members).

At a launch the authenticator sets the user's groups from the registry
(``manage_groups``): the same answer, since the roster sync wrote the registry first.
"""

from urllib.parse import quote

from ..hub_api import HubAPIClient


class HubAPIError(Exception):
    """The hub API refused or failed; the message says what to do."""


class HubGroups(HubAPIClient):
    error = HubAPIError

    def __init__(self, *, api_url: str, token: str, timeout: float = 20.0, concurrency: int = 8):
        super().__init__(api_url=api_url, token=token, timeout=timeout)
        self.concurrency = concurrency

    async def sync_group(self, group: str, members: set[str], former: set[str]) -> dict[str, str]:
        """Put ``members`` in ``group`` (creating users as needed), take ``former`` out.

        Returns the problem per user name ("" = done). Raises :class:`HubAPIError` when
        the group itself cannot be read or made.
        """
        problems = dict.fromkeys(members | former, "")
        group_path = f"/groups/{quote(group, safe='')}"
        async with self._client() as client:
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
            problems.update(await self.create_users(client, missing))
            ready = [n for n in missing if not problems[n]]
            problems.update(await self._members(client, "POST", group_path, ready))
            leaving = sorted(former & current)
            problems.update(await self._members(client, "DELETE", group_path, leaving))
        return problems

    async def _members(self, client, method: str, group_path: str, names: list[str]) -> dict:
        """Add (POST) or remove (DELETE) ``names`` in one request; the hub's refusal as
        the problem of each of them (none for no names or success)."""
        if not names:
            return {}
        path = group_path + "/users"
        code, data = await self._call(client, method, path, {"users": names})
        if code == 200:
            return {}
        return dict.fromkeys(names, str(self._refused(method, path, code, data)))
