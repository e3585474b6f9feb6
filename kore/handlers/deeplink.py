"""The Deep Linking picker: ``<prefix>deeplink/<request id>`` (LTI Deep Linking 2.0).

An instructor's content selection from the LMS ("Select content" in Moodle's activity
settings) arrives at the hub, which validates it, refuses anyone but an instructor,
logs the instructor in and records the request (``ananke_hub/courses/deeplink.py``),
then sends the browser here. Identity comes only from the hub: the request belongs to
the hub user who launched it and is answered once.

GET lists the nbgrader assignments of the courses this LMS course's activities map to
(same registration, same LMS course, taught by this instructor), and "a new course
activity". POST answers the LMS: an auto-posting form to ``deep_link_return_url`` with
an ``LtiDeepLinkingResponse`` JWT signed with Kore's key (section 4.5 of the spec),
one ``ltiResourceLink`` per choice. A chosen assignment's link carries a ``lineItem``
(its nbgrader maximum, label, ``resourceId`` ``nbgrader:<name>`` and ``tag``
``ananke-nbgrader@<course id>``, which the grade sync recognises) and the custom
parameter ``ananke_link``, the id of the row that ties launches to the course.
"""

import asyncio
import time
import uuid

import jwt
from sqlalchemy.exc import SQLAlchemyError
from tornado import web

from ananke_hub.courses.deeplink import LINK_PARAMETER, DeepLinkStore, link_tag
from ananke_hub.keys import KeyFileError
from ananke_hub.lti_spec import (
    DEPLOYMENT_ID,
    DL_CONTENT_ITEMS,
    DL_DATA,
    DL_MSG,
    DL_RESOURCE_LINK,
    LTI_VERSION,
    MESSAGE_TYPE,
    MESSAGE_TYPE_DEEP_LINKING_RESPONSE,
    VERSION,
)

from ..sync.gradebook import GradebookUnreadable, read_gradebook
from ..sync.grades import RESOURCE_PREFIX
from .base import PageHandler

#: The choice of a plain new activity: its first launch makes a course of its own.
NEW_ACTIVITY = "new"
#: Seconds the response JWT is valid: the browser posts it at once.
RESPONSE_LIFETIME = 300

GONE = (
    "This content selection was already answered, has expired, or was started by "
    "someone else. Start again from your LMS (Select content in the activity's settings)."
)


class DeepLinkHandler(PageHandler):
    @property
    def store(self) -> DeepLinkStore:
        return DeepLinkStore(self.settings["course_registry"])

    async def _run(self, func, *args):
        try:
            return await self.settings["course_registry"].run(func, *args)
        except SQLAlchemyError as exc:
            self.log.error("course registry: %s", exc)
            raise web.HTTPError(
                503, "The course registry cannot be read right now. Try again in a minute."
            ) from exc

    async def open_request(self, request_id: str):
        request = await self._run(self.store.open_request, request_id, self.hub_user["name"])
        if request is None:
            raise web.HTTPError(404, GONE)
        return request

    async def choices(self, request) -> list[dict]:
        """The courses of the request's LMS course, each with its assignments."""
        layout = self.settings["course_layout"]
        found = []
        for course in await self._run(self.store.courses_for, request):
            try:
                snapshot = await asyncio.to_thread(read_gradebook, layout.course(course.id))
                assignments = snapshot.assignments
                problem = "" if assignments else "No assignments in this course's gradebook yet."
            except GradebookUnreadable as exc:
                self.log.error("course:%s deep linking: %s", course.id, exc)
                assignments, problem = [], "Its gradebook cannot be read (see Kore's log)."
            found.append({"course": course, "assignments": assignments, "problem": problem})
        return found

    @web.authenticated
    async def get(self, request_id):
        request = await self.open_request(request_id)
        courses = await self.choices(request)
        self.set_header("Cache-Control", "no-store")
        self.render(
            "deeplink.html",
            selection=request,
            courses=courses,
            new_activity=NEW_ACTIVITY,
            multiple=request.accept_multiple,
            xsrf=self.xsrf_text,
        )

    async def post(self, request_id):
        if not self.current_user:
            # @web.authenticated answers a bare 403 to a form post: say why.
            if self.get_cookie(self.hub_auth.cookie_name):
                raise web.HTTPError(
                    403,
                    "Kore did not accept its login cookie for this form: it needs the XSRF "
                    "token of the page and a current login. Reload the page and choose again.",
                )
            raise web.HTTPError(403, "Not logged in: start again from your LMS.")
        request = await self.open_request(request_id)
        picked = self.get_body_arguments("item")
        if not picked:
            raise web.HTTPError(400, "Choose at least one assignment, then add it.")
        if len(picked) > 1 and not request.accept_multiple:
            raise web.HTTPError(
                400,
                "Your LMS accepts one item here: choose one assignment (add the others "
                "one at a time).",
            )
        offered = {}
        for entry in await self.choices(request):
            course = entry["course"]
            for assignment in entry["assignments"]:
                offered[f"{course.id}/{assignment.name}"] = (course, assignment)
        chosen = []
        for item in dict.fromkeys(picked):
            if item != NEW_ACTIVITY and item not in offered:
                raise web.HTTPError(
                    400, "One of the chosen assignments is not offered here any more: reload."
                )
            chosen.append(item)
        if not await self._run(self.store.take_request, request.id, self.hub_user["name"]):
            raise web.HTTPError(404, GONE)
        linked = [offered[i] for i in chosen if i != NEW_ACTIVITY]
        link_ids = iter(
            await self._run(self.store.record_links, request, [(c.id, a.name) for c, a in linked])
        )
        items = []
        for item in chosen:
            if item == NEW_ACTIVITY:
                items.append({"type": DL_RESOURCE_LINK, "title": "Jupyter"})
                continue
            course, assignment = offered[item]
            items.append(
                {
                    "type": DL_RESOURCE_LINK,
                    "title": assignment.name,
                    "text": f"Jupyter assignment {assignment.name} of {course.title}",
                    # Section 3.1.4: the platform creates a grade column for it.
                    "lineItem": {
                        "scoreMaximum": assignment.max_score,
                        "label": assignment.name,
                        "resourceId": RESOURCE_PREFIX + assignment.name,
                        "tag": link_tag(course.id),
                    },
                    "custom": {LINK_PARAMETER: next(link_ids)},
                }
            )
        token = await self.response_jwt(request, items)
        self.log.info(
            "user:%s deep linking: %d item(s) returned to the LMS (%s)",
            self.hub_user["name"],
            len(items),
            ", ".join(i["title"] for i in items),
        )
        self.set_header("Cache-Control", "no-store")
        self.render("deeplink_return.html", action=request.return_url, jwt=token, items=items)

    async def response_jwt(self, request, items: list[dict]) -> str:
        """The LtiDeepLinkingResponse (Deep Linking 2.0 section 4.5), signed by Kore."""
        try:
            key = await asyncio.to_thread(self.settings["key_store"].signing_key)
        except KeyFileError as exc:
            self.log.error("deep linking: cannot read the tool's signing key: %s", exc)
            raise web.HTTPError(500) from exc
        now = int(time.time())
        claims = {
            "iss": request.client_id,
            "aud": request.issuer,
            "iat": now,
            "exp": now + RESPONSE_LIFETIME,
            "nonce": uuid.uuid4().hex,
            DEPLOYMENT_ID: request.deployment_id,
            MESSAGE_TYPE: MESSAGE_TYPE_DEEP_LINKING_RESPONSE,
            VERSION: LTI_VERSION,
            DL_CONTENT_ITEMS: items,
            DL_MSG: f"Added {len(items)} Jupyter item(s).",
        }
        if request.data is not None:
            claims[DL_DATA] = request.data  # echoed as the spec requires
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


handlers = [(r"deeplink/([A-Za-z0-9_-]{16,64})", DeepLinkHandler)]
