"""``ananke grades sync COURSE`` and ``ananke roster sync COURSE``: the syncs Kore's API
starts, run in this process by an admin on the hub host.

The same config as the hub and Kore (the fragments of $ANANKE_CONFIG_DIR, the state of
$ANANKE_STATE_DIR: registry, Kore's signing keys, course files). Hub groups (roster) need
a hub API token in JUPYTERHUB_API_TOKEN and the API's URL in JUPYTERHUB_API_URL; without
them that step is skipped with a warning. Progress goes to stderr, the summary to stdout;
the exit status is 1 if anything failed, 2 if the sync could not start.
"""

import asyncio
import getpass
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config

from ananke_hub.courses.layout import (
    CourseLayout,
    InvalidCourseId,
    check_course_id,
    resolved_layout_config,
)
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.fragments import FragmentError, load_fragments
from ananke_hub.keys import KeyFileError, KeyStore
from ananke_hub.paths import StateLayout
from ananke_hub.registration import LMSRegistration
from ananke_hub.registrations import RegistrationBook, RegistrationStore
from kore.sync.store import SyncAlreadyRunning, SyncStore, UnknownCourse

from ..lti import LTIAdvantage, LTIClient
from .grades import GradeSyncOptions
from .hub_groups import HubGroups
from .job import SyncJob
from .manager import SyncManager
from .roster import UsernameRule

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
#: Failed results listed in the summary; the rest are counted.
MAX_LISTED = 100


class SetupError(Exception):
    """The sync cannot start; the message says what to do."""


@dataclass
class Setup:
    registry: CourseRegistry
    layout: CourseLayout
    client: LTIClient
    hub: HubGroups | None
    rule: UsernameRule


def hub_config(config_dir: Path, state: StateLayout) -> Config:
    """The config the hub and Kore see: the fragments, with the course layout the hub
    resolves (:func:`ananke_hub.courses.layout.resolved_layout_config`)."""
    try:
        fragments = load_fragments(config_dir)
    except FragmentError as exc:
        raise SetupError(f"{exc}. Fix the fragment first.") from exc
    return resolved_layout_config(fragments.config, state)


def setup(config_dir: Path) -> Setup:
    state = StateLayout.from_env()
    cfg = hub_config(config_dir, state)
    key_store = KeyStore(state.kore_keys)
    try:
        if not key_store.load():
            raise SetupError(
                f"Kore has no signing key in {key_store.directory} yet: start the hub (and "
                "with it Kore) once, or run `ananke keys rotate`."
            )
    except (KeyFileError, OSError) as exc:
        raise SetupError(f"{exc} (run this as the hub's user, e.g. root)") from exc
    registration = LMSRegistration(config=cfg)
    registry = CourseRegistry(config=cfg)
    rule = UsernameRule.from_config(cfg)
    hub = None
    token, api_url = os.environ.get("JUPYTERHUB_API_TOKEN"), os.environ.get("JUPYTERHUB_API_URL")
    if token and api_url:
        hub = HubGroups(api_url=api_url, token=token)
    return Setup(
        registry=registry,
        layout=CourseLayout(config=cfg),
        client=LTIClient(
            registration=registration,
            key_store=key_store,
            settings=LTIAdvantage(config=cfg),
            registrations=RegistrationBook(RegistrationStore(registry, registration, rule.prefix)),
        ),
        hub=hub,
        rule=rule,
    )


class ProgressBar:
    """``[#######-----]  120/500  sent 100  failed 2`` on a terminal; lines otherwise."""

    WIDTH = 30

    def __init__(self, stream, label: str):
        self.stream = stream
        self.label = label
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_draw = 0.0
        self.last_tenth = -1

    def line(self, job: SyncJob) -> str:
        p = job.progress
        filled = int(self.WIDTH * p.done / p.total) if p.total else 0
        counts = "  ".join(f"{status} {n}" for status, n in sorted(p.counts.items()))
        return (
            f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] "
            f"{p.done}/{p.total}  {counts}"
        )

    def __call__(self, job: SyncJob) -> None:
        p = job.progress
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw >= 0.1 or p.done == p.total:
                self.stream.write("\r" + self.line(job) + "\033[K")
                self.stream.flush()
                self.last_draw = now
            return
        tenth = 10 * p.done // p.total if p.total else 0
        if tenth != self.last_tenth and p.total:
            self.last_tenth = tenth
            print(self.line(job), file=self.stream)

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def print_summary(run: dict, results: list[dict], out) -> None:
    kind = "Grade sync" if run["kind"] == "grades" else "Roster sync"
    print(f"{kind} of {run['course_id']} (run {run['run_id']}): {run['state']}", file=out)
    if run["kind"] == "grades":
        statuses = ["sent", "unchanged", "skipped", "failed"]
        # Columns for the rarer outcomes only when they happened.
        statuses += [s for s in ("not_gradable", "unknown") if any(r["status"] == s for r in results)]
        per_item: dict[str, dict[str, int]] = {}
        for r in results:
            row = per_item.setdefault(r["label"] or r["item"], dict.fromkeys(statuses, 0))
            row[r["status"]] = row.get(r["status"], 0) + 1
        if per_item:
            width = max(12, *(len(k) for k in per_item))
            print("", file=out)
            print(f"{'item':<{width}}" + "".join(f"{s:>13}" for s in statuses), file=out)
            for item, row in per_item.items():
                print(f"{item:<{width}}" + "".join(f"{row[s]:>13}" for s in statuses), file=out)
    else:
        counts = "  ".join(f"{s} {n}" for s, n in sorted(run["counts"].items()))
        print(f"people: {counts or 'none'}", file=out)
    failed = [r for r in results if r["status"] in ("failed", "unknown")]
    if failed:
        print(f"\nFailed or unknown ({len(failed)}):", file=out)
        for r in failed[:MAX_LISTED]:
            print(f"  {r['username'] or r['lms_user_id']}  {r['item']}  {r['message']}", file=out)
        if len(failed) > MAX_LISTED:
            print(f"  ... and {len(failed) - MAX_LISTED} more (Kore's API lists all).", file=out)
    if run["warnings"]:
        print("\nWarnings:", file=out)
        for text in run["warnings"]:
            print(f"  {text}", file=out)
    if run["message"]:
        print(f"\n{run['message']}", file=out)


async def _run(job: SyncJob, setup_: Setup, out, err) -> int:
    bar = ProgressBar(err, f"{job.kind} {job.course_id}")
    job.listener = bar
    try:
        await job.begin()
    except SyncAlreadyRunning as exc:
        print(
            f"A {exc.kind} sync of {exc.course_id} is running already (run {exc.run_id}); "
            "wait for it to end.",
            file=err,
        )
        return EXIT_FAILED
    except UnknownCourse:
        print(f"There is no course {job.course_id} in the course registry.", file=err)
        return EXIT_SETUP
    try:
        await job.run()
    finally:
        bar.end()
        await setup_.client.aclose()
    store = SyncStore(setup_.registry)
    run = await setup_.registry.run(store.get_run, job.course_id, job.run_id)
    _, results = await setup_.registry.run(store.results, job.run_id)
    print_summary(run, results, out)
    return EXIT_OK if run["state"] == "finished" else EXIT_FAILED


def run_command(
    kind: str,
    course: str,
    *,
    missing: str = "zero",
    resend: bool = False,
    config_dir: Path,
    out=None,
    err=None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        course_id = check_course_id(course)
    except InvalidCourseId:
        print(f"{course!r} is not a course id (c- and 16 hex digits).", file=err)
        return EXIT_SETUP
    try:
        s = setup(config_dir)
    except SetupError as exc:
        print(str(exc), file=err)
        return EXIT_SETUP
    # The jobs' own log: errors to stderr (warnings are in the summary).
    log = logging.getLogger("ananke.sync")
    if not log.handlers:
        handler = logging.StreamHandler(err)
        handler.setLevel(logging.ERROR)
        log.addHandler(handler)
        log.propagate = False
    who = "cli:" + getpass.getuser()
    # Kore's jobs, wired as Kore wires them; run here, not in Kore's background.
    jobs = SyncManager(
        registry=s.registry,
        layout=s.layout,
        lti_client=s.client,
        hub=s.hub,
        username_rule=s.rule,
        log=log,
    )
    if kind == "grades":
        options = GradeSyncOptions.from_json({"missing": missing, "resend": resend})
        job = jobs.grade_job(course_id, options, who)
    else:
        job = jobs.roster_job(course_id, who)
    # Not Kore's runs: a starting Kore leaves them alone (their lock goes stale instead).
    job.owner = f"cli:{socket.gethostname()}:{os.getpid()}"
    try:
        return asyncio.run(_run(job, s, out, err))
    finally:
        s.registry.close()
