"""One JSON call to the hub's REST API with Kore's token: what Kore's hub clients share.

The roster sync (:mod:`kore.sync.hub_groups`) and course management
(:mod:`kore.manage.hubapi`) call the hub the same way and differ only in the error
they raise and what it tells the reader to do, which subclasses set.

JupyterHub REST API: https://jupyterhub.readthedocs.io/en/stable/reference/rest-api.html
"""

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from .lti.errors import clean


@dataclass(frozen=True)
class AccessApplied:
    """The hub's answer for one user (``problem`` empty when it was applied)."""

    username: str
    problem: str = ""
    changed: bool = False
    revoked_tokens: int = 0


class HubAPIClient:
    """httpx calls to ``<api_url><path>`` with ``Authorization: token <token>``."""

    #: The exception raised for no answer or a refusal (a subclass sets its own).
    error: type[Exception] = RuntimeError
    #: The scopes Kore's token needs for this client's calls, named on a 403.
    scopes = "admin:users and admin:groups"
    #: Users created per request (JupyterHub's bulk ``POST /hub/api/users``).
    bulk_size = 200
    #: Requests at once where one per user is needed.
    concurrency = 8

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # Tests give an httpx.MockTransport; Kore the default network transport.
        self.transport = transport

    def _client(self, timeout: float | None = None) -> httpx.AsyncClient:
        timeout = self.timeout if timeout is None else timeout
        return httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), transport=self.transport
        )

    def no_answer(self, exc: httpx.HTTPError) -> Exception:
        return self.error(f"no answer from the hub API at {self.api_url}: {exc}")

    def what_next(self) -> str:
        """Appended to a refusal's message: what the reader does about it."""
        return ""

    async def _call(self, client: httpx.AsyncClient, method: str, path: str, body=None):
        """The status and the JSON body (None if there is none) of one call."""
        try:
            response = await client.request(
                method,
                self.api_url + path,
                headers={"Authorization": f"token {self.token}"},
                content=json.dumps(body).encode() if body is not None else None,
            )
        except httpx.HTTPError as exc:
            raise self.no_answer(exc) from exc
        data = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                data = None
        return response.status_code, data

    def _refused(self, method: str, path: str, code: int, data) -> Exception:
        said = clean(str(data.get("message", ""))) if isinstance(data, dict) else ""
        hint = ""
        if code == 403:
            hint = (
                f" Kore's hub token needs the scopes {self.scopes} (the kore-service role "
                "in the hub's config)."
            )
        return self.error(
            f"the hub answered {code} to {method} {path}"
            + (f": {said}" if said else "")
            + "."
            + hint
            + self.what_next()
        )

    async def create_users(self, client: httpx.AsyncClient, names: list[str]) -> dict[str, str]:
        """Make sure the hub has these users; the problem per name ("" = it exists now).

        One ``POST /hub/api/users`` per :attr:`bulk_size` names (JupyterHub creates the
        missing ones, skips those that exist, answers 409 when all exist). Only when the
        hub refuses a batch (400: a name it does not accept fails all of them) are its
        names asked one by one, so that the problem is told for the right person.
        """
        problems = dict.fromkeys(names, "")
        limit = asyncio.Semaphore(self.concurrency)

        async def one(name: str) -> None:
            async with limit:
                try:
                    code, data = await self._call(client, "POST", "/users", {"usernames": [name]})
                except self.error as exc:
                    problems[name] = str(exc)
                    return
            if code not in (201, 409):
                problems[name] = str(self._refused("POST", "/users", code, data))

        for start in range(0, len(names), self.bulk_size):
            batch = names[start : start + self.bulk_size]
            try:
                code, data = await self._call(client, "POST", "/users", {"usernames": batch})
            except self.error as exc:  # no answer
                problems.update(dict.fromkeys(batch, str(exc)))
                continue
            if code in (201, 409):  # 409: all of them exist
                continue
            if code == 400 and len(batch) > 1:
                await asyncio.gather(*(one(n) for n in batch))
            else:
                refused = str(self._refused("POST", "/users", code, data))
                problems.update(dict.fromkeys(batch, refused))
        return problems

    async def apply_course_access(
        self, usernames, concurrency: int = 8
    ) -> dict[str, AccessApplied]:
        """Make the hub apply the course registry to these users now.

        ``POST /hub/api/ananke/users/<name>/access`` (``ananke_hub/auth/access.py``): their
        hub groups and managed roles become what the registry says, and their tokens
        for grader servers of courses they no longer teach are deleted. A user the hub
        does not know has nothing to take away (done).
        """
        limit = asyncio.Semaphore(concurrency)
        results: dict[str, AccessApplied] = {}
        async with self._client() as client:

            async def one(name: str) -> None:
                path = f"/ananke/users/{quote(name, safe='')}/access"
                async with limit:
                    try:
                        code, data = await self._call(client, "POST", path, {})
                    except self.error as exc:  # no answer from the hub
                        results[name] = AccessApplied(name, str(exc))
                        return
                if (
                    code == 404
                    and isinstance(data, dict)
                    and "No such user" in str(data.get("message", ""))
                ):
                    results[name] = AccessApplied(name)
                elif code == 200 and isinstance(data, dict):
                    revoked = data.get("revoked_tokens")
                    results[name] = AccessApplied(
                        name,
                        changed=bool(data.get("changed")),
                        revoked_tokens=revoked if isinstance(revoked, int) else 0,
                    )
                else:
                    results[name] = AccessApplied(
                        name, str(self._refused("POST", path, code, data))
                    )

            await asyncio.gather(*(one(n) for n in sorted(set(usernames))))
        return results
