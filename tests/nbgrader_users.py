"""Run nbgrader as separate Unix users, the way Ananke's labs run it.

Used by the exchange privacy and round-trip tests. As root (CI) every account is its
own uid (no /etc/passwd entries: the student id is JUPYTERHUB_USER, see the shipped
nbgrader_config.py); otherwise every account is the current user, which still runs the
whole nbgrader round trip but proves nothing about permissions.

Each account's commands run in one Python process (this file is also the driver
script): nbgrader's command line app, in-process, once per command, as nbgrader's own
tests do. That keeps a test module within a minute on a slow machine.

Course membership: the labs' config asks the hub (JupyterHubAuthPlugin); there is no hub
here, so a config directory put before Ananke's on JUPYTER_CONFIG_PATH switches to
nbgrader's NoAuthPlugin. Everything else is the shipped config.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB_CONFIG = REPO / "ananke_hub" / "lab" / "jupyter"
COURSE_ID = "c-00000000c0ffee00"
ASSIGNMENT = "ps1"

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOT_ROOT_REASON = (
    "needs root to run nbgrader as separate uids (CI runs the tests as root); "
    "run `sudo .venv/bin/python -m pytest tests/test_exchange_privacy.py`"
)

SOLUTION_CELL = """def answer():
    ### BEGIN SOLUTION
    return 42
    ### END SOLUTION"""
TEST_CELL = """assert answer() == 42
### BEGIN HIDDEN TESTS
assert answer() + 0 == 42, "hidden test"
### END HIDDEN TESTS"""


def assignment_notebook() -> str:
    """A notebook with one solution cell and one autograded test cell (1 point)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    meta = {"schema_version": 3, "task": False}
    nb.cells = [
        nbformat.v4.new_code_cell(
            SOLUTION_CELL,
            metadata={
                "nbgrader": {
                    **meta,
                    "grade": False,
                    "solution": True,
                    "locked": False,
                    "grade_id": "answer",
                }
            },
        ),
        nbformat.v4.new_code_cell(
            TEST_CELL,
            metadata={
                "nbgrader": {
                    **meta,
                    "grade": True,
                    "solution": False,
                    "locked": True,
                    "points": 1,
                    "grade_id": "test_answer",
                }
            },
        ),
    ]
    return nbformat.writes(nb)


def answered(notebook_text: str, value: int) -> str:
    """A student's copy of the released notebook with ``return value`` as the answer."""
    marker = "raise NotImplementedError()"
    assert marker in notebook_text, "the released notebook has no solution stub"
    return notebook_text.replace(marker, f"return {value}")


@dataclass(frozen=True)
class Account:
    name: str  # hub user name = nbgrader student id
    uid: int
    home: Path


def _same_version(python: str, uid: int, env: dict) -> bool:
    want = "Python {}.{}.".format(*sys.version_info[:2])
    try:
        out = subprocess.run(
            [python, "-V"],
            user=uid,
            group=uid,
            extra_groups=[],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.startswith(want)


def _linked_interpreter(dest: Path) -> tuple[str, dict]:
    """Hard links of this environment's base interpreter (stdlib, no site-packages) in dest."""
    version = "python{}.{}".format(*sys.version_info[:2])
    exe = Path(os.path.realpath(sys.executable))
    base = Path(sys.base_prefix)
    (dest / "bin").mkdir(parents=True)
    (dest / "lib").mkdir()
    os.link(exe, dest / "bin" / exe.name)
    for lib in (base / "lib").glob("libpython*"):  # a shared libpython, if any
        os.link(lib, dest / "lib" / lib.name, follow_symlinks=False)
    shutil.copytree(
        base / "lib" / version,
        dest / "lib" / version,
        symlinks=True,
        copy_function=os.link,
        ignore=shutil.ignore_patterns("site-packages", "test", "idlelib", "tkinter", "turtledemo"),
    )
    # The venv's packages and this repository; nbconvert's templates and the kernel spec
    # live in the venv's share/jupyter.
    paths = dict.fromkeys(
        [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(REPO)]
    )
    return str(dest / "bin" / exe.name), {
        "PYTHONPATH": os.pathsep.join(paths),
        "JUPYTER_PATH": os.path.join(sys.prefix, "share", "jupyter"),
        "LD_LIBRARY_PATH": str(dest / "lib"),
    }


def lab_python(uid: int, scratch: Path) -> tuple[str, dict]:
    """An interpreter other uids can run with this environment's packages, and its env.

    The venv's own interpreter when other users can execute it. A venv made from a Python
    under /root (0700) cannot be: then its base interpreter is hard-linked (no data is
    copied) into ``scratch``, which they can reach, with the venv's packages on PYTHONPATH.
    """
    if not IS_ROOT or _same_version(sys.executable, uid, {}):
        return sys.executable, {}
    try:
        python, env = _linked_interpreter(scratch / "python")
    except OSError as exc:
        import pytest

        pytest.skip(f"{sys.executable} cannot be run by uid {uid} and linking it failed: {exc}")
    if not _same_version(python, uid, env):
        import pytest

        pytest.skip(f"neither {sys.executable} nor its linked copy {python} runs as uid {uid}")
    return python, env


class Classroom:
    """A course on disk with a grader account and students, each a separate uid as root."""

    def __init__(self, base: Path, *, grader_uid: int = 62003):
        from ananke_hub.courses.layout import CourseLayout, grader_username

        self.base = base
        base.chmod(0o755)  # other uids must reach their homes inside it
        homes = base / "homes"
        homes.mkdir(mode=0o755)
        homes.chmod(0o755)  # in production /var/lib/private (0700): systemd maps homes in
        self.layout = CourseLayout(homes_root=str(homes), exchange_root=str(base / "exchange"))
        self.paths = self.layout.course(COURSE_ID)
        uid = grader_uid if IS_ROOT else os.geteuid()
        self.grader = Account(grader_username(COURSE_ID), uid, self.paths.home)
        self.students: dict[str, Account] = {}
        self.python, self.python_env = lab_python(uid, base)
        config = base / "test-config"
        config.mkdir(mode=0o755)
        (config / "nbgrader_config.py").write_text(
            "c = get_config()  # noqa\n"
            "# No hub in this test: course membership is not checked.\n"
            'c.Authenticator.plugin_class = "nbgrader.auth.NoAuthPlugin"\n'
        )
        self.config_path = os.pathsep.join([str(config), str(LAB_CONFIG)])
        # More environment for the grader account's commands (what c.Spawner.environment
        # would give its lab).
        self.grader_env: dict[str, str] = {}

    @classmethod
    def temporary(cls, **kwargs) -> "Classroom":
        # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, other uids cannot enter it.
        return cls(Path(tempfile.mkdtemp(prefix="ananke-classroom-")), **kwargs)

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    # -- accounts, as the hub and systemd make them ---------------------------------------------

    def give(self, home: Path, uid: int) -> None:
        """What systemd does at unit start: the state directory, recursively, to the user."""
        if not IS_ROOT:
            return
        for dirpath, dirnames, filenames in os.walk(home):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
        os.chown(home, uid, uid)

    def create_course(self, settings=None) -> None:
        from ananke_hub.courses import nbgrader_setup
        from ananke_hub.courses.settings import CourseSettings

        nbgrader_setup.ensure_course_files(self.paths, COURSE_ID, settings or CourseSettings())
        # The grader's server starts: systemd hands the home over, then the hub re-syncs
        # the exchange directories to the grader's uid.
        self.give(self.paths.home, self.grader.uid)
        nbgrader_setup.sync_exchange_owner(self.paths)

    def add_student(self, name: str, uid: int) -> Account:
        from ananke_hub import fsutil

        home = self.layout.home_of(name)
        fsutil.ensure_home(home)
        account = Account(name, uid if IS_ROOT else os.geteuid(), home)
        self.give(home, account.uid)
        self.students[name] = account
        return account

    def enrol(self, *accounts: Account) -> None:
        from ananke_hub.courses import nbgrader_setup

        nbgrader_setup.enrol_students(
            self.paths,
            [
                nbgrader_setup.StudentRecord(
                    a.name, f"sub-{a.name}", a.name.title(), "Student", f"{a.name}@example.edu"
                )
                for a in accounts
            ],
        )

    def write_source(self) -> None:
        from ananke_hub import fsutil

        fsutil.write_file_in_home(
            self.paths.home,
            f"source/{ASSIGNMENT}/{ASSIGNMENT}.ipynb",
            assignment_notebook().encode(),
        )

    def answer(self, student: Account, value: int) -> None:
        """The student edits the fetched notebook (the hub's safe writer keeps the owner)."""
        from ananke_hub import fsutil

        rel = f"{COURSE_ID}/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
        text = fsutil.read_file_in_home(student.home, rel).decode()
        fsutil.write_file_in_home(student.home, rel, answered(text, value).encode())

    # -- running things as an account -----------------------------------------------------------

    def env(self, account: Account) -> dict:
        env = {
            "HOME": str(account.home),
            "JUPYTERHUB_USER": account.name,
            "JUPYTER_CONFIG_PATH": self.config_path,
            "ANANKE_EXCHANGE_ROOT": self.layout.exchange_root,
            "PATH": os.pathsep.join(
                [os.path.dirname(self.python), "/usr/local/bin", "/usr/bin", "/bin"]
            ),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update(self.python_env)
        # The lab's data path as the spawner gives it (a grader account's: the autograding
        # sandbox's kernel spec, which its nbgrader config names), before the venv's.
        from ananke_hub.spawner import lab_jupyter_path

        kind = "grader" if account == self.grader else "learner"
        env["JUPYTER_PATH"] = os.pathsep.join(
            [lab_jupyter_path(kind), *filter(None, [self.python_env.get("JUPYTER_PATH")])]
        )
        if account == self.grader:
            env.update(self.grader_env)
        return env

    def start(self, account: Account, argv: list[str]) -> subprocess.Popen:
        ids = {"user": account.uid, "group": account.uid, "extra_groups": []} if IS_ROOT else {}
        return subprocess.Popen(
            [self.python, *argv],
            cwd=account.home,
            env=self.env(account),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **ids,
        )

    def nbgrader(self, account: Account, *commands: list[str]) -> subprocess.Popen:
        """Start ``nbgrader <command>`` for each command, in order, as ``account``."""
        return self.start(account, [__file__, json.dumps([list(c) for c in commands])])

    def script(self, account: Account, source: str, *args: str) -> subprocess.Popen:
        path = self.base / f"script-{len(list(self.base.glob('script-*')))}.py"
        path.write_text(source)
        path.chmod(0o644)
        return self.start(account, [str(path), *args])


def finish(*procs: subprocess.Popen, check: bool = True) -> list[str]:
    """Wait for processes started together; their output (an AssertionError if one failed)."""
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if check:
            assert proc.returncode == 0, f"{proc.args[1:]} failed ({proc.returncode}):\n{out}"
        outputs.append(out)
    return outputs


def _drive(commands: list[list[str]]) -> int:
    """Driver: run nbgrader's app in this process once per command; stop at a failure."""
    from jupyter_core.application import NoStart
    from nbgrader.apps import NbGraderApp

    for argv in commands:
        print(f"$ nbgrader {' '.join(argv)}", flush=True)
        app = NbGraderApp.instance()
        code = 0
        try:
            app.initialize(argv)
            app.start()
        except NoStart:  # a sub-command ran (jupyter's way of saying "done")
            pass
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            app.reset()
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(_drive(json.loads(sys.argv[1])))
