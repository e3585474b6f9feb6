"""Imports: a whole course, one assignment or one notebook copied into a course, from a
live course or a backup.

:class:`Importer` checks the request and the source on Kore's event loop, then the
import runs as a background operation (:mod:`.operations`, kind "import": 202, progress
in the operation's entry, one per course at a time); its file work is done by the
blocking :class:`~.importer_files.ImportFiles` in a thread.
"""

import json

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.models import COURSE_DELETING
from ananke_hub.courses.settings import CourseSettings, SettingsError

from . import archive
from .context import ManageService
from .errors import Conflict, InvalidRequest, ManageError, NotFound, audited
from .importer_files import ImportRequest, ImportSource
from .names import check_assignment_id, check_backup_id, check_notebook_name

WHAT = ("course", "assignment", "notebook")


class Importer(ManageService):
    """Imports into a course (see the module's docstring)."""

    async def import_source(self, source) -> ImportSource:
        if isinstance(source, str):
            source = {"backup_id": source} if source.startswith("b-") else {"course_id": source}
        if not isinstance(source, dict) or len(source) != 1:
            raise InvalidRequest(
                'Say where to import from: {"course_id": "c-..."} or {"backup_id": "b-..."}.'
            )
        if "backup_id" in source:
            backup_id = self._name(check_backup_id, source["backup_id"])
            backup = await self._db(self.store.backup, backup_id)
            path = self.archive_path(backup_id)
            if backup is None or backup.deleted_at is not None:
                raise NotFound(f"There is no backup {backup_id}.")
            try:
                manifest = await self._thread(archive.read_manifest, path)
            except FileNotFoundError:
                raise NotFound(
                    f"The archive of backup {backup_id} is missing. Ask the hub's administrators."
                ) from None
            except (archive.BadArchive, fsutil.UnsafePath) as exc:
                raise InvalidRequest(f"Backup {backup_id} cannot be read: {exc}") from None
            settings = manifest.get("settings") if isinstance(manifest, dict) else None
            return ImportSource(
                course_id=backup.course_id,
                backup_id=backup_id,
                archive=path,
                settings=settings if isinstance(settings, dict) else None,
            )
        if "course_id" in source:
            course_id = self._course_id(source["course_id"])
            facts = await self._course(course_id)
            if facts.state == COURSE_DELETING:
                raise NotFound(f"Course {course_id} is being deleted.")
            return ImportSource(
                course_id=course_id,
                paths=self.layout.course(course_id),
                settings=facts.settings,
            )
        raise InvalidRequest(
            'Say where to import from: {"course_id": "c-..."} or {"backup_id": "b-..."}.'
        )

    async def sources(self, source) -> dict:
        """What a course or backup offers for import: ``{"source": {...}, "assignments":
        [{"name", "notebooks": [...]}], "settings": bool}``. ``source`` as for
        :meth:`import_into` (or a bare course or backup id)."""
        src = await self.import_source(source)
        listing = await self._import_files.listing(src)
        where = {"backup_id": src.backup_id} if src.backup_id else {"course_id": src.course_id}
        return {
            "source": where,
            "assignments": [
                {"name": name, "notebooks": notebooks}
                for name, notebooks in sorted(listing.items())
            ],
            "settings": src.settings is not None,
        }

    async def import_into(self, target_course_id: str, source, what: str, **options) -> dict:
        """Import now and wait for it: the work of an import operation, without the
        operation (see :meth:`start_import`, what the routes use). Options and result as
        :meth:`_checked`."""
        work, _target_id, _target = await self._checked(target_course_id, source, what, **options)
        return await work()

    async def start_import(self, target_course_id: str, source, what: str, **options) -> dict:
        """Check an import, then run it in the background as an operation (kind
        "import"); the operation's entry (state "running"). A refusal comes before
        anything starts: InvalidRequest, NotFound, Conflict (also while another operation
        runs on the course). A refusal of the file work (an assignment exists, without
        overwrite) ends the operation "failed" with its message."""
        actor = options.get("actor", "")
        work, target_id, target = await self._checked(target_course_id, source, what, **options)
        return await self.manager.engine.start_import(target_id, actor, work, target)

    async def _checked(
        self,
        target_course_id: str,
        source,
        what: str,
        *,
        assignment: str | None = None,
        notebook: str | None = None,
        as_assignment: str | None = None,
        overwrite: bool = False,
        actor: str,
    ):
        """Check an import; (the work as a coroutine function, the target id, the audit
        target).

        The work copies a whole course, one assignment or one notebook into a course.

        ``source``: ``{"course_id": ...}`` or ``{"backup_id": ...}`` (the handler checked
        the caller may use it). New files get the target grader's ownership; nothing in
        the source is followed (links are skipped and listed). Without ``overwrite`` an
        existing assignment or notebook is a Conflict and nothing changes; with it the
        old version is moved to ``.ananke/replaced/`` in the target's home.
        Returns ``{"imported": [...], "replaced": [...], "skipped": [...]}``
        (paths relative to the course directories).
        """
        target_id = self._course_id(target_course_id)
        if what not in WHAT:
            raise InvalidRequest(f"What to import is one of {', '.join(WHAT)}, not {what!r}.")
        if what in ("assignment", "notebook"):
            if assignment is None:
                raise InvalidRequest(f"Importing a {what} needs the assignment's name.")
            assignment = self._name(check_assignment_id, assignment)
        if what == "notebook":
            if notebook is None:
                raise InvalidRequest("Importing a notebook needs the notebook's name.")
            notebook = self._name(check_notebook_name, notebook)
        if as_assignment is not None:
            if what == "course":
                raise InvalidRequest("A whole course is imported under its own names.")
            as_assignment = self._name(check_assignment_id, as_assignment)
        if not isinstance(overwrite, bool):
            raise InvalidRequest("overwrite is true or false.")
        target_facts = await self._course(target_id)
        if target_facts.state == COURSE_DELETING:
            raise Conflict(f"Course {target_id} is being deleted.")
        src = await self.import_source(source)
        target = {
            "source": {"backup_id": src.backup_id}
            if src.backup_id
            else {"course_id": src.course_id},
            "what": what,
            "assignment": assignment,
            "notebook": notebook,
            "as_assignment": as_assignment,
            "overwrite": overwrite,
        }

        # What the import would refuse is refused now (4xx), not by a failed operation.
        request = ImportRequest(what, assignment, notebook, as_assignment, overwrite)
        await self._audited(
            actor, target_id, target, lambda: self._import_files.precheck(target_id, src, request)
        )

        async def work() -> dict:
            return await self._import(actor, target_id, src, target, request)

        return work, target_id, target

    async def _import(self, actor, target_id, src, target, request: ImportRequest) -> dict:
        async def work() -> dict:
            result = await self._import_files.import_(target_id, src, request)
            if request.what == "course" and src.settings is not None:
                try:
                    settings = CourseSettings.from_dict(src.settings)
                except SettingsError as exc:
                    result["skipped"].append(f"settings ({exc})")
                else:
                    await self._db(self.store.replace_settings, target_id, settings.to_dict())
                    await self._thread(
                        nbgrader_setup.write_settings, self.layout.course(target_id), settings
                    )
                    result["imported"].append("settings")
            return result

        result = await self._audited(actor, target_id, target, work)
        self.log.info(
            "course:%s user:%s imported %s from %s: %s",
            target_id,
            actor,
            request.what,
            target["source"],
            ", ".join(result["imported"]),
        )
        await self.record(
            actor,
            "course.import",
            target_id,
            target,
            "ok",
            json.dumps({k: len(v) for k, v in result.items()}),
        )
        return result

    async def _audited(self, actor, target_id, target, work):
        """``await work()``; a refusal or failure goes to the audit log (once) and comes
        back as the ManageError it is (an unsafe source: InvalidRequest)."""
        try:
            return await work()
        except ManageError as exc:
            outcome = "refused" if exc.status < 500 else "failed"
            await self.record(actor, "course.import", target_id, target, outcome, exc.message)
            audited(exc)
            raise
        except fsutil.UnsafePath as exc:
            # A link, a special file or a path leading elsewhere, in the source or the target.
            await self.record(actor, "course.import", target_id, target, "refused", str(exc))
            raise audited(InvalidRequest(f"{exc} Nothing was imported.")) from None
        except Exception as exc:
            if isinstance(exc, archive.BadArchive):
                await self.record(actor, "course.import", target_id, target, "refused", str(exc))
                raise audited(
                    InvalidRequest(f"The source cannot be imported safely: {exc}")
                ) from None
            self.log.exception("course:%s user:%s import failed", target_id, actor)
            await self.record(
                actor,
                "course.import",
                target_id,
                target,
                "failed",
                f"{type(exc).__name__} (details in Kore's log)",
            )
            raise

