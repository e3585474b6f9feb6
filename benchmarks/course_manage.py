"""Benchmark: Kore's course management (backup, reset, import) on realistic nbgrader courses.

    .venv/bin/python benchmarks/course_manage.py [--sizes 50x5,200x10] [--json out.json]

For each course size (students x assignments) a course is built as a semester leaves
it: the grader's home (nbgrader_config.json, a gradebook filled through nbgrader's
``Gradebook`` API with a graded submission of every student for every assignment,
``source/``, ``release/``, and ``submitted/``, ``autograded/``, ``feedback/`` per
student) and the course's exchange (``outbound/``, ``inbound/`` submissions,
``feedback/``); notebooks of 50-200 KB are generated, not converted. Then, in the same
run, against plain-Python baselines on the same files:

- ``CourseManager.backup`` against ``shutil.make_archive(..., "gztar")`` of the course
  directory and the exchange (and plain ``tarfile`` at the compression level ours uses);
  the peak RSS of the process during each, next to the archive's size;
- ``CourseManager.import_into`` of a whole course, from the course and from its backup,
  against ``shutil.copytree`` of its ``source/`` (and one-pass extraction with tarfile);
- ``CourseManager.reset`` with a fake hub API (httpx.MockTransport), step by step.

See benchmarks/README.md.
"""

import argparse
import asyncio
import hashlib
import html
import json
import logging
import os
import random
import re
import resource
import shutil
import sys
import tarfile
import time
import warnings
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

import httpx
from report import (
    add_output_arguments,
    finish,
    parse_sizes,
    publish,
    report_header,
    work_directory,
)
from sqlalchemy.exc import SAWarning

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout, CoursePaths
from ananke_hub.courses.models import Course, Member
from ananke_hub.courses.provision import learner_group, staff_group
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.roles import Role
from kore.manage import archive, gradebook
from kore.manage.hubapi import HubAdmin
from kore.manage.service import RESET_STEPS, STUDENT_DIRS, CourseManager

#: Sizes of --quick: a smoke test of every measurement, not a measurement.
QUICK = dict(sizes="3x2", notebooks=1, kb="20-40")
INSTRUCTOR = "u100"
HUB_TOKEN = "bench-kore-token"
#: Owners of the files when the benchmark runs as root, as on a hub: the grader accounts
#: (systemd dynamic users) own their homes, students their inbound submissions.
GRADER_UID, TARGET_UIDS, FIRST_STUDENT_UID = 62300, (62301, 62302), 62400
TIMESTAMP = "2025-03-14 09:26:53.589793 UTC"
MB = 1 << 20


@dataclass(frozen=True)
class Size:
    students: int
    assignments: int

    @property
    def label(self) -> str:
        return f"{self.students}x{self.assignments}"


def parse_size_list(text: str) -> list[Size]:
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not match:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a course size: write students x assignments, e.g. 50x5"
            )
        size = Size(int(match[1]), int(match[2]))
        if not (1 <= size.students <= 5000 and 1 <= size.assignments <= 100):
            raise argparse.ArgumentTypeError(
                f"{part!r}: 1 to 5000 students and 1 to 100 assignments"
            )
        sizes.append(size)
    return sizes


def parse_kb_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)-(\d+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]) <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size range in KB such as 50-200")
    return int(match[1]), int(match[2])


def course_ids(index: int) -> tuple[str, str, str]:
    """The measured course and the two import targets of the ``index``-th size."""
    return tuple(f"c-{prefix:x}{index:015x}" for prefix in (0xA, 0xB, 0xC))


def student_name(i: int) -> str:
    return f"u{5000 + i}"


def assignment_name(a: int) -> str:
    return f"ps{a + 1:02d}"


def notebook_name(n: int) -> str:
    return ("problems", "lab", "project", "extra")[n] if n < 4 else f"part{n + 1}"


# --- notebooks: generated, of realistic size and make-up --------------------------------------

SYLLABLES = "ka lo mi ne ru sa te vi do ga he ji ku ma no pe ri so tu wa ye zo an el is".split()
CALLS = ("np.mean", "np.sum", "pd.read_csv", "plt.plot", "sorted", "len", "np.linspace")


class NotebookMaker:
    """nbformat 4 notebooks that compress like real course notebooks: prose, code,
    printed numbers, and figures (PNG data is already compressed: random bytes here,
    base64-encoded as in a notebook's outputs)."""

    def __init__(self, seed: int = 7):
        rng = random.Random(seed)
        self.words = [
            "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(500)
        ]
        self.weights = [1 / (k + 1) for k in range(len(self.words))]  # Zipf-like

    def prose(self, rng: random.Random, n: int) -> str:
        return " ".join(rng.choices(self.words, self.weights, k=n)) + "."

    def code(self, rng: random.Random, lines: int) -> str:
        out = []
        for _ in range(lines):
            a, b = rng.sample(self.words[:60], 2)
            out.append(f"{a} = {rng.choice(CALLS)}({b}, {rng.randint(0, 999)})")
        return "\n".join(out)

    def release(self, rng: random.Random, target: int, assignment: str, notebook: str) -> dict:
        """The released notebook: problems until about ``target`` bytes. Each problem is
        a task (markdown), a solution cell and an autograded test cell, some with a figure."""
        cells, size, k = [], 0, 0
        while size < target:
            k += 1
            text = self.prose(rng, rng.randint(60, 220))
            source = self.code(rng, rng.randint(8, 30))
            outputs = [
                {
                    "name": "stdout",
                    "output_type": "stream",
                    "text": "\n".join(f"{rng.random():.6f}" for _ in range(rng.randint(5, 40))),
                }
            ]
            if k % 2 == 0:
                png = b64encode(rng.randbytes(rng.randint(6_000, 24_000))).decode()
                outputs.append(
                    {
                        "data": {"image/png": png, "text/plain": "<Figure size 640x480>"},
                        "metadata": {},
                        "output_type": "display_data",
                    }
                )
            cells += [
                _cell("markdown", text, {}),
                _cell(
                    "code",
                    source,
                    _nbgrader(f"{notebook}-solution-{k}", solution=True),
                    outputs,
                ),
                _cell(
                    "code",
                    f"assert {self.words[k]} is not None",
                    _nbgrader(f"{notebook}-test-{k}", grade=True, points=5),
                ),
            ]
            size += len(text) + len(source) + sum(len(json.dumps(o)) for o in outputs) + 600
        return {
            "cells": cells,
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "title": f"{assignment} {notebook}",
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }

    def answered(self, base: dict, rng: random.Random, student: str, graded: bool) -> dict:
        """A student's copy: their own answers (and, autograded, the tests' outcomes)."""
        cells = []
        for cell in base["cells"]:
            meta = cell["metadata"].get("nbgrader", {})
            if meta.get("solution"):
                answer = f"# {student}\n" + self.code(rng, rng.randint(3, 12))
                cell = {**cell, "source": answer + "\n" + cell["source"]}
            elif graded and meta.get("grade"):
                cell = {
                    **cell,
                    "outputs": [{"name": "stdout", "output_type": "stream", "text": "passed\n"}],
                }
            cells.append(cell)
        return {**base, "cells": cells}


def _cell(kind: str, source: str, nbgrader: dict, outputs=None) -> dict:
    cell = {"cell_type": kind, "id": hashlib.md5(source.encode()).hexdigest()[:8]}
    cell["metadata"] = {"nbgrader": nbgrader} if nbgrader else {}
    cell["source"] = source
    if kind == "code":
        cell["execution_count"] = 1
        cell["outputs"] = outputs or []
    return cell


def _nbgrader(grade_id: str, *, solution=False, grade=False, points=0) -> dict:
    meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": grade}
    if grade:
        meta["points"] = points
    return {**meta, "schema_version": 3}


def feedback_html(notebook: dict, css: str) -> str:
    """What nbgrader's feedback looks like on disk: an HTML page of the graded notebook."""
    body = []
    for cell in notebook["cells"]:
        body.append(
            f'<div class="cell {cell["cell_type"]}"><pre>{html.escape(cell["source"])}</pre>'
        )
        for out in cell.get("outputs", []):
            if "text" in out:
                body.append(f"<pre>{html.escape(out['text'])}</pre>")
            png = out.get("data", {}).get("image/png")
            if png:
                body.append(f'<img src="data:image/png;base64,{png}">')
        body.append("</div>")
    return (
        f"<!DOCTYPE html><html><head><style>{css}</style></head><body>{''.join(body)}</body></html>"
    )


def feedback_css(rng: random.Random) -> str:
    return "\n".join(
        f".jp-{w}-{k} {{ margin: {k % 7}px; color: #{rng.randrange(1 << 24):06x}; }}"
        for k, w in enumerate(rng.choices(SYLLABLES, k=400))
    )


# --- the course on disk ------------------------------------------------------------------------


@dataclass
class BuiltCourse:
    """One size's course: where it is, and what a backup must find in it."""

    size: Size
    notebooks: int
    workdir: Path
    layout: CourseLayout
    registry: CourseRegistry
    course_id: str
    targets: tuple[str, str]
    files: int
    bytes: int
    build_s: float

    @property
    def paths(self) -> CoursePaths:
        return self.layout.course(self.course_id)


def write(path: Path, data: str | bytes, uid: int | None = None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(raw)
    if uid is not None:
        os.chown(path, uid, uid)
    return len(raw)


def give(top: Path, uid: int) -> None:
    """Hand a tree to ``uid`` (as systemd does for a dynamic user's home)."""
    os.chown(top, uid, uid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def fill_gradebook(paths: CoursePaths, size: Size, notebooks: int) -> None:
    """Assignments with their notebooks and cells, students, and a graded submission of
    every student for every assignment, through nbgrader's own API."""
    from nbgrader.api import Gradebook

    gb = Gradebook(paths.gradebook_url, paths.course_id)
    try:
        for a in range(size.assignments):
            name = assignment_name(a)
            gb.add_assignment(name, duedate=f"2025-0{1 + a % 9}-15 12:00:00 UTC")
            for n in range(notebooks):
                nb = notebook_name(n)
                gb.add_notebook(nb, name)
                for k in (1, 2):
                    gb.add_grade_cell(f"{nb}-test-{k}", nb, name, max_score=5, cell_type="code")
                    gb.add_solution_cell(f"{nb}-solution-{k}", nb, name)
        for i in range(size.students):
            gb.add_student(
                student_name(i),
                first_name="Student",
                last_name=str(i),
                email=f"{student_name(i)}@example.edu",
                lms_user_id=str(5000 + i),
            )
        with warnings.catch_warnings():
            # nbgrader's add_submission warns about its own session use; not ours to fix.
            warnings.simplefilter("ignore", SAWarning)
            for a in range(size.assignments):
                for i in range(size.students):
                    submission = gb.add_submission(assignment_name(a), student_name(i))
                    for nb in submission.notebooks:
                        for grade in nb.grades:
                            grade.auto_score = float((i + a) % 6)
                            grade.needs_manual_grade = False
                gb.db.commit()
    finally:
        gb.close()
        gb.engine.dispose()


def write_course_files(
    paths: CoursePaths, size: Size, notebooks: int, kb: tuple[int, int], owned: bool
) -> None:
    """source/, release/, the students' trees and the exchange, as a semester leaves them."""
    maker = NotebookMaker()
    rng = random.Random(11)
    css = feedback_css(rng)
    home, exchange = paths.home, paths.exchange
    for a in range(size.assignments):
        assignment = assignment_name(a)
        for n in range(notebooks):
            nb = notebook_name(n)
            target = rng.randint(kb[0], kb[1]) * 1024
            base = maker.release(random.Random(f"{a}/{n}"), target, assignment, nb)
            text = json.dumps(base, indent=1)
            for where in (home / "source", home / "release", exchange / "outbound"):
                write(where / assignment / f"{nb}.ipynb", text)
            for i in range(size.students):
                student = student_name(i)
                srng = random.Random(f"{a}/{n}/{i}")
                submitted = json.dumps(maker.answered(base, srng, student, False), indent=1)
                graded_nb = maker.answered(base, random.Random(f"{a}/{n}/{i}"), student, True)
                graded = json.dumps(graded_nb, indent=1)
                page = feedback_html(graded_nb, css)
                inbound = exchange / "inbound" / f"{student}+{assignment}+{TIMESTAMP}+{i:08x}"
                write(home / "submitted" / student / assignment / f"{nb}.ipynb", submitted)
                write(home / "autograded" / student / assignment / f"{nb}.ipynb", graded)
                write(home / "feedback" / student / assignment / f"{nb}.html", page)
                write(inbound / f"{nb}.ipynb", submitted)
                digest = hashlib.md5(f"{student}/{assignment}/{nb}".encode()).hexdigest()
                write(exchange / "feedback" / f"{digest}.html", page)
        write(home / "source" / assignment / "data" / "measurements.csv", _csv(rng))
        for i in range(size.students):
            student = student_name(i)
            for tree in STUDENT_DIRS:
                write(home / tree / student / assignment / "timestamp.txt", TIMESTAMP)
            inbound = exchange / "inbound" / f"{student}+{assignment}+{TIMESTAMP}+{i:08x}"
            write(inbound / "timestamp.txt", TIMESTAMP)
            if owned:  # the student's own submission (their lab's uid), the grader's group
                for entry in (inbound, *inbound.iterdir()):
                    os.chown(entry, FIRST_STUDENT_UID + i, GRADER_UID)
    uids = {student_name(i): [FIRST_STUDENT_UID + i] for i in range(size.students)}
    text = json.dumps({"version": 1, "students": uids}, indent=1, sort_keys=True) + "\n"
    write(home / nbgrader_setup.STUDENT_UIDS_FILE, text)


def _csv(rng: random.Random) -> str:
    rows = [f"{k},{rng.random():.5f},{rng.randint(0, 100)}" for k in range(2000)]
    return "id,value,count\n" + "\n".join(rows) + "\n"


def count_files(*tops: Path) -> tuple[int, int]:
    files = size = 0
    for top in tops:
        for dirpath, _, filenames in os.walk(top):
            for name in filenames:
                files += 1
                size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def fill_registry(registry: CourseRegistry, ids: tuple[str, ...], size: Size) -> None:
    with registry.session() as session, session.begin():
        for k, course_id in enumerate(ids):
            session.add(
                Course(
                    id=course_id,
                    issuer="https://lms.example.edu",
                    client_id="ananke-bench",
                    deployment_id="1",
                    resource_link_id=f"link-{course_id}",
                    title=f"Benchmark course {size.label} ({'source' if k == 0 else 'target'})",
                    settings={"execute_timeout": 60},
                    provisioned=1,
                )
            )
            session.add(Member(course_id=course_id, username=INSTRUCTOR, role=str(Role.INSTRUCTOR)))
        for i in range(size.students):
            session.add(
                Member(
                    course_id=ids[0],
                    username=student_name(i),
                    role=str(Role.LEARNER),
                    lms_user_id=str(5000 + i),
                    in_gradebook=True,
                )
            )


def build_course(
    workdir: Path, index: int, size: Size, notebooks: int, kb: tuple[int, int]
) -> BuiltCourse:
    """The course of one size, with two empty courses to import into (blocking)."""
    started = time.perf_counter()
    owned = os.geteuid() == 0
    layout = CourseLayout(
        homes_root=str(workdir / "lib" / "private"), exchange_root=str(workdir / "exchange")
    )
    ids = course_ids(index)
    settings = CourseSettings(execute_timeout=60)
    for course_id in ids:
        nbgrader_setup.ensure_course_files(layout.course(course_id), course_id, settings)
    paths = layout.course(ids[0])
    fill_gradebook(paths, size, notebooks)
    write_course_files(paths, size, notebooks, kb, owned)
    if owned:
        for course_id, uid in zip(ids, (GRADER_UID, *TARGET_UIDS), strict=True):
            give(layout.course(course_id).home, uid)
            nbgrader_setup.sync_exchange_owner(layout.course(course_id))
    registry = CourseRegistry(url=f"sqlite:///{workdir / 'courses.sqlite'}")
    fill_registry(registry, ids, size)
    files, nbytes = count_files(paths.home, paths.exchange)
    return BuiltCourse(
        size=size,
        notebooks=notebooks,
        workdir=workdir,
        layout=layout,
        registry=registry,
        course_id=ids[0],
        targets=(ids[1], ids[2]),
        files=files,
        bytes=nbytes,
        build_s=round(time.perf_counter() - started, 1),
    )


# --- the hub, faked (httpx.MockTransport) ------------------------------------------------------


class FakeHub:
    """The hub API calls a reset makes: a group's members, and taking them out."""

    def __init__(self, course_id: str, learners: list[str]):
        self.groups = {
            learner_group(course_id): set(learners),
            staff_group(course_id): {INSTRUCTOR},
        }
        self.calls: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/hub/api")
        self.calls.append(f"{request.method} {path}")
        parts = path.strip("/").split("/")
        if parts[0] == "groups" and len(parts) >= 2 and parts[1] in self.groups:
            group = parts[1]
            if len(parts) == 2 and request.method == "GET":
                return httpx.Response(
                    200, json={"name": group, "users": sorted(self.groups[group])}
                )
            if parts[2:] == ["users"] and request.method == "DELETE":
                self.groups[group] -= set(json.loads(request.content)["users"])
                return httpx.Response(
                    200, json={"name": group, "users": sorted(self.groups[group])}
                )
        return httpx.Response(404, json={"status": 404, "message": f"{path}: not faked"})


# --- measuring ---------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """The process's resident set size around a block of work.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` after the work is an upper bound of the peak
    during it (it keeps earlier peaks too): below the archive's size, it shows that the
    archive was never held in memory. The kernel's high-water mark of the process
    (``VmHWM``) is reset before the work (``/proc/self/clear_refs``, "5", see proc(5)) and
    read after it: the peak during the work alone. (The reset also lowers what
    getrusage reports afterwards: it reports the larger of the two.)
    """

    def __enter__(self):
        self.rss_before = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        return self

    def __exit__(self, *exc):
        self.maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.hwm = _status_kib("VmHWM") if self.hwm_reset else None

    def result(self) -> dict:
        def mb(kib):
            return None if kib is None else round(kib / 1024, 1)

        above = None if self.hwm is None or self.rss_before is None else self.hwm - self.rss_before
        return {
            "rss_before_mb": mb(self.rss_before),
            "peak_rss_mb": mb(self.hwm),
            "peak_above_start_mb": mb(above),
            "ru_maxrss_mb": mb(self.maxrss),
        }


class ArchivePasses:
    """Counts how often kore.manage.archive opens an archive to read it (each read
    decompresses it from its start)."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        self.original = archive._open_tar

        def counting(path):
            self.count += 1
            return self.original(path)

        archive._open_tar = counting
        return self

    def __exit__(self, *exc):
        archive._open_tar = self.original


class StepClock(logging.Handler):
    """Times a reset's steps from the course manager's own log lines."""

    DONE = re.compile(r": step (\d+) \((.+)\) done$")

    def __init__(self):
        super().__init__(logging.INFO)
        self.marks: list[tuple[float, str]] = []
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.DONE.search(message):
            self.marks.append((time.perf_counter(), self.DONE.search(message)[2]))
        elif record.levelno >= logging.WARNING:
            self.problems.append(message)

    def steps(self, started: float) -> dict[str, float]:
        out, last = {}, started
        for at, name in self.marks:
            out[name] = round(at - last, 3)
            last = at
        return out


def manager_for(course: BuiltCourse, hub: FakeHub, log: logging.Logger) -> CourseManager:
    admin = HubAdmin(
        api_url="http://hub.invalid/hub/api",
        token=HUB_TOKEN,
        transport=httpx.MockTransport(hub.handle),
        poll_interval=0,
    )
    return CourseManager(
        registry=course.registry,
        layout=course.layout,
        hub=admin,
        backups_dir=str(course.workdir / "state" / "backups"),
        retention=0,
        log=log,
    )


def rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def ratio(ours: float | None, baseline: float | None) -> float | None:
    return round(ours / baseline, 2) if ours and baseline else None


async def timed(work):
    """(seconds, result) of awaiting ``work``."""
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


def plain_make_archive(course: BuiltCourse, out: Path) -> tuple[int, list[Path]]:
    """The baseline: shutil.make_archive of the course directory and of the exchange (one
    archive each: they live under different roots), as anyone would write it."""
    paths = course.paths
    made = []
    for name, top in (("course", paths.home), ("exchange", paths.exchange)):
        made.append(
            Path(
                shutil.make_archive(
                    str(out / name), "gztar", root_dir=top.parent, base_dir=top.name
                )
            )
        )
    return sum(p.stat().st_size for p in made), made


def plain_tar_level6(course: BuiltCourse, out: Path) -> int:
    """The same two trees in one tar.gz with tarfile at ours' compression level (6;
    make_archive uses 9): no link checks, no manifest, the live gradebook file."""
    path = out / "plain-l6.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        tar.add(course.paths.home, "course")
        tar.add(course.paths.exchange, "exchange")
    return path.stat().st_size


def plain_extract_source(archive: Path, top_name: str, dest: Path) -> int:
    """One pass over make_archive's course archive: its source/ extracted (tarfile 'data'
    filter), as a plain restore would do."""
    prefix = f"{top_name}/source/"
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            if info.name.startswith(prefix):
                tar.extract(info, dest, filter="data")
                count += info.isreg()
    return count


async def measure_backup(course: BuiltCourse, manager: CourseManager, scratch: Path) -> dict:
    print("  backup: ours (CourseManager.backup) ...", flush=True)
    with PeakMemory() as mem:
        seconds, entry = await timed(manager.backup(course.course_id, INSTRUCTOR))
    ours = {
        "wall_s": round(seconds, 4),
        "archive_bytes": entry["size_bytes"],
        "files": entry["contents"]["files"],
        "bytes": entry["contents"]["bytes"],
        "skipped": entry["contents"]["skipped"],
        "files_per_s": rate(entry["contents"]["files"], seconds),
        "mb_per_s": rate(entry["contents"]["bytes"] / MB, seconds),
        "memory": mem.result(),
        "backup_id": entry["backup_id"],
    }
    print("  backup: baseline shutil.make_archive(gztar) ...", flush=True)
    with PeakMemory() as mem:
        seconds, (size, archives) = await timed(
            asyncio.to_thread(plain_make_archive, course, scratch)
        )
    baseline = {
        "wall_s": round(seconds, 4),
        "archive_bytes": size,
        "files": course.files,
        "files_per_s": rate(course.files, seconds),
        "mb_per_s": rate(course.bytes / MB, seconds),
        "memory": mem.result(),
    }
    print("  backup: reference tarfile w:gz level 6 ...", flush=True)
    with PeakMemory() as mem:
        seconds, size = await timed(asyncio.to_thread(plain_tar_level6, course, scratch))
    level6 = {
        "wall_s": round(seconds, 4),
        "archive_bytes": size,
        "files": course.files,
        "files_per_s": rate(course.files, seconds),
        "mb_per_s": rate(course.bytes / MB, seconds),
        "memory": mem.result(),
    }
    (scratch / "plain-l6.tar.gz").unlink()
    checks = {
        "files_match_course": ours["files"] == course.files,
        "bytes_match_course": ours["bytes"] == course.bytes,
        "nothing_skipped": not ours["skipped"],
        "students": entry["contents"]["students"] == course.size.students,
        "submissions": entry["contents"]["submissions"]
        == course.size.students * course.size.assignments,
    }
    return {
        "ours": ours,
        "make_archive": baseline,
        "tarfile_level6": level6,
        "ratio_ours_over_make_archive": ratio(ours["wall_s"], baseline["wall_s"]),
        "ratio_ours_over_tarfile_level6": ratio(ours["wall_s"], level6["wall_s"]),
        "archive_size_ratio_ours_over_make_archive": ratio(
            ours["archive_bytes"], baseline["archive_bytes"]
        ),
        "checks": checks,
        "_course_archive": archives[0],
    }


async def measure_import(
    course: BuiltCourse, manager: CourseManager, backup_id: str, plain_archive: Path, scratch: Path
) -> dict:
    expected = sorted(f"source/{assignment_name(a)}" for a in range(course.size.assignments))
    out: dict = {}
    for key, target, source in (
        ("from_course", course.targets[0], {"course_id": course.course_id}),
        ("from_backup", course.targets[1], {"backup_id": backup_id}),
    ):
        print(f"  import: ours, whole course {key.replace('_', ' ')} ...", flush=True)
        with ArchivePasses() as passes:
            seconds, result = await timed(
                manager.import_into(target, source, "course", actor=INSTRUCTOR)
            )
        imported = sorted(p for p in result["imported"] if p.startswith("source/"))
        out[key] = {
            "wall_s": round(seconds, 4),
            # reads of the backup archive, each from its start (0 from a course)
            "archive_reads": passes.count,
            "imported": len(result["imported"]),
            "skipped": result["skipped"],
            "ok": imported == expected
            and "settings" in result["imported"]
            and not result["skipped"],
        }
    source_files, source_bytes = count_files(course.paths.source)
    print("  import: baseline shutil.copytree(source/) ...", flush=True)
    seconds, _ = await timed(
        asyncio.to_thread(shutil.copytree, course.paths.source, scratch / "copytree-source")
    )
    out["copytree"] = {
        "wall_s": round(seconds, 4),
        "files": source_files,
        "bytes": source_bytes,
    }
    print("  import: reference one-pass tarfile extraction of source/ ...", flush=True)
    seconds, extracted = await timed(
        asyncio.to_thread(
            plain_extract_source, plain_archive, course.paths.home.name, scratch / "extract-source"
        )
    )
    out["tar_extract"] = {"wall_s": round(seconds, 4), "files": extracted}
    out["ratio_from_course_over_copytree"] = ratio(
        out["from_course"]["wall_s"], out["copytree"]["wall_s"]
    )
    out["ratio_from_backup_over_copytree"] = ratio(
        out["from_backup"]["wall_s"], out["copytree"]["wall_s"]
    )
    out["ratio_from_backup_over_tar_extract"] = ratio(out["from_backup"]["wall_s"], seconds)
    out["checks"] = {
        "from_course": out["from_course"]["ok"],
        "from_backup": out["from_backup"]["ok"],
        "tar_extract_files": extracted == source_files,
    }
    return out


async def measure_reset(
    course: BuiltCourse, manager: CourseManager, hub: FakeHub, clock: StepClock
) -> dict:
    print("  reset: CourseManager.reset (fake hub) ...", flush=True)
    clock.marks.clear()
    started = time.perf_counter()
    op = await manager.reset(course.course_id, INSTRUCTOR)
    seconds = time.perf_counter() - started
    steps = clock.steps(started)
    paths = course.paths
    left = gradebook.summary(paths)
    checks = {
        "finished": op["state"] == "finished" and op["step"] == len(RESET_STEPS),
        "gradebook_emptied": left["students"] == 0 and left["submissions"] == 0,
        "assignments_kept": len(left["assignments"]) == course.size.assignments,
        "student_dirs_gone": not any((paths.home / d).exists() for d in STUDENT_DIRS),
        "inbound_emptied": not any(paths.inbound.iterdir()),
        "hub_group_emptied": hub.groups[learner_group(course.course_id)] == set(),
    }
    return {
        "wall_s": round(seconds, 4),
        "steps_s": steps,
        "state": op["state"],
        "message": op["message"],
        "problems": list(clock.problems),
        "hub_calls": len(hub.calls),
        "checks": checks,
    }


async def measure_size(args, index: int, size: Size, root: Path) -> dict:
    workdir = root / f"course-{size.label}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    print(
        f"Course {size.label}: building ({size.students} students x {size.assignments} "
        f"assignments, {args.notebooks} notebook(s) each, {args.kb[0]}-{args.kb[1]} KB) ...",
        flush=True,
    )
    course = await asyncio.to_thread(build_course, workdir, index, size, args.notebooks, args.kb)
    scratch = workdir / "baseline"
    scratch.mkdir()
    print(
        f"  built in {course.build_s} s: {course.files} files, {course.bytes / MB:.1f} MB",
        flush=True,
    )
    log = logging.getLogger(f"bench.course_manage.{size.label}")
    log.propagate = False
    log.setLevel(logging.INFO)
    clock = StepClock()
    log.addHandler(clock)
    hub = FakeHub(course.course_id, [student_name(i) for i in range(size.students)])
    manager = manager_for(course, hub, log)
    try:
        backup = await measure_backup(course, manager, scratch)
        plain_archive = backup.pop("_course_archive")
        imports = await measure_import(
            course, manager, backup["ours"]["backup_id"], plain_archive, scratch
        )
        reset = await measure_reset(course, manager, hub, clock)
    finally:
        await manager.aclose()
        course.registry.close()
        log.removeHandler(clock)
    result = {
        "size": {
            "students": size.students,
            "assignments": size.assignments,
            "notebooks_per_assignment": args.notebooks,
            "files": course.files,
            "bytes": course.bytes,
            "build_s": course.build_s,
        },
        "backup": backup,
        "import": imports,
        "reset": reset,
    }
    result["ok"] = all(all(part["checks"].values()) for part in (backup, imports, reset))
    if result["ok"] and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


async def run(args, root: Path) -> dict:
    # Imports and first uses that a running Kore has done long before (nbgrader, SQLite).
    nbgrader_setup.warm_up()
    out = {}
    for index, size in enumerate(args.sizes):
        out[size.label] = await measure_size(args, index, size, root)
    return out


# --- the report --------------------------------------------------------------------------------


def _f(value, digits: int = 2, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render(report: dict) -> str:
    lines = [
        "Kore's course management on generated nbgrader courses, wall seconds. Baselines:",
        "plain Python on the same files, same run; ratio ours/baseline above 1 = ours slower.",
    ]
    for label, r in report["sizes"].items():
        s, b, i, z = r["size"], r["backup"], r["import"], r["reset"]
        lines += [
            "",
            f"Course {label}: {s['students']} students x {s['assignments']} assignments x "
            f"{s['notebooks_per_assignment']} notebook(s): {s['files']} files, "
            f"{s['bytes'] / MB:.1f} MB (built in {s['build_s']} s)",
            f"  {'backup (course dir + exchange)':34} {'wall s':>7} {'archive MB':>10} "
            f"{'files/s':>8} {'MB/s':>6} | {'RSS start':>9} {'peak RSS':>8} {'getrusage':>9}",
        ]
        for key, name in (
            ("ours", "ours: CourseManager.backup"),
            ("make_archive", "shutil.make_archive gztar (lvl 9)"),
            ("tarfile_level6", "tarfile w:gz, level 6 like ours"),
        ):
            row, mem = b[key], b[key]["memory"]
            lines.append(
                f"  {name:34} {row['wall_s']:>7.2f} {row['archive_bytes'] / MB:>10.1f} "
                f"{_f(row['files_per_s'], 0):>8} {_f(row['mb_per_s'], 1):>6} | "
                f"{_f(mem['rss_before_mb'], 0):>9} {_f(mem['peak_rss_mb'], 0):>8} "
                f"{_f(mem['ru_maxrss_mb'], 0):>9}"
            )
        lines.append(
            f"  ratio ours/make_archive {_f(b['ratio_ours_over_make_archive'])}x, "
            f"ours/tarfile level 6 {_f(b['ratio_ours_over_tarfile_level6'])}x; archive size "
            f"ours/make_archive {_f(b['archive_size_ratio_ours_over_make_archive'])}x "
            "(memory in MB)"
        )
        lines.append(
            f"  {'import of the whole course':34} {'wall s':>7}   vs copytree   vs tar 1 pass"
        )
        lines.append(
            f"  {'ours, from the course':34} {i['from_course']['wall_s']:>7.3f}   "
            f"{_f(i['ratio_from_course_over_copytree'], 1):>10}x"
        )
        lines.append(
            f"  {'ours, from its backup':34} {i['from_backup']['wall_s']:>7.3f}   "
            f"{_f(i['ratio_from_backup_over_copytree'], 1):>10}x   "
            f"{_f(i['ratio_from_backup_over_tar_extract'], 1):>12}x   "
            f"({i['from_backup']['archive_reads']} reads of the archive)"
        )
        lines.append(
            f"  {'shutil.copytree(source/)':34} {i['copytree']['wall_s']:>7.3f}   "
            f"({i['copytree']['files']} files, {i['copytree']['bytes'] / MB:.1f} MB)"
        )
        lines.append(
            f"  {'tarfile: source/ from make_archive':34} {i['tar_extract']['wall_s']:>7.3f}   "
            "(one pass over its course archive)"
        )
        steps = ", ".join(f"{name} {sec:.2f}" for name, sec in z["steps_s"].items())
        lines.append(f"  reset {z['wall_s']:.2f} s ({z['state']}): {steps}")
        failed = [
            f"{part}.{name}"
            for part in ("backup", "import", "reset")
            for name, ok in r[part]["checks"].items()
            if not ok
        ]
        lines.append(f"  checks: {'all passed' if not failed else 'FAILED ' + ', '.join(failed)}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time Kore's course backup, reset and import on generated nbgrader "
        "courses against plain shutil/tarfile baselines on the same files."
    )
    p.add_argument(
        "--sizes",
        default="50x5,200x10",
        help="course sizes, students x assignments, comma-separated (default 50x5,200x10)",
    )
    p.add_argument("--notebooks", type=int, default=1, help="notebooks per assignment (default 1)")
    p.add_argument(
        "--kb",
        default="50-200",
        help="size range of a notebook in KB, each (assignment, notebook) drawn from it "
        "(default 50-200)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: one 3x2 course, 20-40 KB notebooks (flags given still win)",
    )
    add_output_arguments(p, "the courses, archives and copies", "a check failed")
    args = parse_sizes(p, argv, QUICK)
    try:
        args.sizes = parse_size_list(args.sizes)
        args.kb = parse_kb_range(args.kb)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    if not 1 <= args.notebooks <= 20:
        p.error("--notebooks must be 1 to 20")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    root = work_directory(args.workdir, "ananke-bench-course-manage-")
    started = time.monotonic()
    report = report_header("course-manage", args, "nbgrader")
    report["parameters"]["sizes"] = [s.label for s in args.sizes]
    report["parameters"]["kb"] = list(args.kb)
    report["running_as_root"] = os.geteuid() == 0
    try:
        report["sizes"] = asyncio.run(run(args, root))
    except (OSError, RuntimeError) as exc:
        print(f"benchmark aborted: {exc} (files in {root})", file=sys.stderr)
        return 2
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["all_ok"] = all(r["ok"] for r in report["sizes"].values())
    publish(report, render(report), args)
    problems = [] if report["all_ok"] else ["a check failed: see 'checks' in the output"]
    return finish(args, root, problems, "files")


if __name__ == "__main__":
    sys.exit(main())
