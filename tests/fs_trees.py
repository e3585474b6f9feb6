"""Trees for the file-work tests (tests/test_fsutil.py, tests/test_manage_files.py): a
grader's home as nbgrader leaves it, somebody else's files, and the links and special
files a user could plant. The fixtures ``course`` and ``outside`` (tests/conftest.py)
make the first two in the test's ``tmp_path``."""

import json
import os
import sqlite3
from pathlib import Path


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every entry below ``top`` (links not followed): file content, None for directories."""
    out = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = None
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "special"
    return out


def owners(top: Path) -> set[tuple[int, int]]:
    entries = [top, *top.rglob("*")]
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in entries}


def make_course(tmp_path: Path) -> Path:
    """A grader's home as nbgrader leaves it: source notebooks, a gradebook, a config."""
    home = tmp_path / "home"
    (home / "source" / "hw1" / "data").mkdir(parents=True)
    (home / "source" / "hw 2").mkdir(parents=True)
    (home / "source" / "hw1" / "p1.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    (home / "source" / "hw1" / "p2 (extra).ipynb").write_text('{"cells": [1]}')
    (home / "source" / "hw1" / "data" / "x.csv").write_bytes(b"a,b\n" * 50_000)
    (home / "source" / "hw 2" / "run.sh").write_text("#!/bin/sh\n")
    (home / "source" / "hw 2" / "run.sh").chmod(0o755)
    (home / "source" / "empty").mkdir()
    (home / "nbgrader_config.json").write_text('{"CourseDirectory": {}}')
    with sqlite3.connect(home / "gradebook.db") as db:
        db.execute("create table student (id text primary key)")
        db.execute("insert into student values ('alice'), ('bob')")
    db.close()
    return home


def make_outside(tmp_path: Path) -> Path:
    """Somebody else's files, which nothing may read into a copy or touch."""
    other = tmp_path / "outside"
    (other / "secret").mkdir(parents=True)
    (other / "secret" / "solution.ipynb").write_text("the answers")
    (other / "sentinel").write_text("untouched")
    return other


def plant_traps(home: Path, outside: Path) -> list[str]:
    """Links and special files a user could leave in their home; their relative paths."""
    (home / "passwd").symlink_to("/etc/passwd")
    (home / "source" / "hw1" / "answers").symlink_to(outside / "secret")  # a linked directory
    (home / "source" / "etc").symlink_to("/etc")
    (home / "source" / "hw1" / "relative").symlink_to("../../../outside/sentinel")
    os.mkfifo(home / "source" / "hw1" / "pipe")
    os.link(outside / "sentinel", home / "source" / "hardlink")
    return [
        "passwd",
        "source/etc",
        "source/hardlink",
        "source/hw1/answers",
        "source/hw1/pipe",
        "source/hw1/relative",
    ]
