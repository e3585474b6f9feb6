"""What a course's directories hold, read without following links (blocking).

Shared by backups (the assignments a backup lists) and imports (what a source offers).
Every function is :func:`~.threads.blocking`: called from Kore's event loop it raises;
async code reaches it through :class:`~.threads.InThread`.
"""

import os
import stat
from pathlib import Path

from ananke_hub import fsutil
from ananke_hub.courses.layout import CoursePaths

from .names import is_assignment_id, is_notebook_name
from .threads import blocking


@blocking
def real_entries(directory: Path) -> dict[str, int]:
    """name -> st_mode of the entries of a real directory reached without links; {}
    if there is none (or a link is in the way)."""
    try:
        fd = fsutil.open_dir(directory)
    except (FileNotFoundError, NotADirectoryError, fsutil.UnsafePath):
        return {}
    with fsutil.opened(fd):
        entries = {}
        for name in os.listdir(fd):
            try:
                entries[name] = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
        return entries


@blocking
def live_listing(paths: CoursePaths) -> dict[str, list[str]]:
    """assignment -> notebooks in a live course's source/ (links never followed)."""
    if not is_real_dir(paths.home) or not is_real_dir(paths.source):
        return {}
    listing = {}
    for name, mode in real_entries(paths.source).items():
        if stat.S_ISDIR(mode) and is_assignment_id(name):
            notebooks = [
                nb
                for nb, nb_mode in real_entries(paths.source / name).items()
                if stat.S_ISREG(nb_mode) and is_notebook_name(nb)
            ]
            listing[name] = sorted(notebooks)
    return listing


@blocking
def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


@blocking
def source_assignments(paths: CoursePaths) -> list[str]:
    """The assignments of a live course: real directories of source/ with valid names."""
    return sorted(live_listing(paths))
