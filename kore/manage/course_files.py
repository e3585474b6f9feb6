"""The file steps of reset and delete (blocking): students' course directories, the
exchange's inbound and feedback, a deleted course's home and exchange.

:class:`CourseFiles` is used only through :class:`~.threads.InThread` by the journaled
engine (:mod:`.operations`); its methods raise when called from the event loop.
"""

import os
import stat
from pathlib import Path

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout, CoursePaths

from . import gradebook
from .listing import is_real_dir
from .threads import blocking

#: Course directories of one semester's students, removed by a reset.
STUDENT_DIRS = ("submitted", "autograded", "feedback")
#: Exchange directories emptied by a reset (outbound holds the released assignments).
STUDENT_EXCHANGE_DIRS = ("inbound", "feedback")


class CourseFiles:
    """Reset's and delete's file work (blocking; see the module's docstring)."""

    def __init__(self, layout: CourseLayout):
        self.layout = layout

    @blocking
    def remove_students_from_gradebook(self, paths: CoursePaths) -> list | None:
        """The students leave the gradebook; None if the course has no home."""
        if not is_real_dir(paths.home):
            return None
        return gradebook.remove_students(paths)

    @blocking
    def remove_student_files(self, paths: CoursePaths) -> None:
        if not is_real_dir(paths.home):
            return
        for name in STUDENT_DIRS:
            fsutil.remove_tree(paths.home / name)
        # The uids of this semester's students (collect's owner check): recorded anew.
        if is_real_dir(paths.home / ".ananke"):
            fsutil.remove_tree(paths.home / nbgrader_setup.STUDENT_UIDS_FILE)

    @blocking
    def clear_exchange(self, paths: CoursePaths) -> None:
        if not is_real_dir(paths.exchange):
            return
        for name in STUDENT_EXCHANGE_DIRS:
            if is_real_dir(paths.exchange / name):
                fsutil.clear_dir(paths.exchange / name)

    @blocking
    def systemd_link(self, paths: CoursePaths) -> Path | None:
        """``/var/lib/<user>``: systemd's link to a dynamic user's StateDirectory
        (systemd.exec(5), "StateDirectory="), next to ``/var/lib/private``."""
        homes_root = Path(self.layout.homes_root)
        if homes_root.name != "private":
            return None
        return homes_root.parent / paths.home.name

    @blocking
    def remove_course_files(self, paths: CoursePaths) -> None:
        link = self.systemd_link(paths)
        if link is not None:
            try:
                if stat.S_ISLNK(os.lstat(link).st_mode):
                    os.unlink(link)  # the link only, never what it points to
            except FileNotFoundError:
                pass
        fsutil.remove_tree(paths.home)
        fsutil.remove_tree(paths.exchange)
