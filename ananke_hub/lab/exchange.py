"""nbgrader's exchange, made private: students cannot see, read or change each other's work.

nbgrader's default exchange (0.9.6, ``nbgrader/exchange/default/``) hides submissions
only by name: ``inbound`` cannot be listed, but every submission is a world-writable
directory (0777) of world-readable files (0644), so whoever learns a name (timestamps,
a shoulder, a shared screen) can read, change or delete another student's work, and
read its ``submission_secret.txt``, which names the student's feedback file. The
original Ananke had exactly this (its issue 27).

Ananke's exchange plugins (set in ``lab/jupyter/nbgrader_config.py`` through
``ExchangeFactory``) keep nbgrader's layout and change who may do what:

============================  ======  =====================================================
path                          mode    who may do what
============================  ======  =====================================================
exchange root                 0755    owned by the hub, which creates each course's
                                      directories; nobody else can add a course there
``<course>``, ``outbound``    0755    owned by the grader account: it releases; all read
``<course>/inbound``          3733    grader's; students may add entries (wx) but not list
                                      (no r). setgid: new entries get the grader's group.
                                      sticky: only an entry's owner, the grader or root may
                                      rename or delete it, so nobody removes or replaces
                                      another student's submission
a submission (directory)      0770    the student's, group = the grader's group: the
                                      grader reads (collects) and may clean up; others
                                      cannot even enter it
files of a submission         0640    student writes, grader reads, others nothing
``<course>/feedback``         0711    grader writes; students fetch by name only; a
                                      feedback file is named by a hash of the submission's
                                      secret (512 random bits), which only the student and
                                      the grader can read now
============================  ======  =====================================================

The grader account is a dynamic user whose group is its own (gid = uid), so only its
processes are in the group of the submissions. Neither collecting as root (graders
are dynamic users, the formgrader runs as the grader) nor ACLs (not on every file
system, no Python API) are needed.

Submissions and collected files are copied without following links: a link in a
submission could otherwise make the grader's own files (the solutions in ``source/``)
part of a student's submission and its feedback.

Collect checks who made a submission (``ExchangeCollect.check_owner``): the owner uid
of the submission must belong to the student named in it. nbgrader asks the password
database, where a dynamic user only exists while its lab runs; we first look in
``.ananke/student_uids.json`` in the course directory, where the hub records the uid of
each student's home at launch (:func:`ananke_hub.courses.nbgrader_setup.enrol_students`).
A submission whose owner is recorded for another student (and not for the one it
names) is not collected; other mismatches are logged as nbgrader does.
"""

import errno
import glob
import json
import os
import re
import secrets
import shutil
import stat
from collections import defaultdict

from nbgrader.exchange import default
from nbgrader.utils import check_mode, ignore_patterns

from ananke_hub import fsutil

try:
    import pwd
except ImportError:  # pragma: no cover - not on Windows, where the exchange does not work
    pwd = None

# Modes and the student uids file: in .exchange_layout, which the hub imports too
# (without nbgrader).
from .exchange_layout import (  # noqa: E402, F401 (re-exported)
    COLLECTED_DIR_MODE,
    COLLECTED_FILE_MODE,
    COURSE_MODE,
    EXCHANGE_ROOT_MODE,
    FEEDBACK_MODE,
    INBOUND_MODE,
    OUTBOUND_MODE,
    STUDENT_UIDS_FILE,
    SUBMISSION_DIR_MODE,
    SUBMISSION_FILE_MODE,
)

# Grader accounts are "grader-" + a course id (ananke_hub.courses.layout.grader_username);
# repeated here so that nbgrader's processes need not import the hub's modules.
GRADER_ACCOUNT_RE = re.compile(r"^grader-c-[0-9a-f]{16}$")


def lab_student_id(environ=os.environ) -> str | None:
    """The nbgrader student id of a lab: its hub user name, none for grader accounts.

    nbgrader would otherwise take the OS user name (``utils.get_username``), which for a
    dynamic user is only right with ``User=`` set, and only while the unit runs. A grader
    account keeps nbgrader's default ("*": every student) for collect and autograde.
    """
    user = environ.get("JUPYTERHUB_USER", "")
    if not user or GRADER_ACCOUNT_RE.fullmatch(user):
        return None
    return user


# -- copying without following links -----------------------------------------------------------


def copy_tree(src: str, dest: str, *, ignore=None, log=None, follow_top: bool = False) -> None:
    """Copy the contents of directory ``src`` into the existing directory ``dest``.

    Nothing below ``src`` is followed (:func:`ananke_hub.fsutil.copy_into`): links and
    special files are skipped (with a warning). ``ignore`` is a
    :func:`shutil.copytree`-style callable. New directories are 0700 and files 0600
    until the caller sets their final modes.
    """
    report = fsutil.copy_into(src, dest, ignore=ignore, follow_top=follow_top)
    if log is not None:
        for rel in report.skipped:
            log.warning(
                "Skipping %s: links and special files are not copied", os.path.join(src, rel)
            )


def _write_new(directory: str, name: str, text: str) -> None:
    path = os.path.join(directory, name)
    try:
        os.unlink(path)  # a same-named file of the assignment is replaced, as nbgrader does
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# -- the plugins --------------------------------------------------------------------------------


class PrivateExchangeMixin:
    """What every plugin of the private exchange does differently from nbgrader's default."""

    def ensure_root(self):
        # nbgrader wants the root world-writable (0777) and makes it so on release. Ours is
        # the hub's (0755): the hub creates each course's directories, so no student can
        # create (and own) the directory of a course before it exists.
        if not os.path.isdir(self.root) or not os.access(self.root, os.X_OK):
            self.fail(
                f"The nbgrader exchange {self.root} does not exist or cannot be entered. "
                "Ask the hub's administrators to create it (see ANANKE_EXCHANGE_ROOT)."
            )

    def ensure_directory(self, path, mode):
        # nbgrader compares user *names* (pwd), which fails for a dynamic user whose name
        # cannot be resolved; the uid is what counts.
        if not os.path.isdir(path):
            try:
                os.mkdir(path)
                os.chmod(path, mode)
            except PermissionError:
                self.fail(
                    f"Cannot create {path}. The hub creates a course's exchange directories: "
                    "stop this server and start it again from the hub's home page."
                )
            return
        if self.coursedir.groupshared:
            return
        owner = os.stat(path).st_uid
        if owner != os.geteuid():
            self.fail(
                f"The exchange directory {path} belongs to uid {owner}, not to this grader "
                f"account (uid {os.geteuid()}). Stop this server and start it again from the "
                "hub's home page: the hub gives the course's exchange directories to the "
                "grader account when its server starts."
            )


class Exchange(PrivateExchangeMixin, default.Exchange):
    pass


class ExchangeFetchAssignment(PrivateExchangeMixin, default.ExchangeFetchAssignment):
    pass


class ExchangeFetchFeedback(PrivateExchangeMixin, default.ExchangeFetchFeedback):
    pass


class ExchangeList(PrivateExchangeMixin, default.ExchangeList):
    pass


class ExchangeReleaseFeedback(PrivateExchangeMixin, default.ExchangeReleaseFeedback):
    pass


class ExchangeReleaseAssignment(PrivateExchangeMixin, default.ExchangeReleaseAssignment):
    def init_dest(self):
        super().init_dest()
        # nbgrader creates inbound 2733; add the sticky bit if we own it (INBOUND_MODE).
        st = os.stat(self.inbound_path)
        if (
            not self.coursedir.groupshared
            and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) != INBOUND_MODE
        ):
            os.chmod(self.inbound_path, INBOUND_MODE)


class ExchangeSubmit(PrivateExchangeMixin, default.ExchangeSubmit):
    """Submissions readable by the student and the course's grader account only."""

    def _ignore(self):
        return ignore_patterns(
            exclude=self.coursedir.ignore,
            include=self.coursedir.include,
            max_file_size=self.coursedir.max_file_size,
            log=self.log,
        )

    def copy_files(self):
        self.init_release()
        dest_path = os.path.join(self.inbound_path, self.assignment_filename)
        if self.add_random_string:
            cache_path = os.path.join(self.cache_path, self.assignment_filename.rsplit("+", 1)[0])
        else:
            cache_path = os.path.join(self.cache_path, self.assignment_filename)
        self.log.info("Source: %s", self.src_path)
        self.log.info("Destination: %s", dest_path)
        self.check_filename_diff()
        size, limit = self.get_size(self.src_path), 1000 * self.coursedir.max_dir_size
        if size > limit:
            self.fail(f"The assignment is too big to submit: {size} bytes, at most {limit}.")
        submission_secret = secrets.token_hex(64)

        # Made 0700 inside the setgid inbound (so it and all it holds get the grader's
        # group), filled, and only then opened to the group: never readable by others.
        os.mkdir(dest_path, 0o700)
        try:
            copy_tree(
                self.src_path, dest_path, ignore=self._ignore(), log=self.log, follow_top=True
            )
            _write_new(dest_path, "timestamp.txt", self.timestamp)
            _write_new(dest_path, "submission_secret.txt", submission_secret)
            fsutil.set_tree_modes(dest_path, SUBMISSION_DIR_MODE, SUBMISSION_FILE_MODE)
        except BaseException:
            shutil.rmtree(dest_path, ignore_errors=True)
            raise

        # The student's own copy in their home, as nbgrader keeps it (assignment list,
        # feedback lookup).
        os.makedirs(self.cache_path, exist_ok=True)
        self.do_copy(self.src_path, cache_path)
        _write_new(cache_path, "timestamp.txt", self.timestamp)
        _write_new(cache_path, "submission_secret.txt", submission_secret)

        self.log.info(
            "Submitted as: %s %s %s",
            self.coursedir.course_id,
            self.coursedir.assignment_id,
            self.timestamp,
        )


class ExchangeCollect(PrivateExchangeMixin, default.ExchangeCollect):
    """Collect authentic submissions only, without following links in them."""

    def _recorded_uids(self) -> dict[str, set[int]]:
        path = os.path.join(self.coursedir.root, STUDENT_UIDS_FILE)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.log.warning(
                "Cannot read %s (%s): owners of submissions are checked by name only", path, exc
            )
            return {}
        students = data.get("students", {}) if isinstance(data, dict) else {}
        return {
            str(name): {uid for uid in uids if isinstance(uid, int)}
            for name, uids in students.items()
            if isinstance(uids, list)
        }

    def _is_authentic(self, path: str, student_id: str, recorded: dict[str, set[int]]) -> bool:
        """False if the submission at ``path`` must not be collected."""
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            self.log.warning("%s is not a directory (a link?); not collected", path)
            return False
        if not self.check_owner:
            return True
        uid = st.st_uid
        if uid in recorded.get(student_id, ()):
            return True
        if uid == os.geteuid():
            return True  # every lab runs as one account (local spawner): nothing to tell apart
        others = sorted(
            name for name, uids in recorded.items() if uid in uids and name != student_id
        )
        if others and recorded.get(student_id):
            self.log.warning(
                "%s claims to be submitted by %s but belongs to uid %s of %s; cheating "
                "attempt? Not collected.",
                path,
                student_id,
                uid,
                others[0],
            )
            return False
        name = None
        if pwd is not None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = None
        if name == student_id:
            return True
        if name is not None or others:
            self.log.warning(
                "%s claims to be submitted by %s but is owned by %s; cheating attempt? "
                "Collected anyway (the hub has no uid on record for %s).",
                path,
                student_id,
                name or f"uid {uid} of {others[0]}",
                student_id,
            )
            return True
        self.log.info(
            "%s: owner uid %s is not known (lab not running, uid not recorded yet); "
            "the submitter cannot be checked",
            path,
            uid,
        )
        return True

    def init_src(self):
        if self.coursedir.course_id == "":
            self.fail("No course id specified. Re-run with --course flag.")
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.inbound_path = os.path.join(self.course_path, "inbound")
        if not os.path.isdir(self.inbound_path):
            self.fail(f"Course not found: {self.inbound_path}")
        if not check_mode(self.inbound_path, read=True, execute=True):
            self.fail(f"You don't have read permissions for the directory: {self.inbound_path}")
        student_id = self.coursedir.student_id or "*"
        pattern = os.path.join(self.inbound_path, f"{student_id}+{self.coursedir.assignment_id}+*")
        recorded = self._recorded_uids()
        by_student = defaultdict(list)
        for path in glob.glob(pattern):
            record = self._path_to_record(path)
            if self._is_authentic(path, record["username"], recorded):
                by_student[record["username"]].append(record)

        from nbgrader.api import Gradebook, MissingEntry

        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                self.duedate = gb.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                self.duedate = None
        self.src_records = []
        for records in by_student.values():
            newest_first = self._sort_by_timestamp(records)
            chosen = newest_first[0]
            if self.before_duedate and self.duedate is not None:
                on_time = [r for r in newest_first if r["timestamp"] <= self.duedate]
                chosen = on_time[0] if on_time else chosen
            self.src_records.append(chosen)

    def copy_files(self):
        # The owner check was made in init_src, against our records as well.
        check_owner, self.check_owner = self.check_owner, False
        try:
            super().copy_files()
        finally:
            self.check_owner = check_owner

    def do_copy(self, src, dest):
        size, limit = self.get_size(src), 1000 * self.coursedir.max_dir_size
        if size > limit:
            raise RuntimeError(
                f"Directory size is too big. Size is {size}, maximum size is {limit}"
            )
        os.mkdir(dest, 0o700)
        ignore = ignore_patterns(
            exclude=self.coursedir.ignore,
            include=self.coursedir.include,
            max_file_size=self.coursedir.max_file_size,
            log=self.log,
        )
        try:
            copy_tree(src, dest, ignore=ignore, log=self.log)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            # The student replaced their submission by a link after it was checked.
            shutil.rmtree(dest, ignore_errors=True)
            self.log.warning("%s is no longer a directory; not collected", src)
            return
        fsutil.set_tree_modes(dest, COLLECTED_DIR_MODE, COLLECTED_FILE_MODE)


#: ExchangeFactory settings of the global nbgrader config (trait name -> class).
EXCHANGE_PLUGINS = {
    "exchange": Exchange,
    "fetch_assignment": ExchangeFetchAssignment,
    "fetch_feedback": ExchangeFetchFeedback,
    "release_assignment": ExchangeReleaseAssignment,
    "release_feedback": ExchangeReleaseFeedback,
    "list": ExchangeList,
    "submit": ExchangeSubmit,
    "collect": ExchangeCollect,
}
