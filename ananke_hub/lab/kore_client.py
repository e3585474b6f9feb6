"""Asks Kore which courses the lab's user grades, in the form nbgrader's Courses panel shows.

The lab calls Kore's ``api/courses`` with its own hub token (``JUPYTERHUB_API_TOKEN``);
the hub tells Kore whose lab it is, so the answer is the courses of the lab's owner.
Only courses where they are an instructor or teaching assistant are listed, each
linking to Kore's formgrader route, which starts the course's grader server.
"""

import json
import os
from urllib.parse import urljoin

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.simple_httpclient import HTTPTimeoutError
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

#: Set by Ananke's spawners: where the lab reaches Kore, e.g. http://127.0.0.1:10101/services/kore/.
KORE_URL_ENV = "ANANKE_KORE_URL"
#: Kore's name as a hub service (its public path is <hub base>/services/kore/).
KORE_SERVICE = "kore"
#: What nbgrader's Courses panel does with ``kind``: "local" opens an in-lab formgrader;
#: anything else is a link. nbgrader uses this value for formgraders behind the hub.
KIND = "jupyterhub"


class KoreUnavailable(Exception):
    """No course list from Kore. ``str()`` is for the person in the lab; ``detail`` for the log."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


class KoreCourseList(LoggingConfigurable):
    """The client of Kore's ``api/courses`` that the lab's ``/formgraders`` route uses."""

    kore_url = Unicode(
        config=True,
        help="""Base URL of Kore as the lab reaches it (ending in /services/kore/).

        Default: $ANANKE_KORE_URL, which Ananke's spawners set to Kore's address on the
        hub's machine; else derived from $JUPYTERHUB_PUBLIC_HUB_URL (set by the hub when
        c.JupyterHub.public_url is configured).
        """,
    )

    @default("kore_url")
    def _default_kore_url(self):
        url = os.environ.get(KORE_URL_ENV, "")
        if not url and os.environ.get("JUPYTERHUB_PUBLIC_HUB_URL"):
            # <public>/<base>/hub/ -> <public>/<base>/services/kore/
            hub = os.environ["JUPYTERHUB_PUBLIC_HUB_URL"].rstrip("/") + "/"
            url = urljoin(hub, f"../services/{KORE_SERVICE}/")
        return url

    timeout = Float(
        10.0,
        config=True,
        help="""Seconds the lab waits for Kore's course list before the Courses panel
        says that Kore did not answer.""",
    )

    def _endpoint(self) -> str:
        if not self.kore_url:
            raise KoreUnavailable(
                "This lab does not know where Kore, the course service, is: the hub admin "
                f"must set {KORE_URL_ENV} in the labs' environment (Ananke's spawners do).",
                f"no {KORE_URL_ENV} and no JUPYTERHUB_PUBLIC_HUB_URL in the environment",
            )
        return self.kore_url.rstrip("/") + "/api/courses"

    async def fetch_courses(self) -> list:
        """Kore's ``api/courses`` answer for the lab's owner."""
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise KoreUnavailable(
                "This server was not started by JupyterHub (no JUPYTERHUB_API_TOKEN), so "
                "it cannot ask Kore for your courses."
            )
        url = self._endpoint()
        request = HTTPRequest(
            url,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPTimeoutError as exc:
            raise KoreUnavailable(
                f"Kore, the course service, did not answer within {self.timeout:g} s. "
                "Refresh the list in a minute; if it keeps failing, tell the hub admin.",
                f"GET {url}: {exc}",
            ) from exc
        except (OSError, HTTPClientError) as exc:  # refused, reset: no HTTP answer at all
            raise KoreUnavailable(
                "Kore, the course service, is not reachable right now. Refresh the list "
                "in a minute; if it keeps failing, tell the hub admin.",
                f"GET {url}: {exc}",
            ) from exc
        try:
            body = json.loads(response.body or b"null")
        except ValueError:
            body = None
        if response.code == 403:
            detail = body.get("message", "") if isinstance(body, dict) else ""
            raise KoreUnavailable(
                "Kore refused this lab's token. The hub admin must let labs' tokens reach "
                "Kore (c.Spawner.server_token_scopes with "
                f"access:services!service={KORE_SERVICE}).",
                f"GET {url}: 403 {detail}",
            )
        if response.code != 200 or not isinstance(body, list):
            raise KoreUnavailable(
                f"Kore, the course service, failed to list your courses (HTTP "
                f"{response.code}). Refresh the list in a minute; if it keeps failing, "
                "tell the hub admin.",
                f"GET {url}: {response.code} {(response.body or b'')[:200]!r}",
            )
        return body

    async def formgraders(self) -> list[dict]:
        """The courses the lab's owner grades, as nbgrader's Courses panel lists them.

        Newest launch first (the course the user came from is on top). nbgrader's
        ``course_id`` is what the panel shows as the link's text, so it holds the
        course's title; ``id`` holds the course id, besides ``url``, ``kind``, ``title``
        and the user's ``role``.
        """
        entries = []
        for course in await self.fetch_courses():
            if not isinstance(course, dict):
                continue
            url = course.get("formgrader_url")
            course_id = course.get("course_id")
            if not isinstance(url, str) or not url or not isinstance(course_id, str):
                continue  # a course they take as a student: nothing to grade
            title = str(course.get("title") or course_id)
            entries.append(
                {
                    "course_id": title,  # people read titles, not c-134d692f3f6ff899
                    "id": course_id,
                    "url": url,
                    "kind": KIND,
                    "title": title,
                    "role": str(course.get("role") or ""),
                }
            )
        return entries
