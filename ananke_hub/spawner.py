"""Spawners: systemd dynamic users in production, local processes where PID 1 is not systemd.

``AnankeSystemdSpawner`` (entry point ``ananke-systemd``) runs each lab as a transient
systemd unit under a dynamic user named after the hub user, with a persistent home, a
read-only root file system except the nbgrader exchange, and the memory and CPU limits
of ``c.Spawner.mem_limit`` / ``c.Spawner.cpu_limit``. It also fixes three upstream
systemdspawner problems: the dangling ``/run/<unit>`` link (#76), list values in
``unit_extra_properties``, and named servers sharing one unit (#73).

``AnankeLocalSpawner`` (entry point ``ananke-local``) runs labs as plain processes of the
hub's user, for laptops, CI and the demo: no isolation at all.
"""

import asyncio
import json
import os
import pwd
import re
import shutil
import time
from pathlib import Path

from jupyterhub.spawner import SimpleLocalProcessSpawner
from jupyterhub.utils import AnyTimeoutError, url_path_join, wait_for_http_server
from systemdspawner import SystemdSpawner, systemd
from traitlets import Bool, Dict, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .courses.layout import CourseLayout, course_of_grader
from .courses.provision import staff_group
from .courses.registry import CourseRegistry
from .paths import StateLayout, kore_port, systemd_is_pid1  # noqa: F401 (systemd_is_pid1: re-exported)
from .persist import ensure_private_dir
from .roles import Role

#: Jupyter config every lab reads (nbgrader's exchange and course settings, Ananke's
#: server extension): put first on JUPYTER_CONFIG_PATH.
LAB_CONFIG_DIR = Path(__file__).parent / "lab" / "jupyter"
#: Per kind of lab (lab_kind), the JupyterLab plugins of nbgrader it hides, and data
#: files only that kind has (the grader account's: the autograding sandbox's kernel
#: spec): put on JUPYTER_CONFIG_PATH and JUPYTER_PATH after LAB_CONFIG_DIR (see the
#: README.md there).
LAB_KINDS_DIR = Path(__file__).parent / "lab" / "jupyter_lab_kinds"
#: Jupyter config of jupyter-fs (second file browsers, `shared_folders`): put first on
#: JUPYTER_CONFIG_PATH of labs only when an admin configured a shared folder, so that
#: labs without one neither load jupyter-fs nor show its empty panel.
JUPYTERFS_CONFIG_DIR = Path(__file__).parent / "lab" / "jupyter_features" / "jupyterfs"
#: The lab-side config (jupyter_server_config.py there) reads the folders from here.
SHARED_FOLDERS_ENV = "ANANKE_SHARED_FOLDERS"


def lab_kind(username: str, group_names) -> str:
    """``grader`` (a course's grader account), ``staff`` (teaches a course: in a
    ``formgrade-<course>`` group) or ``learner``."""
    if course_of_grader(username) is not None:
        return "grader"
    if any(name.startswith(staff_group("")) for name in group_names):
        return "staff"
    return "learner"


def lab_jupyter_path(kind: str) -> str:
    """JUPYTER_PATH (Jupyter's data directories) of a lab of this kind: the shipped
    prebuilt extensions (the Kore menu) for every lab; the "ananke-sandbox" kernel spec
    only for a grader account's lab, where autograding and the formgrader's Validate run.
    Nowhere else: in a student's or an instructor's launcher and kernel picker it would
    offer a confusing, limited kernel. (Not in ``<prefix>/share/jupyter`` either, which
    every Jupyter process of the installation reads.)"""
    return os.pathsep.join([str(LAB_CONFIG_DIR), str(LAB_KINDS_DIR / kind)])


#: Seconds a grader server trusts the hub's answer about a login before asking again
#: (JupyterHub's HubAuth.cache_max_age, 300 by default; 0 would mean forever). Staff
#: the LMS removed lose their tokens (ananke_hub/auth/access.py): the grader server must
#: notice within a second, not keep their formgrader open for five minutes.
GRADER_AUTH_CACHE_SECONDS = 1

# systemd.unit(5), "Description": a unit name prefix consists of ASCII letters, digits,
# ":", "-", "_", "." and "\". We also refuse "\" (escapes) and anything that could make
# "/run/<unit>" leave /run.
_UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9:_.-]+$")
_UNIT_NAME_MAX = 250  # 256 including ".service"

# systemd's range for DynamicUser= uids (systemd.exec(5), "DynamicUser="). With User=NAME
# a static account of that name wins over a dynamic one: a hub user named "root" or
# "uucp" would run its lab as that account.
DYNAMIC_UID_RANGE = range(61184, 65520)


def static_account_uid(name: str) -> int | None:
    """The uid of an existing account ``name`` outside systemd's dynamic range, or None."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
    return None if uid in DYNAMIC_UID_RANGE else uid


#: The switch that lets the local spawner run labs as root (the demo and the tests).
ALLOW_ROOT_SETTING = "c.AnankeLocalSpawner.allow_root"

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def root_labs_refusal() -> str:
    """Why labs are not started as root, and what an admin can do instead."""
    return (
        "This hub runs as root and PID 1 is not systemd, so its labs would be local "
        "processes running as root: a student's notebook would be root on this machine. "
        "Ananke refuses to start them. Run the hub on a systemd host (labs as dynamic "
        "users), or in Ananke's container image (docs/admin/containers.md), or run it "
        "as an unprivileged user. For a single-user demo on this machine only, set "
        f"{ALLOW_ROOT_SETTING} = True in a fragment with the hub bound to 127.0.0.1 "
        "(c.JupyterHub.bind_url)."
    )


def run_root() -> Path:
    """The directory holding units' RuntimeDirectory (``/run``).

    It is systemdspawner's own constant, where it also writes each unit's environment
    file, so that the link we clean up and the directory it creates are the same path.
    Tests point ``systemdspawner.systemd.RUN_ROOT`` at a temporary directory.
    """
    return Path(systemd.RUN_ROOT)


def remove_dangling_runtime_link(root: Path, unit_name: str) -> bool:
    """Remove ``<root>/<unit_name>`` if it is a symlink to nothing; True if removed.

    With DynamicUser=yes systemd keeps a unit's RuntimeDirectory in ``/run/private/<unit>``
    and points ``/run/<unit>`` at it (systemd.exec(5), "RuntimeDirectory=", and
    "DynamicUser="). When the unit stops, the directory goes but the link stays; the next
    spawn then fails in ``os.makedirs`` with FileExistsError (systemdspawner issue 76).

    Only a dangling link is removed: the link itself, never what it points at (os.unlink
    does not follow links). A live link and a real directory are left alone.
    """
    if not _UNIT_NAME_RE.fullmatch(unit_name):
        raise ValueError(f"not a valid systemd unit name: {unit_name!r}")
    path = Path(root) / unit_name
    if path.is_symlink() and not path.exists():
        try:
            path.unlink()
        except FileNotFoundError:
            return False  # someone else removed it in the meantime
        return True
    return False


def _systemd_property_value(name: str, value) -> str:
    """One ``--property=`` value as systemd expects it on the command line."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        # systemd's list-valued settings (ReadWritePaths=, Environment=, ...) take one
        # space-separated string; upstream crashes on a list (AttributeError on .format).
        items = [_systemd_property_value(name, item) for item in value]
        return " ".join(item for item in items if item)
    raise TraitError(
        f"AnankeSystemdSpawner.unit_extra_properties[{name!r}] must be a string or a "
        f"list of strings, got {type(value).__name__} {value!r}."
    )


class StartQueue:
    """Labs starting at the same time across all users of the hub: at most ``limit`` at
    once, the others wait in the order they asked.

    A lab's start is CPU-bound (Python imports, JupyterLab's extensions: seconds of CPU
    each); a class clicking within a minute on a small machine otherwise starts dozens at
    once, which takes as long in total but starves the hub's event loop and every lab
    misses its timeout together. JupyterHub's own ``concurrent_spawn_limit`` answers 429
    to whoever is over the limit: a student would see an error and have to click again.
    """

    def __init__(self):
        self.active = 0
        self._waiting: list[tuple[object, asyncio.Future]] = []
        self._recent: list[float] = []  # seconds the last starts took, for estimates

    def position(self, key) -> int | None:
        """1 for the next one to start, None when ``key`` is not waiting."""
        for i, (k, _) in enumerate(self._waiting):
            if k is key:
                return i + 1
        return None

    def estimate_s(self, position: int, limit: int) -> float | None:
        """Seconds until the one at ``position`` starts, from the recent starts' times."""
        if not self._recent or limit <= 0:
            return None
        return -(-position // limit) * sum(self._recent) / len(self._recent)

    async def acquire(self, key, limit: int) -> None:
        if limit <= 0 or (self.active < limit and not self._waiting):
            self.active += 1
            return
        entry = (key, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif entry[1].done() and not entry[1].cancelled():
                self.release(limit)  # given a slot, but cancelled before taking it
            raise

    def release(self, limit: int, took_s: float | None = None) -> None:
        self.active -= 1
        if took_s is not None:
            self._recent = [*self._recent[-9:], took_s]
        while self._waiting and (limit <= 0 or self.active < limit):
            _, future = self._waiting.pop(0)
            if not future.done():
                self.active += 1
                future.set_result(None)


#: The one queue of the hub process, shared by both spawners.
START_QUEUE = StartQueue()


class LabEnvironment(LoggingConfigurable):
    """What every Ananke lab finds in its environment, whichever spawner starts it."""

    start_queue = START_QUEUE
    #: True from the moment this spawner's start has its slot until the lab answered;
    #: the count of slots it took tells the waiting page one it missed between polls.
    _through_queue = False
    _slots_taken = 0

    concurrent_starts = Integer(
        config=True,
        help="""Labs that may be starting at the same time (0: no limit).

        Further starts wait in a queue, in the order the students clicked; their waiting
        page shows their place and an estimate. A lab holds its place until it answers
        HTTP, so the limit bounds the CPU spent on starting labs and keeps the hub
        responsive when a class clicks at once. The wait counts against
        `Spawner.start_timeout`. Default: the number of CPU cores, at least 2.
        """,
    )

    @default("concurrent_starts")
    def _default_concurrent_starts(self):
        return max(2, os.cpu_count() or 1)

    shared_folders = List(
        Dict(),
        config=True,
        help="""Folders every lab shows in a second file browser (jupyter-fs), e.g.
        ``[{"name": "Course material", "path": "/srv/ananke/material"}]``.

        Each entry has a ``name`` (the browser's title) and an absolute ``path`` on the
        machine the labs run on. Labs see the folder with the lab user's own
        permissions: make it readable and not writable for students (under the systemd
        spawner every path outside a lab's home and the exchange is read-only anyway).
        Needs the ``jupyter-fs`` package in the labs' environment (the ananke-nbgrader
        image has it; ``pip install 'ananke[jupyterfs]'`` elsewhere). Empty (the
        default): no second file browser, jupyter-fs stays off.
        """,
    )

    @validate("shared_folders")
    def _valid_shared_folders(self, proposal):
        folders = proposal["value"]
        names = set()
        for i, folder in enumerate(folders):
            where = f"LabEnvironment.shared_folders[{i}]"
            if set(folder) != {"name", "path"}:
                raise TraitError(
                    f"{where} must have exactly the keys 'name' and 'path', not "
                    f"{sorted(folder)}: e.g. {{'name': 'Course material', 'path': '/srv/material'}}."
                )
            name, path = folder["name"], folder["path"]
            if not isinstance(name, str) or not name.strip() or len(name) > 80:
                raise TraitError(f"{where}: 'name' must be a non-empty text of at most 80 characters.")
            if name in names:
                raise TraitError(f"{where}: the name {name!r} is used twice; give each folder its own.")
            names.add(name)
            if (
                not isinstance(path, str)
                or not os.path.isabs(path)
                or ".." in Path(path).parts
                or "\0" in path
            ):
                raise TraitError(
                    f"{where}: 'path' must be an absolute path without '..', not {path!r}."
                )
        return folders

    def shared_folders_environment(self) -> dict:
        """The jupyter-fs config dir and the folders, for labs when folders are set."""
        if not self.shared_folders:
            return {}
        folders = [{"name": f["name"], "path": os.path.normpath(f["path"])} for f in self.shared_folders]
        return {SHARED_FOLDERS_ENV: json.dumps(folders)}

    async def queued_start(self, start):
        """Run the spawner's own ``start`` in the start queue; keep the slot until the lab
        answers HTTP (at most ``http_timeout`` seconds), so that the next start waits."""
        queue, limit = self.start_queue, self.concurrent_starts
        if limit <= 0:  # no queue: the hub waits for the lab itself (http_timeout)
            self._through_queue, self._slots_taken = True, self._slots_taken + 1
            try:
                return await start()
            finally:
                self._through_queue = False
        asked = time.monotonic()
        await queue.acquire(self, limit)
        self._through_queue, self._slots_taken = True, self._slots_taken + 1
        began = time.monotonic()
        if queue.active >= limit > 0 or began - asked > 0.5:
            self.log.info(
                "user:%s waited %.1f s for a start slot (%d of %d starting)",
                self.user.name,
                began - asked,
                queue.active,
                limit,
            )
        took = None
        try:
            location = await start()
            await self._wait_for_lab(location)
            took = time.monotonic() - began
            return location
        finally:
            self._through_queue = False
            queue.release(limit, took)

    async def _wait_for_lab(self, location) -> None:
        if isinstance(location, tuple):
            ip, port = location
            location = f"http://{ip}:{port}"
        # What the hub waits for after start() (User._wait_up): the lab's /api.
        url = url_path_join(location, self.server.base_url, "api")
        try:
            await wait_for_http_server(url, timeout=self.http_timeout)
        except AnyTimeoutError:
            raise TimeoutError(
                f"The lab of {self.user.name} did not answer within {self.http_timeout} s "
                "(Spawner.http_timeout) after its process started."
            ) from None

    async def progress(self):
        """Events for the waiting page: the place in the start queue while waiting."""
        queue, limit = self.start_queue, self.concurrent_starts
        last, taken = None, self._slots_taken
        # The waiting page may ask before the hub's spawn reaches the queue (it opens at
        # once with slow_spawn_timeout 0): not in the queue yet is not "starting" yet.
        # JupyterHub stops this generator when the spawn ends, also one that failed.
        while not self._through_queue and self._slots_taken == taken:
            place = queue.position(self)
            if place is not None and place != last:
                last = place
                estimate = queue.estimate_s(place, limit)
                yield {
                    "progress": 10,
                    "message": f"You are number {place} in the queue: {queue.active} labs "
                    "are starting, yours starts when one of them is ready"
                    + (f" (about {estimate:.0f} s)." if estimate else ".")
                    + " Keep this page open.",
                }
            await asyncio.sleep(0.5)
        yield {"progress": 50, "message": "Your lab is starting. Keep this page open."}

    def lab_environment(self) -> dict:
        layout = CourseLayout(parent=self)
        # jupyter-fs's config, when there are shared folders, comes first: it turns on
        # the jupyter-fs panel the shared config hides (front of the path wins).
        features = [str(JUPYTERFS_CONFIG_DIR)] if self.shared_folders else []
        kind = self.lab_kind()
        return {
            **self.shared_folders_environment(),
            # nbgrader_config.py (exchange, student id = hub user) and our server
            # extension's config come first; the user's own config dirs still follow.
            # Then what this kind of lab shows of nbgrader: no instructor menus for
            # learners, no dead Formgrader entry in an instructor's own lab.
            "JUPYTER_CONFIG_PATH": os.pathsep.join(
                [*features, str(LAB_CONFIG_DIR), str(LAB_KINDS_DIR / kind)]
            ),
            # Data files too: JupyterLab finds the prebuilt extensions we ship (the Kore
            # menu) in <dir>/labextensions, whatever prefix the package was installed in;
            # a grader account's lab also the autograding sandbox's kernel spec.
            "JUPYTER_PATH": lab_jupyter_path(kind),
            "ANANKE_EXCHANGE_ROOT": layout.exchange_root,
        }

    def lab_kind(self) -> str:
        # The hub set the user's groups from their courses at their latest login.
        return lab_kind(self.user.name, [group.name for group in self.user.groups])

    async def after_start(self) -> None:
        """Once a lab started, systemd has handed its dynamic user the home (StateDirectory=)
        and so its uid is known: a grader account gets its course's exchange directories
        (nbgrader's release refuses directories of another uid), and a student's uid is
        recorded in each course they learn in (collect's owner check)."""
        from .courses import nbgrader_setup

        layout = CourseLayout(parent=self)
        course_id = course_of_grader(self.user.name)
        if course_id is not None:
            await asyncio.to_thread(nbgrader_setup.sync_exchange_owner, layout.course(course_id))
            return
        registry = CourseRegistry(parent=self)
        for course, role in await registry.run(registry.memberships, self.user.name):
            if role == str(Role.LEARNER):
                await asyncio.to_thread(
                    nbgrader_setup.record_student_uid, layout.course(course.id), self.user.name
                )

    def get_args(self):
        args = list(super().get_args())
        if course_of_grader(self.user.name) is not None:
            args.append(f"--HubOAuth.cache_max_age={GRADER_AUTH_CACHE_SECONDS}")
        return args

    def get_env(self):
        env = super().get_env()
        env.update(self.lab_environment())
        # The lab's course list asks Kore directly on 127.0.0.1 (not through the proxy).
        port = kore_port(self.config)
        base = env.get("JUPYTERHUB_BASE_URL") or "/"
        env["ANANKE_KORE_URL"] = f"http://127.0.0.1:{port}{base}services/kore/"
        return env


class AnankeSystemdSpawner(LabEnvironment, SystemdSpawner):
    """Each lab a transient systemd unit with a dynamic user named after the hub user."""

    exchange_root = Unicode(
        config=True,
        help="""Directory of nbgrader's exchange, shared by all courses.

        Always writable for labs, whatever `readwrite_paths` says: the rest of the file
        system is read-only for them. It must exist before labs start (systemd refuses to
        start a unit whose ReadWritePaths= does not exist). Defaults to
        `CourseLayout.exchange_root` (set in 40_nbgrader.py).
        """,
    )

    @default("exchange_root")
    def _default_exchange_root(self):
        return CourseLayout(parent=self).exchange_root

    named_server_unit_name_template = Unicode(
        "jupyter-{USERNAME}-{SERVERNAME}",
        config=True,
        help="""Unit name of a user's named server (`unit_name_template` is for the default one).

        {USERNAME}, {USERID} and {SERVERNAME} are expanded. It must contain {SERVERNAME}:
        two servers of one user must not share a unit, or starting the second stops the
        first (systemdspawner issue 73).
        """,
    )

    def __init__(self, *args, **kwargs):
        # Upstream asks `systemctl --version` in __init__ and, without the binary, dies
        # with UnboundLocalError. Say what is wrong instead.
        if shutil.which("systemctl") is None:
            raise RuntimeError(
                "systemctl not found: AnankeSystemdSpawner needs a machine run by systemd. "
                "On a machine without systemd use the local spawner "
                '(c.JupyterHub.spawner_class = "ananke-local").'
            )
        super().__init__(*args, **kwargs)
        # Upstream derived the unit name from unit_name_template alone; we pick the
        # template by server (issue 73) and check the result is a unit name.
        self.unit_name = self._unit_name()

    # -- defaults: what makes a lab an Ananke lab -------------------------------------------

    @default("dynamic_users")
    def _default_dynamic_users(self):
        # DynamicUser=yes: systemd allocates the lab's user when the unit starts and
        # releases it when it stops; no /etc/passwd entries to manage
        # (systemd.exec(5), "DynamicUser="; http://0pointer.net/blog/dynamic-users-with-systemd.html).
        # Upstream then adds StateDirectory={USERNAME}: the home, kept in
        # /var/lib/private/<username> across restarts (systemd.exec(5), "StateDirectory=").
        return True

    @default("unit_extra_properties")
    def _default_unit_extra_properties(self):
        # User=: without it the dynamic user is named after the unit
        # ("jupyter-u123-singleuser"), and nbgrader takes the OS user name as the student
        # id (systemd.exec(5), "User=", "DynamicUser="; systemdspawner issue 96).
        # The name stays {USERNAME} for named servers too: one user, one home.
        return {"User": "{USERNAME}"}

    @default("readonly_paths")
    def _default_readonly_paths(self):
        # The whole file system read-only for labs; only the home (StateDirectory=) and
        # readwrite_paths are writable (systemd.exec(5), "ReadOnlyPaths=").
        return ["/"]

    @default("readwrite_paths")
    def _default_readwrite_paths(self):
        # The exchange, where students submit and instructors release
        # (systemd.exec(5), "ReadWritePaths="). Added at start even if an admin's list
        # leaves it out, see _writable_paths().
        return [self.exchange_root]

    @default("disable_user_sudo")
    def _default_disable_user_sudo(self):
        # NoNewPrivileges=yes: no sudo, no setuid binaries from inside a lab
        # (systemd.exec(5), "NoNewPrivileges="). DynamicUser= implies it anyway.
        return True

    @default("isolate_tmp")
    def _default_isolate_tmp(self):
        # PrivateTmp=yes: a /tmp per lab, so students cannot leave files for each other
        # (systemd.exec(5), "PrivateTmp="). DynamicUser= implies it; we say it explicitly.
        return True

    @default("unit_name_template")
    def _default_unit_name_template(self):
        # The default server's unit. Named servers use named_server_unit_name_template.
        return "jupyter-{USERNAME}"

    # Memory and CPU limits are the inherited Spawner.mem_limit / Spawner.cpu_limit, set in
    # 10_servers.py; upstream maps them to MemoryMax= and CPUQuota=
    # (systemd.resource-control(5), "MemoryMax=", "CPUQuota=").

    # -- validation ----------------------------------------------------------------------------

    @validate("unit_extra_properties")
    def _valid_unit_extra_properties(self, proposal):
        # A new dict each time: upstream expands {USERNAME} in place, which would otherwise
        # write one user's name into a dict shared through the config with every spawner.
        value = {
            str(key): _systemd_property_value(key, item) for key, item in proposal.value.items()
        }
        # An admin who sets other properties keeps the dynamic user's name (see the default).
        value.setdefault("User", "{USERNAME}")
        return value

    @validate("named_server_unit_name_template")
    def _valid_named_server_template(self, proposal):
        if "{SERVERNAME}" not in proposal.value:
            raise TraitError(
                "AnankeSystemdSpawner.named_server_unit_name_template must contain "
                f"{{SERVERNAME}}, got {proposal.value!r}: otherwise a user's second server "
                "stops the first."
            )
        return proposal.value

    # -- names -------------------------------------------------------------------------------

    def _expand_user_vars(self, string):
        """Expand {USERNAME}, {USERID} (upstream's) and {SERVERNAME} (ours) in ``string``."""
        return string.format(
            USERNAME=self.user.name, USERID=self.user.id, SERVERNAME=self.name or ""
        )

    def _unit_name(self) -> str:
        template = self.named_server_unit_name_template if self.name else self.unit_name_template
        name = self._expand_user_vars(template)
        if not _UNIT_NAME_RE.fullmatch(name) or len(name) > _UNIT_NAME_MAX:
            raise ValueError(
                f"The systemd unit name {name!r} for user {self.user.name!r} "
                f"(server {self.name!r}) is not valid: use letters, digits, '-', '_', '.' "
                "or ':' in user and server names, or change unit_name_template "
                "(systemd.unit(5))."
            )
        return name

    def _writable_paths(self) -> list[str]:
        paths = list(self.readwrite_paths or [])
        if self.exchange_root and self.exchange_root not in paths:
            paths.append(self.exchange_root)
        return paths

    # -- start -------------------------------------------------------------------------------

    async def start(self):
        if remove_dangling_runtime_link(run_root(), self.unit_name):
            self.log.info(
                "user:%s removed the dangling link %s/%s left by the unit's last run",
                self.user.name,
                run_root(),
                self.unit_name,
            )
        self.readwrite_paths = self._writable_paths()
        account = self._expand_user_vars(self.unit_extra_properties.get("User", "{USERNAME}"))
        # NSS may ask systemd-userdbd over varlink: off the event loop.
        uid = await asyncio.to_thread(static_account_uid, account)
        if uid is not None:
            raise RuntimeError(
                f"Refusing to start the lab of hub user {self.user.name!r}: its account "
                f"{account!r} is an existing system account (uid {uid}), which systemd "
                "would use instead of a dynamic user. Give the authenticator a "
                "username_prefix (the default is 'u') so hub users never take a "
                "system account's name."
            )
        if self.exchange_root and not os.path.isdir(self.exchange_root):
            self.log.warning(
                "user:%s the nbgrader exchange %s does not exist: systemd will refuse to "
                "start the lab. The hub creates it at start (mode 0755, owned by the hub).",
                self.user.name,
                self.exchange_root,
            )
        result = await self.queued_start(super().start)
        try:
            await self.after_start()
        except Exception:  # the lab runs; the next start tries again
            self.log.exception("user:%s course bookkeeping after start failed", self.user.name)
        return result


class AnankeLocalSpawner(LabEnvironment, SimpleLocalProcessSpawner):
    """Labs as local processes of the hub's user: for laptops, CI and the demo only.

    There is no isolation between users: every lab runs as the hub's OS user and can read
    every other user's files. Use AnankeSystemdSpawner for teaching.
    """

    _warned_no_isolation = False

    allow_root = Bool(
        False,
        config=True,
        help="""Start labs although the hub runs as root (they run as root too).

        Every lab of the local spawner runs as the hub's OS user: as root, a student's
        notebook is root on the machine. Only for a single-user demo or a test run: the
        hub then refuses to start unless it listens on a loopback address only
        (c.JupyterHub.bind_url on 127.0.0.1), and logs a warning. `ananke demo` and the
        test suite set it. On a systemd host use the systemd spawner instead.
        """,
    )

    home_root = Unicode(
        config=True,
        help="""Directory holding the users' homes (`<home_root>/<username>`, mode 0700).

        Defaults to `homes/` in Ananke's state directory (ANANKE_STATE_DIR).
        """,
    )

    @default("home_root")
    def _default_home_root(self):
        return str(StateLayout.from_env().local_homes)

    @default("home_dir")
    def _default_home_dir(self):
        root = Path(self.home_root)
        home = root / self.user.name
        # JupyterHub user names cannot contain "/", but the home is a path made from one:
        # make sure it stays a direct child of home_root.
        if home.parent != root or self.user.name in ("", ".", ".."):
            raise ValueError(f"user name {self.user.name!r} cannot name a home directory")
        return str(home)

    def get_args(self):
        args = list(super().get_args())
        # jupyter-server refuses to run as root without --allow-root; the demo and CI
        # often run the hub as root.
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    def user_env(self, env):
        env = super().user_env(env)
        # The OS user is the hub's, so USER would name it; nbgrader takes the student id
        # from the user name (CourseDirectory.student_id): use the hub user's name.
        env["USER"] = self.user.name
        env["HOME"] = self.home_dir
        return env

    def ensure_home(self) -> Path:
        """Create ``<home_root>/<username>`` with mode 0700 (and home_root) if missing."""
        home = Path(self.home_dir)
        # home_root only if missing: it may be a directory the admin chose and shares.
        Path(self.home_root).mkdir(parents=True, exist_ok=True, mode=0o700)
        ensure_private_dir(home)
        return home

    async def start(self):
        if os.geteuid() == 0 and not self.allow_root:
            # No silent fallback to root labs (the hub's start-up check says the same).
            raise RuntimeError(root_labs_refusal())
        if not AnankeLocalSpawner._warned_no_isolation:
            AnankeLocalSpawner._warned_no_isolation = True
            self.log.warning(
                "AnankeLocalSpawner: labs run as local processes of the hub's user, without "
                "isolation between users or resource limits. Fine for a demo, not for "
                'teaching: on a systemd machine use spawner_class "ananke-systemd".'
            )
        self.ensure_home()
        return await self.queued_start(super().start)
