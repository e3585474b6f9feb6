"""The Kore application: configuration, start-up checks and the tornado server.

The hub starts Kore as a managed service (``python -m kore``, see
``ananke_hub.hubconfig.kore_service``) and passes, in the environment, where Kore must
listen (``JUPYTERHUB_SERVICE_URL``), its URL prefix (``JUPYTERHUB_SERVICE_PREFIX``)
and its OAuth client credentials (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_CLIENT_ID``).
Kore reads the same config fragments as the hub (``ANANKE_CONFIG_DIR``) and keeps its
keys in the state directory (``ANANKE_STATE_DIR``). Where course files live is the
hub's resolved ``c.CourseLayout`` (``ANANKE_HOMES_ROOT``, ``ANANKE_EXCHANGE_ROOT``).
"""

import asyncio
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.httpclient import JupyterHubHTTPClient
from jupyterhub.services.auth import HubOAuth
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from tornado import web
from traitlets import Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Application, Config

from ananke_hub import redact
from ananke_hub.checkconfig import KnownClasses, check_fragment
from ananke_hub.courses.layout import CourseLayout, resolved_layout_config
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.schema import SchemaOutOfDate, SchemaTooNew
from ananke_hub.fragments import FragmentError, load_fragments
from ananke_hub.keys import KeyFileError, KeyStore
from ananke_hub.paths import (
    DEFAULT_KORE_PORT,
    HUB_PID_ENV,
    StateLayout,
    config_dir,
)
from ananke_hub.persist import ensure_private_dir, read_or_create_secret
from ananke_hub.registration import LMSRegistration
from kore.sync.store import SyncAlreadyRunning

from . import openapi
from .audit import AuditLog
from .graders import GraderServers
from .handlers import routes
from .handlers.base import HubUserHandler, NotFoundHandler
from .lti import LTIAdvantage
from .manage.hubapi import HubAdmin
from .manage.service import CourseManager
from .sync.manager import interrupt_predecessor, sync_manager

HERE = Path(__file__).parent
DEFAULT_PREFIX = "/services/kore/"
#: Seconds open connections get to finish after SIGTERM before Kore closes them.
SHUTDOWN_GRACE = 5
#: How often Kore prunes old sync history and old backups of deleted courses (seconds).
RETENTION_INTERVAL = 24 * 3600
#: Who started a roster sync that Kore runs by itself (Kore.roster_sync_interval).
SCHEDULED_ACTOR = "kore (scheduled)"
#: Seconds between two checks that the hub that started Kore is still its parent.
HUB_WATCH_INTERVAL = 1.0


class StartupError(Exception):
    """Kore cannot start; the message says what is wrong and what to do."""


class Kore(Application):
    """Ananke's course and grade service, run by the hub as ``python -m kore``."""

    name = "kore"
    description = """Kore: Ananke's course and grade service.

    Started by JupyterHub as a managed service. Reads the config fragments of
    $ANANKE_CONFIG_DIR (section c.Kore) and keeps its keys in $ANANKE_STATE_DIR.
    """

    aliases = {
        "port": "Kore.port",
        "config-dir": "Kore.config_dir",
        "log-level": "Application.log_level",
    }
    flags = {
        "debug": ({"Application": {"log_level": "DEBUG"}}, "Log debug messages."),
    }

    port = Integer(
        DEFAULT_KORE_PORT,
        config=True,
        help="""Port Kore listens on, on 127.0.0.1.

        The hub reads this setting too, to route <hub>/services/kore/ to Kore, so set it
        in the config fragments (50_kore.py), not on Kore's command line. When the hub
        starts Kore, the address in JUPYTERHUB_SERVICE_URL (made from this port) is used.
        """,
    )

    base_url = Unicode(
        config=True,
        help="""URL prefix Kore serves under.

        Default: $JUPYTERHUB_SERVICE_PREFIX, which the hub sets to /services/kore/.
        """,
    )

    @default("base_url")
    def _default_base_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or DEFAULT_PREFIX

    @validate("base_url")
    def _slashed_base_url(self, proposal):
        return "/" + proposal.value.strip("/") + "/" if proposal.value.strip("/") else "/"

    config_dir = Unicode(
        config=True,
        help="""Directory of the numbered config fragments Kore reads.

        Default: $ANANKE_CONFIG_DIR, or /etc/ananke/config.d. Give it on the command line
        (--config-dir); a fragment cannot move the directory it is read from.
        """,
    )

    @default("config_dir")
    def _default_config_dir(self):
        return str(config_dir())

    cookie_secret_file = Unicode(
        "",
        config=True,
        help="""File holding the secret that signs Kore's login cookies.

        Created once (mode 0600) if missing and kept, so users stay logged in to Kore
        across restarts. Default: secrets/kore_cookie_secret in $ANANKE_STATE_DIR.
        """,
    )

    jwks_max_age = Integer(
        300,
        config=True,
        help="""Seconds the LMS may cache the tool's keyset (Cache-Control max-age).

        After `ananke keys rotate`, Kore signs with the new key at once; an LMS that
        cached the keyset longer than this may reject signatures until it refetches.
        """,
    )

    formgrader_wait = Float(
        5.0,
        config=True,
        help="""Seconds an instructor's click on "Open the formgrader" waits for the
        course's grader server to start before Kore shows a "starting" page instead
        (which reloads itself until the formgrader is ready). Kore's event loop is not
        blocked while it waits.
        """,
    )

    roster_sync_interval = Integer(
        3600,
        config=True,
        help="""Seconds between two roster syncs of every course with the LMS (its Names
        and Role Provisioning service); 0 turns them off.

        On by default, hourly: someone the LMS removes from a course loses the course on
        the hub (its groups, the formgrader of its grader account, their login tokens to
        it) within this time, without waiting for a person to click "Sync roster" and
        without waiting for their next launch. One sync reads the course's roster once
        (a page per 100 or so members), so an hour costs the LMS little. Courses run one
        after the other; a course whose sync is already running is skipped. At least 60
        seconds.""",
    )

    @validate("roster_sync_interval")
    def _valid_roster_sync_interval(self, proposal):
        if proposal.value != 0 and proposal.value < 60:
            raise TraitError(
                "Kore.roster_sync_interval must be 0 (off) or at least 60 seconds, "
                f"not {proposal.value}."
            )
        return proposal.value

    @validate("formgrader_wait")
    def _non_negative_wait(self, proposal):
        if proposal.value < 0:
            raise TraitError(
                f"Kore.formgrader_wait must be 0 or more seconds, not {proposal.value}."
            )
        return proposal.value

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO

    @default("log_format")
    def _default_log_format(self):
        return "[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"

    @default("log_datefmt")
    def _default_log_datefmt(self):
        return "%Y-%m-%d %H:%M:%S"

    def initialize(self, argv=None):
        redact.install()  # secrets out of every log line, also at DEBUG
        super().initialize(argv)
        try:
            self.load_config_fragments()
            self._route_tornado_logs()
            self.init_lti_settings()
            self.init_lms_registration()
            self.init_keys()
            self.init_registry()
            self.init_course_layout()
            self.init_hub_auth()
            self.init_grader_servers()
            self.init_course_manager()
        except StartupError as exc:
            self.log.critical("Kore cannot start: %s", exc)
            self.exit(1)

    def load_config_fragments(self) -> None:
        """Apply the fragments' config (c.Kore and all other sections) to Kore."""
        try:
            self.fragments = load_fragments(Path(self.config_dir))
        except FragmentError as exc:
            raise StartupError(f"{exc}. Fix the fragment, then restart the hub.") from exc
        self.check_settings()
        try:
            # The course layout as the hub resolves it; when the hub started Kore, the
            # hub's answer (in the environment) wins.
            self.update_config(resolved_layout_config(self.fragments.config, StateLayout.from_env()))
            # The command line wins over the fragments.
            self.update_config(self.cli_config)
        except TraitError as exc:
            raise StartupError(f"{exc} Check {self.fragments_setting('Kore')}.") from exc
        names = ", ".join(p.name for p in self.fragments.files)
        self.log.info("config: %s", names or "no fragments")

    def check_settings(self) -> None:
        """Every setting of a class Kore builds, checked against its trait (type, bounds,
        @validate), as ``ananke check-config`` does: a bad value stops Kore here, naming
        the fragment, line and setting, instead of failing a request later."""
        known = KnownClasses.empty()
        for klass in kore_classes():
            known.add(klass)
        mine = {klass.__name__ for klass in kore_classes()}
        problems = []
        for path, cfg in self.fragments.per_file.items():
            sections = Config({name: cfg[name] for name in cfg if name in mine})
            problems.extend(p for p in check_fragment(path, sections, known) if p.is_error)
        if problems:
            lines = [
                f"{p.file}:{p.line or '?'}: c.{p.setting}: {p.message}"
                + (f" ({p.hint})" if p.hint else "")
                for p in problems
            ]
            raise StartupError(
                "; ".join(lines) + ". Fix the setting (`ananke check-config "
                f"{self.config_dir}` lists every problem), then restart the hub."
            )

    def init_lti_settings(self) -> None:
        # Built now, not at the first grade sync: a value only the real class refuses
        # stops Kore at start (the sync manager uses this instance).
        try:
            self.lti_settings = LTIAdvantage(parent=self)
        except TraitError as exc:
            raise StartupError(f"{exc} Check {self.fragments_setting('LTIAdvantage')}.") from exc

    def fragments_setting(self, section: str) -> str:
        """Which fragments set ``c.<section>``, for error messages."""
        files = [str(p) for p, cfg in self.fragments.per_file.items() if section in cfg]
        return f"c.{section} in {' and '.join(files) or self.config_dir}"

    def _route_tornado_logs(self) -> None:
        # tornado (and JupyterHub's service auth) log through the "tornado" loggers:
        # send them through Kore's handler, at Kore's level.
        tornado_log = logging.getLogger("tornado")
        tornado_log.parent = self.log
        tornado_log.propagate = True
        tornado_log.setLevel(self.log.level)

    def init_lms_registration(self) -> None:
        try:
            self.registration = LMSRegistration(config=self.config)
        except TraitError as exc:
            raise StartupError(f"{exc} Check {self.fragments_setting('LMSRegistration')}.") from exc
        registration = self.registration
        self.log.info("LMS issuer: %s", registration.issuer or "(not set)")
        if not registration.is_configured:
            self.log.warning(
                "LMS registration incomplete (missing %s): set c.LMSRegistration in "
                "30_lms.py. Grades and rosters need it.",
                ", ".join(registration.missing()),
            )

    def init_keys(self) -> None:
        layout = StateLayout.from_env()
        try:
            # The secrets directory holds the hub's keys too: private before anything
            # is created in it.
            ensure_private_dir(layout.secrets)
            self.key_store = KeyStore(layout.kore_keys)
            signing = self.key_store.ensure()
            secret_file = Path(self.cookie_secret_file or layout.secrets / "kore_cookie_secret")
            self.cookie_secret = read_or_create_secret(secret_file)
        except KeyFileError as exc:
            raise StartupError(str(exc)) from exc
        except (OSError, RuntimeError) as exc:
            raise StartupError(
                f"{exc}. Kore keeps its keys in {layout.root} (ANANKE_STATE_DIR): "
                "it must be writable by the hub's user."
            ) from exc
        self.log.info(
            "tool keyset: %d key(s), signing kid %s",
            len(self.key_store.load()),
            signing.kid,
        )

    def init_registry(self) -> None:
        # The same database as the hub (c.CourseRegistry.url in the fragments); it is
        # opened on first use, in the registry's threads.
        try:
            self.registry = CourseRegistry(parent=self)
            # Kore's audit log (course management, syncs, settings), in the registry.
            self.audit_log = AuditLog(self.registry, self.log)
            shown = make_url(self.registry.url).render_as_string(hide_password=True)
        except (TraitError, ArgumentError) as exc:
            raise StartupError(f"{exc} Check {self.fragments_setting('CourseRegistry')}.") from exc
        self.log.info("course registry: %s", shown)
        # Before serving: a database at another schema stops Kore with what to do.
        try:
            self.registry.check_schema()
        except (SchemaOutOfDate, SchemaTooNew) as exc:
            raise StartupError(str(exc)) from exc
        except SQLAlchemyError as exc:  # down now: every request tries again, as before
            self.log.warning("course registry not reachable at start: %s", exc)

    def init_course_layout(self) -> None:
        # Where course files are: the settings API writes nbgrader_config.json there.
        self.course_layout = CourseLayout(parent=self)
        for name in ("homes_root", "exchange_root"):
            if not os.path.isabs(getattr(self.course_layout, name)):
                raise StartupError(
                    f"CourseLayout.{name} must be an absolute path, not "
                    f"{getattr(self.course_layout, name)!r}. Check "
                    f"{self.fragments_setting('CourseLayout')}."
                )
        self.log.info("course homes: %s", self.course_layout.homes_root)

    def init_hub_auth(self) -> None:
        # OAuth with the hub; its settings come from the environment the hub gives to
        # managed services (and may be tuned with c.HubOAuth in a fragment).
        self.hub_auth = HubOAuth(parent=self, base_url=self.base_url)
        self.hub_login_enabled = bool(self.hub_auth.api_token and self.hub_auth.oauth_client_id)
        if not self.hub_login_enabled:
            self.log.warning(
                "JUPYTERHUB_API_TOKEN or JUPYTERHUB_CLIENT_ID is not set: Kore runs without "
                "hub login and serves only %sjwks. Let the hub start Kore.",
                self.base_url,
            )

    def init_grader_servers(self) -> None:
        # Kore starts courses' grader servers with its own hub API token (scopes
        # servers and read:servers); JUPYTERHUB_BASE_URL is the hub's public base path.
        self.grader_servers = GraderServers(
            api_url=self.hub_auth.api_url,
            api_token=self.hub_auth.api_token or "",
            hub_base_url=os.environ.get("JUPYTERHUB_BASE_URL", "/"),
            log=self.log,
        )

    def init_course_manager(self) -> None:
        # Backups, reset, delete and import (kore.manage), configured as c.CourseManager.
        # It changes hub users and groups with Kore's own hub token: without one (no hub
        # login either) there is nothing to manage and the routes answer 503.
        self.course_manager = None
        if not self.hub_login_enabled:
            return
        try:
            self.course_manager = CourseManager(
                parent=self,
                registry=self.registry,
                layout=self.course_layout,
                hub=HubAdmin(api_url=self.hub_auth.api_url, token=self.hub_auth.api_token),
                audit_log=self.audit_log,
            )
        except TraitError as exc:
            raise StartupError(f"{exc} Check {self.fragments_setting('CourseManager')}.") from exc
        self.log.info("course backups: %s", self.course_manager.backups_dir)

    async def resume_operations(self) -> None:
        """Finish the resets and deletions a stopped Kore left half-done (in the background)."""
        try:
            resumed = await self.course_manager.resume_unfinished()
        except asyncio.CancelledError:
            raise
        except Exception:  # Kore serves on; the next start tries again
            self.log.exception("could not resume unfinished course operations")
            return
        for entry in resumed:
            self.log.info(
                "course:%s resumed %s %s: %s",
                entry.get("course_id"),
                entry.get("kind"),
                entry.get("operation_id"),
                entry.get("state"),
            )

    async def retention(self) -> None:
        """Prune old sync history and old backups of deleted courses, now and then daily
        (c.CourseManager.sync_history_days, sync_history_runs, deleted_course_backups_days)."""
        while True:
            try:
                await self.course_manager.prune_history()
            except asyncio.CancelledError:
                raise
            except Exception:  # the registry or the disk is down: try again tomorrow
                self.log.exception("retention: could not prune old history")
            await self._wait(RETENTION_INTERVAL)

    async def scheduled_roster_syncs(self, app: web.Application) -> None:
        """Every ``roster_sync_interval`` seconds, sync the roster of every course."""
        self.log.info("roster syncs of all courses every %d s", self.roster_sync_interval)
        while True:
            await self._wait(self.roster_sync_interval)
            try:
                course_ids = await self.registry.run(self.registry.roster_course_ids)
            except Exception:  # the registry is down: try again next time
                self.log.exception("scheduled roster syncs: cannot list the courses")
                continue
            manager = sync_manager(app.settings)
            for course_id in course_ids:
                await self.scheduled_roster_sync(manager, course_id)

    @staticmethod
    async def _wait(seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def scheduled_roster_sync(self, manager, course_id: str) -> dict | None:
        """One course's scheduled sync; its run, or None if it could not run now."""
        try:
            run = await manager.run(manager.roster_job(course_id, SCHEDULED_ACTOR))
        except SyncAlreadyRunning:
            return None
        except Exception:  # one course's failure must not stop the others
            self.log.exception("course:%s scheduled roster sync failed", course_id)
            return None
        if run.get("state") != "finished":
            self.log.warning(
                "course:%s scheduled roster sync %s: %s",
                course_id,
                run.get("state"),
                run.get("message") or "",
            )
        return run

    def listen_address(self) -> tuple[str, int]:
        """Where to listen: the hub's JUPYTERHUB_SERVICE_URL, else 127.0.0.1:<port>."""
        service_url = os.environ.get("JUPYTERHUB_SERVICE_URL")
        if not service_url:
            return "127.0.0.1", self.port
        parsed = urlparse(service_url)
        if parsed.scheme != "http":
            raise StartupError(
                f"JUPYTERHUB_SERVICE_URL is {service_url!r}: Kore serves plain http on "
                "127.0.0.1 only (no internal_ssl); the hub's proxy does TLS."
            )
        return parsed.hostname or "127.0.0.1", parsed.port or 80

    def make_web_app(self) -> web.Application:
        settings = {
            "template_path": str(HERE / "templates"),
            "cookie_secret": self.cookie_secret,
            # XSRF: HubOAuth checks the token of every cookie-authenticated request
            # that changes something while it resolves the user (and then ignores the
            # cookie), so tornado's own earlier check stays off.
            "xsrf_cookies": False,
            "default_handler_class": NotFoundHandler,
            "log_function": self.log_request,
            "kore": self,
            "kore_log": self.log,
            "kore_prefix": self.base_url,
            "hub_auth": self.hub_auth,
            "hub_login_enabled": self.hub_login_enabled,
            "key_store": self.key_store,
            "jwks_max_age": self.jwks_max_age,
            "lms_registration": self.registration,
            "course_registry": self.registry,
            "course_layout": self.course_layout,
            "grader_servers": self.grader_servers,
            "formgrader_wait": self.formgrader_wait,
            "course_manager": self.course_manager,
            "audit_log": self.audit_log,
            "lti_settings": self.lti_settings,
        }
        # The OpenAPI document and its validators, read now rather than in the event loop.
        openapi.request_bodies()
        return web.Application(routes(self.base_url), **settings)

    def log_request(self, handler: web.RequestHandler) -> None:
        """One line per request: status, method, path (never the query: OAuth codes)."""
        status = handler.get_status()
        if status >= 500:
            log = self.log.error
        elif status >= 400:
            log = self.log.warning
        else:
            log = self.log.info
        user = handler.current_user if isinstance(handler, HubUserHandler) else None
        request = handler.request
        log(
            "%d %s %s (%s@%s) %.1fms",
            status,
            request.method,
            request.path,
            user["name"] if user else "-",
            request.remote_ip,
            1000 * request.request_time(),
        )

    def start(self):
        self.exit(asyncio.run(self.serve()))

    async def end_predecessor_syncs(self) -> None:
        """Syncs a previous Kore left "running" died with it: say so before serving, so
        that a new sync neither waits for their lock to go stale nor gets 409."""
        try:
            ended = await self.registry.run(interrupt_predecessor, self.registry)
        except SQLAlchemyError as exc:
            self.log.error("cannot mark the previous Kore's syncs as interrupted: %s", exc)
            return
        if ended:
            self.log.warning(
                "%d sync(s) of the previous Kore marked interrupted: %s",
                len(ended),
                " ".join(run_id[:8] for run_id in ended),
            )

    @staticmethod
    def hub_pid() -> int | None:
        """The pid of the hub that started Kore ($ANANKE_HUB_PID), if any."""
        try:
            return int(os.environ.get(HUB_PID_ENV, ""))
        except ValueError:
            return None

    async def watch_hub(self, hub_pid: int, stop: asyncio.Event) -> None:
        """Stop Kore when the hub that started it is gone.

        A hub killed with SIGKILL cannot stop its services: an orphaned Kore would keep
        its port, and the next hub's Kore would fail with "Address already in use" while
        the old one served the old config. An orphan's parent changes (to init or a
        subreaper), which os.getppid() shows without any system-specific call.
        """
        while not stop.is_set():
            if os.getppid() != hub_pid:
                self.log.warning("the hub (pid %d) is gone: Kore stops", hub_pid)
                stop.set()
                return
            await asyncio.sleep(HUB_WATCH_INTERVAL)

    async def end_predecessor_backups(self) -> None:
        """Backups a previous Kore left "running" died with it (resets and deletions are
        resumed instead): mark them interrupted before serving, so a new one can start."""
        if self.course_manager is None:
            return
        try:
            await self.course_manager.interrupt_predecessor()
        except SQLAlchemyError as exc:
            self.log.error("cannot mark the previous Kore's backups as interrupted: %s", exc)

    async def serve(self) -> int:
        """Serve until SIGTERM or SIGINT (the hub stops its services with these)."""
        try:
            host, port = self.listen_address()
            app = self.make_web_app()
            await self.end_predecessor_syncs()
            await self.end_predecessor_backups()
            server = app.listen(port, address=host, xheaders=True)
        except StartupError as exc:
            self.log.critical("Kore cannot start: %s", exc)
            return 1
        except OSError as exc:
            self.log.critical(
                "Kore cannot listen on %s:%s: %s. Is another Kore running? The port is "
                "c.Kore.port in 50_kore.py.",
                host,
                port,
                exc,
            )
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.log.info("Kore serving http://%s:%d%s", host, port, self.base_url)
        hub_pid = self.hub_pid()
        watching = asyncio.create_task(self.watch_hub(hub_pid, stop)) if hub_pid else None
        # Operations a crash interrupted go on while Kore already serves: a long one
        # must not keep the keyset and the other courses waiting.
        resuming = asyncio.create_task(self.resume_operations()) if self.course_manager else None
        pruning = asyncio.create_task(self.retention()) if self.course_manager else None
        rosters = None
        if self.roster_sync_interval and self.hub_login_enabled:
            rosters = asyncio.create_task(self.scheduled_roster_syncs(app))
        await stop.wait()
        self.log.info("Kore stopping")
        if watching is not None:
            watching.cancel()
        server.stop()
        for task in (rosters, pruning):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if resuming is not None and not resuming.done():
            # Each step is saved when done: the next start continues where this one stopped.
            resuming.cancel()
            await asyncio.gather(resuming, return_exceptions=True)
        try:
            await asyncio.wait_for(server.close_all_connections(), SHUTDOWN_GRACE)
        except TimeoutError:
            self.log.warning("closed connections still open after %ss", SHUTDOWN_GRACE)
        if self.course_manager is not None:  # running resets and deletes resume next start
            await self.course_manager.aclose()
        manager = app.settings.get("sync_manager")
        if manager is not None:  # let running syncs record where they stopped
            await manager.aclose()
        if JupyterHubHTTPClient.initialized():
            await JupyterHubHTTPClient.instance().close()
        self.registry.close()
        return 0


def kore_classes() -> list[type]:
    """The configurable classes Kore builds from the fragments (checked at start)."""
    return [
        Kore,
        LTIAdvantage,
        LMSRegistration,
        CourseRegistry,
        CourseLayout,
        CourseManager,
        HubOAuth,
    ]


main = Kore.launch_instance
