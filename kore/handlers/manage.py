"""Course management routes: backups, reset, delete, import and the audit log.

All under ``<prefix>api/``, all JSON (see ``kore/openapi.json`` and docs/admin/api.md):

- ``GET|POST courses/<c>/backups``: a course's backups; make one (202: an operation).
- ``GET backups``: the backups the caller may use (every backup for hub admins).
- ``GET|DELETE backups/<b>``, ``GET backups/<b>/download`` (the tar.gz),
  ``GET backups/<b>/contents`` (what can be imported from it).
- ``POST courses/<c>/reset`` and ``POST courses/<c>/delete`` with
  ``{"confirm": "<course id or title>"}``: a backup first, then the operation (202).
- ``GET courses/<c>/operations``: the course's backups, resets and deletions, latest
  first; ``GET courses/<c>/operations/<id>``: one of them, to follow its progress.
  Backups, resets, deletions and imports run in the background, one per course at a
  time: a second one is refused with 409 and the running one's ``operation_id``.
- ``POST courses/<c>/import``: a course, an assignment or a notebook from another course
  the caller teaches or from one of their backups (202: an operation, whose ``result``
  says what was imported); ``GET courses/<c>/contents``.
- ``GET courses/<c>/audit`` (staff of the course), ``GET audit`` (hub admins).
- ``GET openapi.json``: the OpenAPI document of Kore's JSON routes (public).

Who asks comes only from the hub; what they may do comes from the course registry
(instructors and teaching assistants of a course, hub admins for every course), per
request, in these handlers: :class:`~kore.manage.service.CourseManager` does the work and
decides nothing about people except who may use a backup. Routes take ids, checked
against their formats before anything else sees them, never paths. A changing request
authenticated by Kore's cookie must carry the XSRF token (HubOAuth checks it). Every
changing operation is written to the audit log, refusals after login included.
"""

import asyncio
import json
import os
import re
import stat

from sqlalchemy.exc import SQLAlchemyError
from tornado import web
from tornado.iostream import StreamClosedError

from ananke_hub import fsutil

from .. import openapi
from ..manage.archive import BadArchive
from ..manage.errors import ManageError
from ..manage.names import InvalidName, check_backup_id
from .base import APIHandler, ChangeRequestMixin, PublicAPIHandler
from .courses import STAFF_ROLES, CourseHandlerMixin

#: Bytes of a backup sent per write while downloading: the archive is never in memory.
DOWNLOAD_CHUNK = 256 * 1024
DEFAULT_AUDIT, MAX_AUDIT = 100, 500
#: A download's file name: the course id and the backup's date, nothing from free text.
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class ManagerAnswer(web.HTTPError):
    """A refusal or failure the course manager decided (its message, its status).

    ``audited``: the manager wrote it to the audit log itself (it sets ``audited`` on
    the errors it records), so the handler does not write it twice.
    """

    def __init__(self, exc: ManageError):
        super().__init__(exc.status, "%s", str(exc))
        self.audited = bool(getattr(exc, "audited", False))
        #: A Conflict with a running operation names it.
        self.operation_id = getattr(exc, "operation_id", None)


class ManageHandlerMixin(ChangeRequestMixin, CourseHandlerMixin):
    """What the course-management routes share: the manager, its errors, the audit log."""

    @property
    def manager(self):
        manager = self.settings.get("course_manager")
        if manager is None:  # Kore without hub credentials has no manager
            raise web.HTTPError(
                503, "Course management is not available: Kore is not connected to a hub."
            )
        return manager

    def write_error(self, status_code: int, **kwargs):
        exc = (kwargs.get("exc_info") or (None, None))[1]
        operation_id = getattr(exc, "operation_id", None)
        if not operation_id or not self.json_errors:
            return super().write_error(status_code, **kwargs)
        # Like a sync's 409: the running operation, so the client can follow it.
        self.set_header("Cache-Control", "no-store")
        self.write_json(
            {
                "status": status_code,
                "message": self.error_message(status_code, kwargs.get("exc_info")),
                "operation_id": operation_id,
                "url": self.operation_url(self.path_args[0], operation_id),
            }
        )

    def operation_url(self, course_id: str, operation_id: str) -> str:
        return f"{self.settings['kore_prefix']}api/courses/{course_id}/operations/{operation_id}"

    def accepted(self, entry: dict) -> None:
        """202: the operation runs in the background; its URL shows its progress."""
        url = self.operation_url(entry["course_id"], entry["operation_id"])
        self.set_status(202)
        self.set_header("Location", url)
        self.write_json({**entry, "url": url})

    @property
    def user_name(self) -> str:
        return self.hub_user["name"]

    @property
    def is_admin(self) -> bool:
        return bool(self.hub_user.get("admin"))

    async def managed(self, coroutine):
        """Await a manager call; its errors become the HTTP answers they name."""
        try:
            return await coroutine
        except ManageError as exc:
            raise ManagerAnswer(exc) from None
        except (fsutil.UnsafePath, BadArchive) as exc:
            # The file helpers' refusals, should the manager let one through: a link, a
            # special file or a bad archive member is the data's fault, not the server's.
            self.log.warning("course management refused unsafe data: %s", exc)
            raise web.HTTPError(
                400,
                "Kore refused to use this data: it holds a link, a special file or a path "
                "that leads elsewhere. Nothing was changed.",
            ) from None
        except SQLAlchemyError as exc:
            self.log.error("course management: registry: %s", exc)
            raise web.HTTPError(
                503,
                "The course registry cannot be used right now. Try again in a minute; if it "
                "persists, the hub admin finds why in Kore's log.",
            ) from exc

    async def audited(self, action: str, course_id: str | None, target: dict, work):
        """Run ``work()`` (a coroutine function); a refusal or failure goes to the audit log.

        Success is recorded by the manager, which knows what was done; here go the
        requests that never reached it (not allowed, bad ids or bodies) or that it refused.
        """
        try:
            return await work()
        except web.HTTPError as exc:
            if getattr(exc, "audited", False):
                raise  # the manager wrote this refusal or failure already
            outcome = "refused" if exc.status_code < 500 else "failed"
            message = self.error_message(exc.status_code, (type(exc), exc, None))
            await self.audit_quietly(action, course_id, target, outcome, message)
            raise

    async def audit_quietly(self, action, course_id, target, outcome, message="") -> None:
        """Write an audit event; if the registry cannot, log it instead of failing the answer."""
        try:
            await self.settings["audit_log"].record(
                self.user_name, action, course_id, target, outcome, message
            )
        except (SQLAlchemyError, ManageError, web.HTTPError) as exc:
            self.log.error(
                "course:%s user:%s audit %s %s not recorded: %s",
                course_id,
                self.user_name,
                action,
                outcome,
                exc,
            )

    async def staff_course_ids(self) -> list[str]:
        return [course.id for course, role in await self.my_courses() if role in STAFF_ROLES]

    # --- ids and bodies ----------------------------------------------------------------

    def checked_backup_id(self, raw: str) -> str:
        try:
            return check_backup_id(raw)
        except InvalidName:
            raise web.HTTPError(
                400,
                "The URL does not name a backup (a backup id is b- and 32 hex digits). "
                "Take the id from %sapi/backups.",
                self.settings["kore_prefix"],
            ) from None

    def int_argument(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw) if raw.isascii() and raw.isdigit() else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise web.HTTPError(400, "?%s= must be a whole number from %d to %d.", name, low, high)
        return value

    # --- backups ------------------------------------------------------------------------

    async def usable_backup(self, backup_id: str) -> dict:
        """The backup if the caller may use it; 404 otherwise (same as an unknown id)."""
        staff = await self.staff_course_ids()
        return await self.managed(
            self.manager.get_backup(backup_id, self.user_name, self.is_admin, staff)
        )


def confirmed(body: dict, course) -> None:
    """A reset or deletion names the course it destroys: its id or its exact title.

    The body's form (only ``confirm``, a string) was checked against the document.
    """
    confirm = body["confirm"]
    # The exact title, or the id; never an empty title matching an empty confirmation.
    names = {course.id} | ({course.title} if (course.title or "").strip() else set())
    if confirm not in names:
        raise web.HTTPError(
            400,
            'To confirm, send {"confirm": "%s"} (the course\'s id, or its title %s).',
            course.id,
            json.dumps(course.title),
        )


@web.stream_request_body
class CourseBackupsHandler(ManageHandlerMixin, APIHandler):
    """A course's backups (GET) and a new backup (POST -> 202, an operation)."""

    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, "see its backups")
        staff = await self.staff_course_ids()
        backups = await self.managed(
            self.manager.list_backups(
                self.user_name, self.is_admin, course_id=course_id, staff_course_ids=staff
            )
        )
        self.write_json({"course_id": course_id, "backups": backups})

    async def post(self, raw_course_id):
        self.require_user()
        course_id = self.checked_course_id(raw_course_id)

        async def work():
            await self.staff_course(course_id, "back it up")
            self.json_body()  # none, or {}
            return await self.managed(self.manager.start("backup", course_id, self.user_name))

        entry = await self.audited("backup.create", course_id, {}, work)
        self.log.info(
            "course:%s user:%s backup %s started (%s)",
            course_id,
            self.user_name,
            entry["backup_id"],
            entry["operation_id"],
        )
        self.accepted(entry)


class BackupsHandler(ManageHandlerMixin, APIHandler):
    """Every backup the caller may use: of courses they teach, or made while they did."""

    @web.authenticated
    async def get(self):
        staff = await self.staff_course_ids()
        backups = await self.managed(
            self.manager.list_backups(self.user_name, self.is_admin, staff_course_ids=staff)
        )
        self.write_json({"backups": backups})


@web.stream_request_body
class BackupHandler(ManageHandlerMixin, APIHandler):
    """One backup: its entry (GET) or its removal (DELETE -> 204)."""

    @web.authenticated
    async def get(self, raw_backup_id):
        backup_id = self.checked_backup_id(raw_backup_id)
        self.write_json(await self.usable_backup(backup_id))

    async def delete(self, raw_backup_id):
        self.require_user()
        backup_id = self.checked_backup_id(raw_backup_id)
        target = {"backup_id": backup_id}

        async def work():
            entry = await self.usable_backup(backup_id)
            self.json_body()  # none, or {}
            staff = await self.staff_course_ids()
            await self.managed(
                self.manager.delete_backup(
                    backup_id, self.user_name, self.is_admin, staff_course_ids=staff
                )
            )
            return entry

        entry = await self.audited("backup.delete", None, target, work)
        self.log.info(
            "course:%s user:%s deleted backup %s", entry["course_id"], self.user_name, backup_id
        )
        self.set_status(204)
        self.finish()


class BackupDownloadHandler(ManageHandlerMixin, APIHandler):
    """The backup's archive, streamed from a file opened without following links."""

    @web.authenticated
    async def get(self, raw_backup_id):
        backup_id = self.checked_backup_id(raw_backup_id)
        target = {"backup_id": backup_id}
        entry = await self.audited(
            "backup.download", None, target, lambda: self.usable_backup(backup_id)
        )
        try:
            fd = await asyncio.to_thread(self.open_archive, backup_id)
        except OSError as exc:
            self.log.error("backup %s: cannot open its archive: %s", backup_id, exc)
            await self.audit_quietly(
                "backup.download", entry["course_id"], target, "failed", "archive missing"
            )
            raise web.HTTPError(
                404,
                "The archive of backup %s is missing on the server. The hub admin finds why "
                "in Kore's log.",
                backup_id,
            ) from None
        try:
            size = os.fstat(fd).st_size
            stamp = SAFE_NAME.sub("", str(entry.get("created_at", ""))[:10])
            name = f"ananke-{entry['course_id']}-{stamp}-{backup_id}.tar.gz"
            self.set_header("Content-Type", "application/gzip")
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
            self.set_header("Content-Length", str(size))
            await self.audit_quietly("backup.download", entry["course_id"], target, "ok")
            sent = 0
            while sent < size:
                chunk = await asyncio.to_thread(os.read, fd, min(DOWNLOAD_CHUNK, size - sent))
                if not chunk:
                    break  # the file shrank: the client sees a short body
                self.write(chunk)
                sent += len(chunk)
                try:
                    await self.flush()
                except StreamClosedError:
                    return  # the client went away
        finally:
            os.close(fd)
        self.finish()

    def open_archive(self, backup_id: str) -> int:
        # The manager derives the path from the id; O_NOFOLLOW: a link planted in its
        # place is refused, never followed (ELOOP). A regular file only.
        fd = os.open(self.manager.backup_path(backup_id), os.O_RDONLY | os.O_NOFOLLOW)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"backup {backup_id}: not a regular file")
        return fd


class BackupContentsHandler(ManageHandlerMixin, APIHandler):
    """What a backup offers for import: its assignments and their notebooks."""

    @web.authenticated
    async def get(self, raw_backup_id):
        backup_id = self.checked_backup_id(raw_backup_id)
        await self.usable_backup(backup_id)
        self.write_json(await self.managed(self.manager.sources({"backup_id": backup_id})))


@web.stream_request_body
class CourseOperationHandler(ManageHandlerMixin, APIHandler):
    """Reset or delete a course (``kind``), after a confirmation that names it."""

    kind = "reset"
    action = "reset it"

    async def post(self, raw_course_id):
        self.require_user()
        course_id = self.checked_course_id(raw_course_id)

        async def work():
            course = await self.staff_course(course_id, self.action)
            confirmed(self.json_body(), course)
            return await self.managed(self.manager.start(self.kind, course_id, self.user_name))

        entry = await self.audited(f"course.{self.kind}", course_id, {}, work)
        self.log.info(
            "course:%s user:%s %s started (%s)",
            course_id,
            self.user_name,
            self.kind,
            entry["operation_id"],
        )
        self.accepted(entry)


class CourseDeleteHandler(CourseOperationHandler):
    kind = "delete"
    action = "delete it"


class CourseOperationsHandler(ManageHandlerMixin, APIHandler):
    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, "see its operations")
        operations = await self.managed(self.manager.operations(course_id))
        self.write_json({"course_id": course_id, "operations": operations})


OPERATION_ID = re.compile(r"[0-9a-f]{32}")


class CourseOperationHandlerOne(ManageHandlerMixin, APIHandler):
    """One backup, reset or deletion of a course: its state and progress (step of steps)."""

    @web.authenticated
    async def get(self, raw_course_id, raw_operation_id):
        course_id = self.checked_course_id(raw_course_id)
        if not OPERATION_ID.fullmatch(raw_operation_id):
            raise web.HTTPError(
                400,
                "The URL does not name an operation (32 hex digits). Take the id from "
                "api/courses/%s/operations.",
                course_id,
            )
        try:
            await self.staff_course(course_id, "see its operations")
        except web.HTTPError:
            entry = await self.own_deletion(course_id, raw_operation_id)
            if entry is None:
                raise
        else:
            entry = await self.managed(self.manager.operation(course_id, raw_operation_id))
        self.write_json({**entry, "url": self.operation_url(course_id, entry["operation_id"])})

    async def own_deletion(self, course_id: str, operation_id: str) -> dict | None:
        """A finished deletion takes the course and its staff with it: whoever started it
        (or a hub admin) still follows it to its end. None for anything else."""
        try:
            entry = await self.manager.operation(course_id, operation_id)
        except ManageError:
            return None
        if entry["kind"] != "delete" or not (
            entry["started_by"] == self.user_name or self.is_admin
        ):
            return None
        if await self._registry(self.registry.get, course_id) is not None:
            return None  # the course is there: its staff rules apply
        return entry


class CourseContentsHandler(ManageHandlerMixin, APIHandler):
    """A course's assignments and notebooks, for importing them elsewhere."""

    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, "import from it")
        self.write_json(await self.managed(self.manager.sources({"course_id": course_id})))


@web.stream_request_body
class CourseImportHandler(ManageHandlerMixin, APIHandler):
    """Copy a course's assignments, one assignment or one notebook into this course (202:
    an operation; its entry's ``result`` says what was imported, replaced, skipped)."""

    async def post(self, raw_course_id):
        self.require_user()
        course_id = self.checked_course_id(raw_course_id)
        target = {}

        async def work():
            await self.staff_course(course_id, "import into it")
            request = self.import_request(self.json_body())
            target.update(request)
            source = request.pop("from")
            if "course_id" in source:
                await self.staff_course(source["course_id"], "import from it")
            else:
                await self.usable_backup(source["backup_id"])
            what = request.pop("what")
            return await self.managed(
                self.manager.start_import(course_id, source, what, actor=self.user_name, **request)
            )

        entry = await self.audited("course.import", course_id, target, work)
        self.accepted(entry)

    def import_request(self, body: dict) -> dict:
        """The import's options from a body the document's ImportRequest accepted (ids
        and names have their forms; "assignment" and "notebook" are there when "what"
        needs them)."""
        request = {"from": body["from"], "what": body["what"]}
        request["overwrite"] = body.get("overwrite", False)
        for key in ("assignment", "notebook", "as_assignment"):
            if key in body:
                request[key] = body[key]
        return request


class AuditMixin(ManageHandlerMixin):
    def page(self) -> dict:
        return {
            "limit": self.int_argument("limit", DEFAULT_AUDIT, 1, MAX_AUDIT),
            "before": self.int_argument("before", None, 1, 2**62),
        }


class CourseAuditHandler(AuditMixin, APIHandler):
    @web.authenticated
    async def get(self, raw_course_id):
        course_id = self.checked_course_id(raw_course_id)
        await self.staff_course(course_id, "read its audit log")
        events = await self.managed(self.manager.audit(course_id=course_id, **self.page()))
        self.write_json({"course_id": course_id, "events": events})


class AuditHandler(AuditMixin, APIHandler):
    """The whole audit log: hub admins only."""

    @web.authenticated
    async def get(self):
        if not self.is_admin:
            raise web.HTTPError(
                403,
                "Only hub admins can read the whole audit log. Instructors read their "
                "course's at api/courses/<course id>/audit.",
            )
        raw_course = self.get_query_argument("course_id", None)
        course_id = self.checked_course_id(raw_course) if raw_course is not None else None
        events = await self.managed(self.manager.audit(course_id=course_id, **self.page()))
        self.write_json({"events": events})


class OpenAPIHandler(PublicAPIHandler):
    """The OpenAPI 3.1 document of Kore's JSON routes.

    Public, like the hub's own REST API description: it describes routes and formats,
    holds no data of anyone, and tools (clients, the fuzz test) load it before they have
    a token. The ``servers`` entry is Kore's real prefix.
    """

    async def get(self):
        # Read once, when Kore's routes were set up (kore.openapi.request_bodies).
        document = dict(openapi.document())
        document["servers"] = [{"url": self.settings["kore_prefix"].rstrip("/") or "/"}]
        self.set_header("Cache-Control", "public, max-age=300")
        self.write_json(document)


handlers = [
    (r"api/courses/([^/]+)/backups", CourseBackupsHandler),
    (r"api/courses/([^/]+)/reset", CourseOperationHandler),
    (r"api/courses/([^/]+)/delete", CourseDeleteHandler),
    (r"api/courses/([^/]+)/operations", CourseOperationsHandler),
    (r"api/courses/([^/]+)/operations/([^/]+)", CourseOperationHandlerOne),
    (r"api/courses/([^/]+)/import", CourseImportHandler),
    (r"api/courses/([^/]+)/contents", CourseContentsHandler),
    (r"api/courses/([^/]+)/audit", CourseAuditHandler),
    (r"api/backups", BackupsHandler),
    (r"api/backups/([^/]+)", BackupHandler),
    (r"api/backups/([^/]+)/download", BackupDownloadHandler),
    (r"api/backups/([^/]+)/contents", BackupContentsHandler),
    (r"api/audit", AuditHandler),
    (r"api/openapi\.json", OpenAPIHandler),
]
