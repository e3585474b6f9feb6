"""Import's blocking half: listing a source, unpacking a backup, copying assignments and
notebooks into a course, registering them in its gradebook.

:class:`ImportFiles` is used only through :class:`~.threads.InThread` by the async
import (:mod:`.importer`); its methods raise when called from the event loop.
"""

import os
import secrets
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ananke_hub import fsutil
from ananke_hub.courses.layout import CourseLayout, CoursePaths

from . import archive, gradebook
from .backups_files import COURSE_PREFIX, GRADEBOOK_MEMBER
from .errors import Conflict, NotFound
from .listing import is_real_dir, live_listing
from .names import is_assignment_id, is_notebook_name
from .threads import blocking

#: Where an import puts what it replaced, in the target's home.
REPLACED_DIR = ".ananke/replaced"


@dataclass(frozen=True)
class ImportSource:
    """Where an import reads from: a live course or a backup archive."""

    course_id: str = ""
    backup_id: str = ""
    paths: CoursePaths | None = None
    archive: Path | None = None
    settings: dict | None = None


@dataclass(frozen=True)
class ImportRequest:
    """What an import takes from its source (checked by :mod:`.importer` already)."""

    what: str  # "course", "assignment" or "notebook"
    assignment: str | None = None
    notebook: str | None = None
    as_assignment: str | None = None
    overwrite: bool = False


class ImportFiles:
    """The file work of an import (blocking; see the module's docstring)."""

    def __init__(self, layout: CourseLayout):
        self.layout = layout

    @blocking
    def listing(self, src: ImportSource) -> dict[str, list[str]]:
        """assignment -> notebooks on offer in a source (blocking)."""
        if src.paths is not None:
            return live_listing(src.paths)
        prefix = f"{COURSE_PREFIX}/source"
        try:
            dirs = archive.list_members(src.archive, prefix, kind="dir")
            notebooks = archive.list_members(src.archive, prefix, kind="file")
        except archive.NotInArchive:
            return {}
        listing = {name: [] for name in dirs if "/" not in name and is_assignment_id(name)}
        for rel in notebooks:
            parts = rel.split("/")
            if len(parts) == 2 and parts[0] in listing and is_notebook_name(parts[1]):
                listing[parts[0]].append(parts[1])
        return {name: sorted(nbs) for name, nbs in listing.items()}

    @blocking
    def gradebook_assignments(self, src: ImportSource) -> list[dict]:
        """The source's assignments with due dates (a backup is unpacked by now)."""
        if src.paths is None or not is_real_dir(src.paths.home):
            return []
        return gradebook.summary(src.paths)["assignments"]

    @blocking
    def import_(self, target_id: str, src: ImportSource, request: ImportRequest) -> dict:
        paths = self.target_paths(target_id)
        with self.unpacked(src) as src:
            return self.import_from(paths, src, request)

    @blocking
    def precheck(self, target_id: str, src: ImportSource, request: ImportRequest) -> None:
        """Refuse, before an import starts, what it would refuse (no course directory, no
        such assignment or notebook in the source, one that exists without overwrite):
        the caller gets the 4xx at once. The import checks again (the files may change)."""
        paths = self.target_paths(target_id)
        self.plan(paths, self.listing(src), request)

    @blocking
    def target_paths(self, target_id: str) -> CoursePaths:
        paths = self.layout.course(target_id)
        if not is_real_dir(paths.home):
            raise Conflict(
                f"Course {target_id} has no course directory yet. Launch it from the LMS "
                "once, then import."
            )
        return paths

    @blocking
    def plan(
        self,
        paths: CoursePaths,
        listing: dict[str, list[str]],
        request: ImportRequest,
    ) -> dict[str, str]:
        """Source assignment -> target assignment; NotFound for what the source lacks,
        Conflict for what the target has (without overwrite). Reads only."""
        what, assignment, notebook = request.what, request.assignment, request.notebook
        if what == "course":
            chosen = {name: name for name in listing}
            if not chosen:
                raise NotFound("The source has no assignments to import.")
        else:
            if assignment not in listing:
                raise NotFound(
                    f"The source has no assignment {assignment!r}. Take the name from its contents."
                )
            if what == "notebook" and notebook not in listing[assignment]:
                raise NotFound(
                    f"Assignment {assignment!r} of the source has no notebook {notebook!r}."
                )
            chosen = {assignment: request.as_assignment or assignment}
        if request.overwrite:
            return chosen
        if what == "notebook":
            dest_name = chosen[assignment]
            if _lexists(paths.source / dest_name / notebook):
                raise Conflict(
                    f"Assignment {dest_name!r} already has a notebook {notebook!r}. Import "
                    "with overwrite to replace it (the old one is kept aside)."
                )
            return chosen
        existing = [dest for dest in chosen.values() if _lexists(paths.source / dest)]
        if existing:
            raise Conflict(
                f"The course already has assignment(s) {', '.join(sorted(existing))}. Import "
                "with overwrite to replace them (the old versions are kept aside)."
            )
        return chosen

    @contextmanager
    @blocking
    def unpacked(self, src: ImportSource):
        """A backup's ``source/`` and gradebook, unpacked once into a temporary course
        directory (the archive checked as a whole on the way): an import then reads the
        gzip stream twice, not once per assignment and listing."""
        if src.paths is not None:
            yield src
            return
        with tempfile.TemporaryDirectory(prefix="ananke-import-") as tmp:
            home = Path(tmp) / "course"
            home.mkdir()
            for unpack, member, dest in (
                (archive.extract_tree, f"{COURSE_PREFIX}/source", home / "source"),
                (archive.extract_file, GRADEBOOK_MEMBER, home / gradebook.GRADEBOOK_FILE),
            ):
                try:
                    unpack(src.archive, member, dest)
                except archive.NotInArchive:
                    pass
            exchange = Path(tmp) / "exchange"
            yield replace(src, paths=CoursePaths(src.course_id, home, exchange))

    @blocking
    def import_from(
        self,
        paths: CoursePaths,
        src: ImportSource,
        request: ImportRequest,
    ) -> dict:
        chosen = self.plan(paths, self.listing(src), request)
        what, assignment, notebook = request.what, request.assignment, request.notebook
        overwrite = request.overwrite

        # The target's source/ and the place for replaced versions, as real directories
        # reached without links (fsutil refuses a link on the way).
        fsutil.ensure_dir_in_home(paths.home, "source", 0o755)
        result = {"imported": [], "replaced": [], "skipped": []}
        if what == "notebook":
            dest_name = chosen[assignment]
            fsutil.ensure_dir_in_home(paths.home, f"source/{dest_name}", 0o755)
            dest = paths.source / dest_name / notebook
            self.put(
                paths,
                src,
                f"source/{assignment}/{notebook}",
                dest,
                overwrite,
                result,
                is_file=True,
            )
            # The assignment is made known to the gradebook if new; an existing one
            # keeps its due date (one notebook does not bring the source's).
            self.register(paths, src, {assignment: dest_name}, result, with_dates=False)
            return result

        for name, dest_name in sorted(chosen.items()):
            self.put(
                paths,
                src,
                f"source/{name}",
                paths.source / dest_name,
                overwrite,
                result,
                is_file=False,
            )
        self.register(paths, src, chosen, result)
        return result

    @blocking
    def put(
        self,
        paths: CoursePaths,
        src: ImportSource,
        rel: str,
        dest: Path,
        overwrite: bool,
        result: dict,
        *,
        is_file: bool,
    ) -> None:
        """Copy ``rel`` of the source to ``dest`` in the target: into a staging name next
        to it, then (the old one moved aside) renamed into place."""
        owner = fsutil.home_owner(paths.home)
        staging = dest.parent / f".{dest.name[:100]}.import-{secrets.token_hex(6)}"
        try:
            # Opened component by component from the source's home (a backup's is
            # unpacked by now): a link on the way is refused (fsutil.UnsafePath), links
            # inside are skipped.
            origin = src.paths.home / rel
            if is_file:
                fsutil.copy_file(origin, staging, owner=owner)
                report = None
            else:
                report = fsutil.copy_tree(origin, staging, owner=owner)
            if report is not None:
                result["skipped"].extend(f"{rel}/{s}" for s in report.skipped)
            if _lexists(dest):
                if not overwrite:  # appeared meanwhile
                    raise Conflict(
                        f"{dest.relative_to(paths.home)} appeared meanwhile; nothing replaced."
                    )
                fsutil.ensure_dir_in_home(paths.home, REPLACED_DIR, 0o755)
                aside = fsutil.move_aside(dest, paths.home / REPLACED_DIR, owner=owner)
                result["replaced"].append(str(aside.relative_to(paths.home)))
            with fsutil.parent_dir(dest) as (parent_fd, name, _):
                try:
                    fsutil.rename_noreplace(parent_fd, staging.name, parent_fd, name)
                except FileExistsError:
                    raise Conflict(
                        f"{dest.relative_to(paths.home)} appeared meanwhile; nothing replaced."
                    ) from None
            result["imported"].append(str(dest.relative_to(paths.home)))
        finally:
            if _lexists(staging):
                fsutil.remove_tree(staging)

    @blocking
    def register(
        self,
        paths: CoursePaths,
        src: ImportSource,
        names: dict[str, str],
        result: dict,
        *,
        with_dates: bool = True,
    ) -> None:
        """Record the imported assignments (due dates from the source) in the gradebook."""
        if not gradebook.exists(paths):
            result["skipped"].append("gradebook (the course has none yet)")
            return
        dates = (
            {a["name"]: a.get("duedate") for a in self.gradebook_assignments(src)}
            if with_dates
            else {}
        )
        gradebook.register_assignments(
            paths,
            [{"name": dest, "duedate": dates.get(name)} for name, dest in sorted(names.items())],
        )


def _lexists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True
