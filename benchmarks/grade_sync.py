"""Benchmark: Kore's grade sync against a sequential one-request-at-a-time sync.

    .venv/bin/python benchmarks/grade_sync.py [--json results.json] [--quick]

The built-in LMS (``python -m ananke_hub.testlms --test-api``) on 127.0.0.1, every AGS
request delayed by 20 ms (``POST /_test/faults {"delay": 0.02}``), a course of 500
learners with 10 graded nbgrader assignments each; once over plain http and once over
https with a private CA made in the run (``ananke_hub.testlms.tls``), which every
client here trusts through ``SSL_CERT_FILE`` (no verification is turned off). Per
scheme, each scenario on a freshly reset LMS:

- ``ours``: Kore's grade sync job (kore/sync/grades.py) with the shipped defaults of
  ``c.LTIAdvantage`` (adaptive concurrency under its ceiling, kept-alive connections):
  gradebook read, access token, one line item per assignment created, every student's
  score per assignment and the course total to the activity's own line item;
- ``resync``: the same job again with nothing changed (it must send nothing);
- ``sequential_total`` (http only): as the original sends grades: one course total per
  student, one request after the other, each on a new connection;
- ``sequential_all``: the same work as ours (line items and every score), one request
  after the other on new connections; by default a sample of it, extrapolated.

Then, on the last scheme, an LMS that slows down under load (``--load-delay`` per
request in flight, 429 beyond ``--load-limit``: the built-in LMS's own options, set
through ``POST /_test/load``): ``load_adaptive`` (the shipped defaults) and
``load_fixed`` (always the ceiling in flight), with their 429s and retries.

Afterwards the LMS's tallies (``GET /_test/scores.json``) must show every score exactly
once: none missing, none twice, none refused. See benchmarks/README.md.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from report import (
    add_output_arguments,
    finish,
    keep_traffic_local,
    parse_sizes,
    publish,
    report_header,
    summary,
    work_directory,
)
from sqlalchemy.exc import SAWarning
from tornado import web
from tornado.httpclient import HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from ananke_hub import fsutil
from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.identity import LaunchInfo
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.courses.settings import CourseSettings
from ananke_hub.keys import KeyStore
from ananke_hub.registration import LMSRegistration
from ananke_hub.testlms import constants as C
from ananke_hub.testlms import demo_data
from ananke_hub.testlms.faults import MAX_DELAY
from ananke_hub.testlms.settings import PlatformSettings
from ananke_hub.testlms.tls import ServerTLS, private_ca
from ananke_hub.testlms.tokens import launch_claims
from ananke_hub.usernames import hub_username
from kore.lti import LTIAdvantage, LTIClient
from kore.lti.tokens import client_assertion
from kore.sync.grades import RESOURCE_PREFIX, TAG, run_grade_sync

CLIENT_ID = "ananke-bench"
DEPLOYMENT_ID = "1"
HUB = "http://127.0.0.1:9"  # the tool's launch URLs; never contacted here
AGS_SCOPE_NAMES = ("lineitem", "result.readonly", "score")
CONTEXT = demo_data.DS101
LINK = demo_data.HOMEWORK
FIRST_SUB = demo_data.FIRST_EXTRA_SUB
QUICK = {"students": 20, "assignments": 2, "sequential_sample": 0}
TARGET_RATIO = 20.0
#: Bump when the made-up gradebook changes: cached gradebooks of older versions are not used.
GRADEBOOK_VERSION = 1
#: The course id the cached gradebook is built with; each run moves it to its course.
PLACEHOLDER_COURSE = "c-" + "0" * 16
#: How many problems of each kind the report lists (the counts are complete).
LIST_LIMIT = 20


# --- the course: who gets what ----------------------------------------------------------------


def assignment_name(a: int) -> str:
    return f"ps{a + 1:02d}"


def assignment_max(a: int) -> float:
    return float(10 + a)


def student_sub(i: int) -> str:
    return str(FIRST_SUB + i)


def student_score(i: int, a: int) -> float:
    """Student ``i``'s score on assignment ``a``: spread over 0..max, deterministic."""
    return float((i * 7 + a * 3) % (int(assignment_max(a)) + 1))


@dataclass(frozen=True)
class Sizes:
    students: int
    assignments: int

    @property
    def subs(self) -> list[str]:
        return [student_sub(i) for i in range(self.students)]

    @property
    def total_max(self) -> float:
        return sum(assignment_max(a) for a in range(self.assignments))

    def total(self, i: int) -> float:
        return sum(student_score(i, a) for a in range(self.assignments))

    @property
    def scores(self) -> int:
        """Scores a full sync sends: one per student and assignment, plus the totals."""
        return self.students * (self.assignments + 1)


# --- the nbgrader gradebook (built through nbgrader's API, cached) ----------------------------


def _fill_gradebook(path: Path, course_id: str, sizes: Sizes) -> None:
    """Assignments with one graded cell each, students with their LMS ids, and a graded
    submission of every student for every assignment, as autograding leaves them."""
    from nbgrader.api import Gradebook

    gb = Gradebook(f"sqlite:///{path}", course_id)
    try:
        for a in range(sizes.assignments):
            name = assignment_name(a)
            gb.add_assignment(name)
            gb.add_notebook("problems", name)
            gb.add_grade_cell(
                "answer", "problems", name, max_score=assignment_max(a), cell_type="code"
            )
        for sub in sizes.subs:
            person = demo_data.extra_learner(sub)
            gb.add_student(
                hub_username(sub),
                lms_user_id=sub,
                first_name=person.given_name,
                last_name=person.family_name,
            )
        with warnings.catch_warnings():
            # nbgrader's add_submission warns about its own session use; not ours to fix.
            warnings.simplefilter("ignore", SAWarning)
            for a in range(sizes.assignments):
                for i, sub in enumerate(sizes.subs):
                    submission = gb.add_submission(assignment_name(a), hub_username(sub))
                    (grade,) = submission.notebooks[0].grades
                    # What the autograder records for a passing or failing code cell.
                    grade.auto_score = student_score(i, a)
                    grade.needs_manual_grade = False
                gb.db.commit()
    finally:
        gb.close()
        gb.engine.dispose()


def build_gradebook(sizes: Sizes) -> bytes:
    """A filled gradebook of the placeholder course, made by nbgrader_setup and nbgrader."""
    # A memory file system if there is one: nbgrader commits every submission.
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="ananke-bench-gradebook-", dir=base) as tmp:
        layout = CourseLayout(homes_root=f"{tmp}/homes", exchange_root=f"{tmp}/exchange")
        paths = layout.course(PLACEHOLDER_COURSE)
        nbgrader_setup.ensure_course_files(paths, PLACEHOLDER_COURSE, CourseSettings())
        _fill_gradebook(paths.gradebook, PLACEHOLDER_COURSE, sizes)
        return paths.gradebook.read_bytes()


def cached_gradebook(sizes: Sizes, cache_dir: Path | None) -> tuple[bytes, dict]:
    """The gradebook's bytes, from the cache if it has them; and how they were got."""
    import nbgrader

    name = (
        f"grade_sync-{sizes.students}x{sizes.assignments}-v{GRADEBOOK_VERSION}"
        f"-nbgrader{nbgrader.__version__}.gradebook.db"
    )
    path = cache_dir / name if cache_dir else None
    if path is not None and path.is_file():
        return path.read_bytes(), {"source": "cache", "path": str(path)}
    started = time.perf_counter()
    data = build_gradebook(sizes)
    info = {"source": "built", "build_s": round(time.perf_counter() - started, 1)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        info["path"] = str(path)
    return data, info


def install_gradebook(layout: CourseLayout, course_id: str, data: bytes) -> None:
    """The course's files as its first launch makes them, with the prepared gradebook."""
    from nbgrader.api import Course, Gradebook

    paths = layout.course(course_id)
    nbgrader_setup.ensure_course_files(paths, course_id, CourseSettings())
    fsutil.write_file_in_home(
        paths.home, nbgrader_setup.GRADEBOOK_FILE, data, nbgrader_setup.GRADEBOOK_MODE
    )
    # The cached gradebook was built for the placeholder course: its assignments move
    # to this run's course (whose id depends on the LMS's port), through nbgrader's ORM.
    gb = Gradebook(paths.gradebook_url, course_id)
    try:
        course = gb.db.get(Course, course_id)
        for assignment in gb.assignments:
            assignment.course = course
        gb.db.commit()
        placeholder = gb.db.get(Course, PLACEHOLDER_COURSE)
        if placeholder is not None:
            gb.db.delete(placeholder)
            gb.db.commit()
    finally:
        gb.close()
        gb.engine.dispose()


# --- the LMS and the tool's keyset ------------------------------------------------------------


@asynccontextmanager
async def keyset_server(keys: KeyStore):
    """The tool's public keyset on 127.0.0.1 (Kore's /services/kore/jwks stands in)."""

    class KeysetHandler(web.RequestHandler):
        def get(self):
            self.write(keys.jwks())

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/jwks", KeysetHandler)]))
    server.add_sockets(sockets)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/jwks"
    finally:
        server.stop()


@asynccontextmanager
async def running_platform(
    workdir: Path, jwks_url: str, roster_size: int, tls: ServerTLS | None = None
):
    """``python -m ananke_hub.testlms --test-api`` on a free port (https with ``tls``);
    yields its URL and process id."""
    state = workdir / ("lms-https" if tls else "lms")
    argv = [
        sys.executable,
        "-m",
        "ananke_hub.testlms",
        "--port=0",
        f"--state-dir={state}",
        f"--client-id={CLIENT_ID}",
        f"--deployment-id={DEPLOYMENT_ID}",
        f"--tool-login-url={HUB}/hub/lti13/oauth_login",
        f"--tool-redirect-uri={HUB}/hub/lti13/oauth_callback",
        f"--tool-target-link-uri={HUB}/hub/",
        f"--tool-jwks-url={jwks_url}",
        f"--roster-size={roster_size}",
        f"--ags-scopes={','.join(AGS_SCOPE_NAMES)}",
        "--test-api",
    ]
    if tls is not None:
        argv += [f"--certfile={tls.cert_file}", f"--keyfile={tls.key_file}"]
    log_path = state.with_suffix(".log")
    with open(log_path, "ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    try:
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        except TimeoutError:
            line = ""
        url = next((w for w in line.split() if w.startswith(("http://", "https://"))), None)
        if not url:
            raise RuntimeError(f"the LMS did not start (see {log_path}): {line!r}")
        yield url, proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class Bench:
    """What every scenario uses."""

    args: argparse.Namespace
    sizes: Sizes
    workdir: Path
    platform: PlatformSettings
    keys: KeyStore
    layout: CourseLayout
    course_id: str
    #: The LMS's test API and gradebook page (one keep-alive client: not timed).
    admin: httpx.AsyncClient
    lms_pid: int
    #: "http" or "https" (the LMS behind TLS with a private CA).
    scheme: str = "http"
    #: An access token for the sequential scenarios, fetched once before them.
    token: str = ""
    registries: list = field(default_factory=list)

    @property
    def own_lineitem(self) -> str:
        return self.platform.lineitem_url(CONTEXT.id, LINK.id)

    async def reset_lms(self) -> None:
        """Demo data again (no scores, no tallies, no created line items), then the
        latency on every AGS request."""
        r = await self.admin.post("/_test/reset")
        r.raise_for_status()
        r = await self.admin.post("/_test/faults", json={"delay": self.args.delay})
        r.raise_for_status()
        await self.set_load()

    async def set_load(self, per_request: float = 0.0, limit: int = 0) -> None:
        """The LMS's slow-down under load (none by default); its counters start again."""
        r = await self.admin.post("/_test/load", json={"per_request": per_request, "limit": limit})
        r.raise_for_status()

    async def load_stats(self) -> dict:
        """Since the last reset: TCP connections, peak requests in flight, 429s answered."""
        r = await self.admin.get("/_test/load")
        r.raise_for_status()
        return r.json()

    async def tallies(self) -> list[dict]:
        r = await self.admin.get("/_test/scores.json")
        r.raise_for_status()
        return r.json()["posts"]

    async def lms_scores(self) -> list[dict]:
        r = await self.admin.get("/gradebook.json")
        r.raise_for_status()
        (course,) = [c for c in r.json()["contexts"] if c["id"] == CONTEXT.id]
        return course["scores"]

    async def lineitems(self) -> list[dict]:
        """The course's line items, read by the test harness (no delay applies to the
        harness's token; AGS latency does, but this is not timed)."""
        r = await self.admin.get(
            self.platform.lineitems_url(CONTEXT.id),
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        r.raise_for_status()
        return r.json()

    def registration(self) -> LMSRegistration:
        return LMSRegistration(
            issuer=self.platform.issuer,
            client_id=CLIENT_ID,
            access_token_url=self.platform.access_token_url,
        )

    def new_registry(self, name: str) -> CourseRegistry:
        """A course registry with the course and its learners, as their launches left it."""
        registry = CourseRegistry(url=f"sqlite:///{self.workdir / f'registry-{name}.sqlite'}")
        self.registries.append(registry)
        instructor = launch_claims(
            self.platform, demo_data.ADA, LINK, uuid.uuid4().hex, context=CONTEXT
        )
        registry.record_launch(
            LaunchInfo.from_id_token(instructor, hub_username(demo_data.ADA.sub))
        )
        for sub in self.sizes.subs:
            claims = launch_claims(
                self.platform,
                demo_data.extra_learner(sub),
                LINK,
                uuid.uuid4().hex,
                context=CONTEXT,
                overrides={C.ROLES: [C.ROLE_LEARNER]},
            )
            info = LaunchInfo.from_id_token(claims, hub_username(sub))
            if info.course_id != self.course_id:
                raise RuntimeError(f"learner {sub} launched into {info.course_id}, not the course")
            registry.record_launch(info)
        return registry


def course_id_of(platform: PlatformSettings) -> str:
    claims = launch_claims(platform, demo_data.ADA, LINK, "n", context=CONTEXT)
    return LaunchInfo.from_id_token(claims, "x").course_id


async def fetch_token(bench: Bench) -> str:
    """One access token (client credentials with a signed assertion), for the baselines."""
    assertion = client_assertion(
        bench.keys.signing_key(), client_id=CLIENT_ID, audience=bench.platform.access_token_url
    )
    scopes = [C.AGS_SCOPE_NAMES[n] for n in ("lineitem", "score")]
    r = await bench.admin.post(
        bench.platform.access_token_url,
        data={
            "grant_type": C.CLIENT_CREDENTIALS_GRANT,
            "client_assertion_type": C.CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": " ".join(scopes),
        },
    )
    if r.status_code != 200:
        raise RuntimeError(f"the LMS refused the benchmark's token request: {r.text[:300]}")
    return r.json()["access_token"]


# --- checking what arrived --------------------------------------------------------------------


def check_delivery(posts: list[dict], expected: dict[str, set[str]]) -> dict:
    """Every (line item, user) of ``expected`` accepted exactly once, nothing refused,
    nothing else posted."""
    seen = {(p["lineitem"], p["userId"]): p for p in posts}
    wanted = {(item, user) for item, users in expected.items() for user in users}
    missing = sorted(k for k in wanted if k not in seen or seen[k]["accepted"] == 0)
    duplicated = sorted(k for k in wanted if k in seen and seen[k]["accepted"] > 1)
    refused = sorted(k for k, p in seen.items() if p["refused"])
    unexpected = sorted(k for k in seen if k not in wanted)
    once = sum(1 for k in wanted if k in seen and seen[k]["accepted"] == 1)

    def some(keys):
        return [f"{item} user {user}" for item, user in keys[:LIST_LIMIT]]

    return {
        "expected": len(wanted),
        "delivered_once": once,
        "posts_accepted": sum(p["accepted"] for p in posts),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "refused": len(refused),
        "unexpected": len(unexpected),
        "examples": {
            "missing": some(missing),
            "duplicated": some(duplicated),
            "refused": some(refused),
            "unexpected": some(unexpected),
        },
        "ok": once == len(wanted) and not (missing or duplicated or refused or unexpected),
    }


def check_values(scores: list[dict], expected: dict[tuple[str, str], tuple[float, float]]) -> dict:
    """The LMS's stored score (as sent: scoreGiven, scoreMaximum) is what nbgrader says."""
    wrong = []
    for s in scores:
        want = expected.get((s["lineitem"], s["userId"]))
        if want is None:
            continue
        got = (s["scoreGiven"], s["scoreMaximum"])
        if (
            got[0] is None
            or got[1] is None
            or any(abs(g - w) > 1e-6 for g, w in zip(got, want, strict=True))
        ):
            wrong.append(f"{s['lineitem']} user {s['userId']}: {got}, nbgrader {want}")
    return {"checked": len(scores), "wrong": len(wrong), "examples": wrong[:LIST_LIMIT]}


# --- the scenarios ----------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process ``pid`` used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Meter:
    """Wall time and CPU time of a scenario: of this process (the tool: Kore's job or the
    sequential sender; the harness is idle meanwhile) and of the LMS. CPU per request
    tells how much work a request costs, which the wall time hides on a busy machine."""

    def __init__(self, bench: Bench):
        self.lms_pid = bench.lms_pid
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.lms = process_cpu_s(self.lms_pid)

    def result(self, requests: int) -> dict:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        lms = process_cpu_s(self.lms_pid)
        lms = None if lms is None or self.lms is None else lms - self.lms

        def per_request(seconds):
            return None if seconds is None or not requests else round(seconds * 1000 / requests, 2)

        return {
            "requests": requests,
            "wall_s": round(wall, 3),
            "requests_per_s": round(requests / wall, 1) if wall else None,
            "tool_cpu_s": round(cpu, 2),
            "lms_cpu_s": None if lms is None else round(lms, 2),
            "tool_cpu_ms_per_request": per_request(cpu),
            "lms_cpu_ms_per_request": per_request(lms),
        }


class Timeline:
    """When the job recorded its first and its last result (its progress listener), and
    this process's CPU time at the first. Called once per result: kept cheap."""

    def __init__(self):
        self.first = self.last = self.first_cpu = None

    def __call__(self, job) -> None:
        if job.progress.done:
            self.last = time.perf_counter()
            if self.first is None:
                self.first, self.first_cpu = self.last, time.process_time()


async def run_sync(bench: Bench, registry: CourseRegistry, client: LTIClient) -> dict:
    timeline = Timeline()
    attempts, tokens = client.transport.attempts, client.tokens.requests
    meter = Meter(bench)
    async with asyncio.timeout(bench.args.timeout):
        final = await run_grade_sync(
            bench.course_id,
            {"missing": "zero"},
            registry=registry,
            layout=bench.layout,
            lti_client=client,
            progress=timeline,
            who="benchmark",
        )
    cpu_at_end = time.process_time()
    result = {
        "state": final["state"],
        "message": final["message"],
        "counts": final["counts"],
        "failed": final["failed"],
        "warnings": final["warnings"],
        **meter.result(client.transport.attempts - attempts),
        "token_requests": client.tokens.requests - tokens,
    }
    if timeline.first is not None:
        # Before the first result: gradebook read, registry, token, line items.
        result["before_first_result_s"] = round(timeline.first - meter.wall, 3)
        result["before_first_result_cpu_s"] = round(timeline.first_cpu - meter.cpu, 2)
        # From the first result to the last: the scores (and the results' writes); its
        # CPU time runs to the job's end (the last write of the results included).
        result["sending_s"] = round(timeline.last - timeline.first, 3)
        result["sending_cpu_s"] = round(cpu_at_end - timeline.first_cpu, 2)
        scores = sum(final["counts"].values())
        if scores:
            result["sending_tool_cpu_ms_per_score"] = round(
                result["sending_cpu_s"] * 1000 / scores, 2
            )
    return result


def created_items(lineitems: list[dict], sizes: Sizes) -> tuple[dict[str, int], list[str]]:
    """Kore's line items by URL -> assignment index; and what is wrong with them."""
    by_url, problems = {}, []
    names = {RESOURCE_PREFIX + assignment_name(a): a for a in range(sizes.assignments)}
    per_resource = Counter(i.get("resourceId") for i in lineitems if i.get("tag") == TAG)
    for item in lineitems:
        if item.get("tag") == TAG and item.get("resourceId") in names:
            by_url[item["id"]] = names[item["resourceId"]]
    for resource, n in per_resource.items():
        if resource not in names:
            problems.append(f"unexpected line item {resource!r}")
        elif n > 1:
            problems.append(f"{n} line items for {resource!r}")
    for resource in names:
        if resource not in per_resource:
            problems.append(f"no line item for {resource!r}")
    return by_url, problems


async def scenario_ours(
    bench: Bench, settings: LTIAdvantage, resync: bool, load: tuple[float, int] | None = None
) -> dict:
    """Kore's job with ``settings`` (the shipped defaults unless a scenario changes them);
    with ``load``, the LMS slows down by ``load[0]`` s per request in flight and answers
    429 beyond ``load[1]``."""
    await bench.reset_lms()
    if load:
        await bench.set_load(*load)
    sizes = bench.sizes
    label = (
        f"{bench.scheme}-c{settings.concurrency}-{'a' if settings.adaptive_concurrency else 'f'}"
    )
    registry = await asyncio.to_thread(bench.new_registry, f"ours-{label}-{len(bench.registries)}")
    client = LTIClient(registration=bench.registration(), key_store=bench.keys, settings=settings)
    try:
        result = {
            "concurrency": settings.concurrency,
            "adaptive": settings.adaptive_concurrency,
            **await run_sync(bench, registry, client),
        }
        transport, limiter = client.transport, client.transport.limiter
        lms_load = await bench.load_stats()
        result["traffic"] = {
            # Kore's side: connections opened (TLS handshakes on https), answers 429/503,
            # retries, the adaptive limit's peak, decreases and where it ended.
            "connections_opened": transport.connections_opened,
            "throttled_answers": transport.throttled,
            "retries": transport.retries,
            "peak_in_flight": limiter.peak,
            "limit_decreases": limiter.decreases,
            "final_limit": limiter.current,
            # The LMS's side: TCP connections that carried requests, its 429s, its peak.
            "lms_connections": lms_load["connections"],
            "lms_429": lms_load["overloaded"],
            "lms_peak_in_flight": lms_load["peak"],
        }
        posts = await bench.tallies()
        lineitems = await bench.lineitems()
        by_url, problems = created_items(lineitems, sizes)
        result["line_items"] = {"created": len(by_url), "problems": problems}
        subs = set(sizes.subs)
        expected = {url: subs for url in by_url} | {bench.own_lineitem: subs}
        result["delivery"] = check_delivery(posts, expected)
        values = {}
        for url, a in by_url.items():
            for i, sub in enumerate(sizes.subs):
                values[(url, sub)] = (student_score(i, a), assignment_max(a))
        for i, sub in enumerate(sizes.subs):
            values[(bench.own_lineitem, sub)] = (sizes.total(i), sizes.total_max)
        result["values"] = check_values(await bench.lms_scores(), values)
        result["ok"] = (
            result["state"] == "finished"
            and result["counts"] == {"sent": sizes.scores}
            and len(by_url) == sizes.assignments
            and not problems
            and result["delivery"]["ok"]
            and result["values"]["wrong"] == 0
        )
        if load:
            # An overloaded LMS may refuse a score through every retry: the job must then
            # say so (failed, sent next time), never send one twice or claim it sent.
            d, counts = result["delivery"], result["counts"]
            not_sent = sum(n for status, n in counts.items() if status != "sent")
            result["honest"] = (
                d["duplicated"] == d["refused"] == d["unexpected"] == 0
                and d["missing"] == not_sent
                and counts.get("sent", 0) == d["delivered_once"]
            )
            result["ok"] = (
                result["honest"]
                and len(by_url) == sizes.assignments
                and not problems
                and result["values"]["wrong"] == 0
            )
        again = None
        if resync:
            # Nothing changed: the job must send nothing (it lists the line items once).
            again = await run_sync(bench, registry, client)
            again["delivery"] = check_delivery(await bench.tallies(), expected)
            again["ok"] = (
                again["state"] == "finished"
                and again["counts"] == {"unchanged": sizes.scores}
                and again["delivery"]["ok"]
            )
        return result, again
    finally:
        await client.aclose()


class SequentialSender:
    """One request after the other, each with a new HTTP client and connection (no
    keep-alive), as the original sends its grades. The client is tornado's simple one,
    the leanest at hand (measured here: ~2 ms less CPU per request than a fresh httpx
    client), so the baseline is not slowed by its own client."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []

    async def send(self, url: str, media: str, doc: dict) -> dict | None:
        started = time.perf_counter()
        http = SimpleAsyncHTTPClient(force_instance=True)
        try:
            r = await http.fetch(
                HTTPRequest(
                    url,
                    method="POST",
                    body=json.dumps(doc).encode(),
                    headers={
                        "Authorization": f"Bearer {self.bench.token}",
                        "Content-Type": media,
                        "Connection": "close",
                    },
                    request_timeout=30,
                ),
                raise_error=False,
            )
        finally:
            http.close()
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        if not 200 <= r.code < 300:
            body = (r.body or b"").decode(errors="replace")[:200]
            self.errors.append(f"{r.code} {url}: {body or r.error}")
            return None
        return json.loads(r.body) if r.body else {}

    async def score(self, lineitem: str, user_id: str, given: float, maximum: float) -> None:
        doc = {
            "userId": user_id,
            "scoreGiven": given,
            "scoreMaximum": maximum,
            "activityProgress": "Completed",
            "gradingProgress": "FullyGraded",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        await self.send(scores_url(lineitem), C.AGS_MEDIA_SCORE, doc)


def scores_url(lineitem: str) -> str:
    parts = urlsplit(lineitem)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/scores"))


def sender_stats(sender: SequentialSender, meter: Meter) -> dict:
    return {
        **meter.result(len(sender.latencies_ms)),
        "request_ms": summary(sender.latencies_ms),
        "errors": len(sender.errors),
        "error_examples": sender.errors[:LIST_LIMIT],
    }


async def scenario_sequential_total(bench: Bench) -> dict:
    """The original: one course total per student, to the activity's own line item."""
    await bench.reset_lms()
    sizes = bench.sizes
    sender = SequentialSender(bench)
    meter = Meter(bench)
    async with asyncio.timeout(bench.args.timeout):
        for i, sub in enumerate(sizes.subs):
            await sender.score(bench.own_lineitem, sub, sizes.total(i), sizes.total_max)
    result = sender_stats(sender, meter)
    result["scores"] = sizes.students
    result["delivery"] = check_delivery(
        await bench.tallies(), {bench.own_lineitem: set(sizes.subs)}
    )
    result["ok"] = result["delivery"]["ok"] and not sender.errors
    return result


async def scenario_sequential_all(bench: Bench) -> dict:
    """Ours' work one request at a time: the line items, then (a sample of) the scores."""
    await bench.reset_lms()
    sizes = bench.sizes
    sender = SequentialSender(bench)
    urls = []
    meter = Meter(bench)
    started = meter.wall
    async with asyncio.timeout(bench.args.timeout):
        for a in range(sizes.assignments):
            item = await sender.send(
                bench.platform.lineitems_url(CONTEXT.id),
                C.AGS_MEDIA_LINEITEM,
                {
                    "label": assignment_name(a),
                    "scoreMaximum": assignment_max(a),
                    "resourceId": RESOURCE_PREFIX + assignment_name(a),
                    "tag": "ananke-bench-sequential",
                    "resourceLinkId": LINK.id,
                },
            )
            if item is None:
                raise RuntimeError(f"sequential: cannot create a line item: {sender.errors[-1]}")
            urls.append(item["id"])
        created = time.perf_counter()
        work = [
            (url, sub, given, maximum)
            for i, sub in enumerate(sizes.subs)
            for url, given, maximum in [
                *(
                    (urls[a], student_score(i, a), assignment_max(a))
                    for a in range(sizes.assignments)
                ),
                (bench.own_lineitem, sizes.total(i), sizes.total_max),
            ]
        ]
        sample = work[: bench.args.sequential_sample] if bench.args.sequential_sample else work
        for url, sub, given, maximum in sample:
            await sender.score(url, sub, given, maximum)
    ended = time.perf_counter()
    create_s, scores_s = created - started, ended - created
    result = sender_stats(sender, meter)
    extrapolated = len(sample) < len(work)
    result.update(
        {
            "line_items_created": len(urls),
            "create_s": round(create_s, 3),
            "scores": len(work),
            "scores_sent": len(sample),
            "extrapolated": extrapolated,
            # Measured when the whole work was sent; else the line items as measured plus
            # every score at the sample's mean time per score.
            "estimated_wall_s": round(create_s + scores_s / len(sample) * len(work), 3),
            "estimated_requests": len(urls) + len(work),
        }
    )
    expected: dict[str, set[str]] = {}
    for url, sub, _, _ in sample:
        expected.setdefault(url, set()).add(sub)
    result["delivery"] = check_delivery(await bench.tallies(), expected)
    result["ok"] = result["delivery"]["ok"] and not sender.errors
    return result


# --- running it all ---------------------------------------------------------------------------


async def run(args, workdir: Path) -> dict:
    sizes = Sizes(args.students, args.assignments)
    report: dict = {"sizes": {**vars(sizes), "scores": sizes.scores}}

    print(f"Preparing the gradebook ({sizes.students} students x {sizes.assignments} assignments)")
    started = time.perf_counter()
    data, how = await asyncio.to_thread(cached_gradebook, sizes, args.cache_dir)
    report["gradebook"] = how
    keys = KeyStore(workdir / "tool-keys")
    keys.ensure()
    tls = None
    if "https" in args.schemes:
        # A private CA made for this run, trusted the normal way (SSL_CERT_FILE, read by
        # every client's default context: Kore's, the sequential sender's, the harness's).
        tls = private_ca(workdir / "tls")
        os.environ["SSL_CERT_FILE"] = str(tls.ca_file)
        report["tls"] = {"ca": "private, made in this run", "trusted_via": "SSL_CERT_FILE"}

    scenarios: dict = {}
    report["scenarios"] = scenarios
    report["lms"] = {}
    async with AsyncExitStack() as stack:
        jwks_url = await stack.enter_async_context(keyset_server(keys))
        for scheme in args.schemes:
            bench = await stack.enter_async_context(
                scheme_bench(
                    args, sizes, workdir, keys, jwks_url, data, tls if scheme == "https" else None
                )
            )
            report["lms"][scheme] = bench.platform.issuer
            prefix = "" if scheme == "http" else "https_"
            report.setdefault("setup_s", round(time.perf_counter() - started, 1))
            for n, concurrency in enumerate(args.concurrency):
                label = f"{prefix}ours" if n == 0 else f"{prefix}ours_c{concurrency}"
                print(f"Running {label}: Kore's grade sync ({scheme}), ceiling {concurrency}")
                scenarios[label], again = await scenario_ours(
                    bench, LTIAdvantage(concurrency=concurrency), resync=n == 0
                )
                if again is not None:
                    scenarios[f"{prefix}resync"] = again
            if scheme == "http":
                print("Running sequential_total: one total per student, one request at a time")
                scenarios["sequential_total"] = await scenario_sequential_total(bench)
            print(f"Running {prefix}sequential_all: all scores, one request at a time ({scheme})")
            scenarios[f"{prefix}sequential_all"] = await scenario_sequential_all(bench)
            if scheme == args.schemes[-1] and args.load_delay:
                load = (args.load_delay, args.load_limit)
                for name, adaptive in (("load_adaptive", True), ("load_fixed", False)):
                    print(
                        f"Running {name}: an LMS {args.load_delay * 1000:g} ms slower per "
                        f"request in flight, 429 beyond {args.load_limit} ({scheme})"
                    )
                    settings = LTIAdvantage(adaptive_concurrency=adaptive)
                    scenarios[name], _ = await scenario_ours(bench, settings, False, load)
                    scenarios[name]["scheme"] = scheme
    return report


@asynccontextmanager
async def scheme_bench(args, sizes, workdir, keys, jwks_url, data, tls):
    """One LMS (http, or https with ``tls``), its course with the gradebook, a Bench."""
    scheme = "https" if tls else "http"
    async with AsyncExitStack() as stack:
        url, lms_pid = await stack.enter_async_context(
            running_platform(workdir, jwks_url, sizes.students, tls)
        )
        platform = PlatformSettings(
            issuer=url,
            client_id=CLIENT_ID,
            deployment_id=DEPLOYMENT_ID,
            tool_target_link_uri=f"{HUB}/hub/",
            ags_scopes=tuple(C.AGS_SCOPE_NAMES[n] for n in AGS_SCOPE_NAMES),
            roster_size=sizes.students,
        )
        admin = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=url, timeout=60, trust_env=False, verify=ssl.create_default_context()
            )
        )
        layout = CourseLayout(
            homes_root=str(workdir / scheme / "homes"),
            exchange_root=str(workdir / scheme / "exchange"),
        )
        bench = Bench(
            args,
            sizes,
            workdir,
            platform,
            keys,
            layout,
            course_id_of(platform),
            admin,
            lms_pid,
            scheme=scheme,
        )
        await asyncio.to_thread(install_gradebook, layout, bench.course_id, data)
        bench.token = await fetch_token(bench)
        try:
            yield bench
        finally:
            for registry in bench.registries:
                registry.close()


def ratios(report: dict) -> dict:
    """Per scheme: sequential / ours (the same work), and the load scenarios against the
    same scheme's sequential sync (one request at a time never loads the LMS)."""
    sc = report["scenarios"]

    def r(a, b):
        return round(a / b, 2) if a and b else None

    out = {}
    for scheme in report["parameters"]["schemes"]:
        prefix = "" if scheme == "http" else "https_"
        ours, every = sc[f"{prefix}ours"], sc[f"{prefix}sequential_all"]
        out[scheme] = {
            "sequential_all_over_ours": r(every["estimated_wall_s"], ours["wall_s"]),
            "requests_per_s_ours_over_sequential": r(
                ours["requests_per_s"], every["requests_per_s"]
            ),
            "sending_phase_over_sequential_all": r(
                every["estimated_wall_s"], ours.get("sending_s")
            ),
        }
        if scheme == "http":
            out[scheme]["sequential_total_over_ours"] = r(
                sc["sequential_total"]["wall_s"], ours["wall_s"]
            )
        if "load_adaptive" in sc and sc["load_adaptive"]["scheme"] == scheme:
            out["load"] = {
                "sequential_all_over_load_adaptive": r(
                    every["estimated_wall_s"], sc["load_adaptive"]["wall_s"]
                ),
                "sequential_all_over_load_fixed": r(
                    every["estimated_wall_s"], sc["load_fixed"]["wall_s"]
                ),
                "load_fixed_over_load_adaptive": r(
                    sc["load_fixed"]["wall_s"], sc["load_adaptive"]["wall_s"]
                ),
            }
    return out


def _f(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(report: dict) -> str:
    sizes, sc, rt = report["sizes"], report["scenarios"], report["ratios"]
    params = report["parameters"]
    lines = [
        f"Grade sync: {sizes['students']} students x {sizes['assignments']} assignments = "
        f"{sizes['scores']} scores (+{sizes['assignments']} line items), "
        f"{params['delay'] * 1000:g} ms added to every AGS request; Kore with the shipped "
        f"defaults (ceiling {LTIAdvantage().concurrency}, adaptive, start "
        f"{LTIAdvantage().start_concurrency})",
        f"  {'':44} {'requests':>8} {'wall s':>8} {'req/s':>7} {'CPU ms/req: tool':>17} "
        f"{'LMS':>5}  {'conns':>5} {'429':>5} {'retries':>7} {'peak':>4}",
    ]

    def row(label, s, requests=None, wall=None, cpu=True):
        requests = s.get("requests") if requests is None else requests
        wall = s.get("wall_s") if wall is None else wall
        rate = requests / wall if requests and wall else None
        line = f"  {label:44} {requests if requests is not None else '':>8} {_f(wall, 2):>8} "
        line += f"{_f(rate):>7}"
        if cpu:
            line += (
                f" {_f(s.get('tool_cpu_ms_per_request'), 2):>17}"
                f" {_f(s.get('lms_cpu_ms_per_request'), 2):>5}"
            )
        traffic = s.get("traffic")
        if traffic:
            line += (
                f"  {traffic['lms_connections']:>5} {traffic['lms_429']:>5}"
                f" {traffic['retries']:>7} {traffic['lms_peak_in_flight']:>4}"
            )
        lines.append(line.rstrip())

    for name, s in sc.items():
        if name.startswith(("ours", "https_ours")):
            kind = "adaptive" if s["adaptive"] else "fixed"
            row(f"{name}: Kore's job, ceiling {s['concurrency']} ({kind})", s)
            if "sending_s" in s:
                lines.append(
                    f"  {'  before the first score (gradebook, token,':44} {'':>8} "
                    f"{_f(s['before_first_result_s'], 2):>8}"
                )
                lines.append("      line items created)")
                row(
                    "  sending the scores",
                    {"tool_cpu_ms_per_request": s.get("sending_tool_cpu_ms_per_score")},
                    requests=sizes["scores"],
                    wall=s["sending_s"],
                )
        elif name.endswith("resync"):
            row(f"{name}: the same job, nothing changed", s)
        elif name == "sequential_total":
            row("sequential_total: one total per student", s)
        elif name.endswith("sequential_all"):
            if s["extrapolated"]:
                row(
                    f"{name}: every score (sample {s['scores_sent']})",
                    s,
                    requests=s["estimated_requests"],
                    wall=s["estimated_wall_s"],
                )
                lines.append("      (line items and sample measured, the rest extrapolated)")
            else:
                row(f"{name}: every score", s)
            lines.append(
                f"      sequential request time (ms): p50 {_f(s['request_ms']['p50'])}, "
                f"p95 {_f(s['request_ms']['p95'])}, max {_f(s['request_ms']['max'])}"
            )
        elif name.startswith("load_"):
            kind = "adaptive" if s["adaptive"] else f"fixed at {s['concurrency']}"
            row(f"{name} ({s['scheme']}): LMS slows under load, {kind}", s)
    target = report["target"]
    lines.append("Ratios (above 1: ours is faster):")
    for scheme in params["schemes"]:
        r = rt[scheme]
        goal = target[scheme]
        lines.append(
            f"  {scheme + ':':6} sequential_all / ours (same work): "
            f"{_f(r['sequential_all_over_ours'], 2)}x   target >= {goal['goal']:g}x: "
            f"{'met' if goal['met'] else 'NOT met'}; request rate "
            f"{_f(r['requests_per_s_ours_over_sequential'], 2)}x; sending phase "
            f"{_f(r['sending_phase_over_sequential_all'], 2)}x"
        )
        if "sequential_total_over_ours" in r:
            lines.append(
                f"         sequential_total / ours (original's work only): "
                f"{_f(r['sequential_total_over_ours'], 2)}x (ours sends "
                f"{sizes['assignments'] + 1}x as many scores)"
            )
    if "load" in rt:
        r = rt["load"]
        lines.append(
            f"  load:  sequential_all / load_adaptive {_f(r['sequential_all_over_load_adaptive'], 2)}x,"
            f" / load_fixed {_f(r['sequential_all_over_load_fixed'], 2)}x; load_fixed / "
            f"load_adaptive (time) {_f(r['load_fixed_over_load_adaptive'], 2)}x"
        )
    checks = []
    for name, s in sc.items():
        d = s["delivery"]
        checks.append(
            f"{name} {d['delivered_once']}/{d['expected']}"
            + (
                f" (+{d['missing']} reported not sent, none twice)"
                if s.get("honest") and not d["ok"]
                else ""
                if d["ok"]
                else f" (missing {d['missing']}, twice {d['duplicated']}, "
                f"refused {d['refused']}, unexpected {d['unexpected']})"
            )
        )
    lines.append(
        f"Every score delivered exactly once (or reported not sent): "
        f"{'yes' if report['every_score_once'] else 'NO'} "
        f"({', '.join(checks)})"
    )
    for name, s in sc.items():
        if "values" in s:
            v = s["values"]
            lines.append(
                f"  {name}: values in the LMS = nbgrader's: {v['checked'] - v['wrong']}/{v['checked']}"
            )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time Kore's grade sync (AGS line items and scores) against a sequential "
        "one-request-at-a-time sync, against the built-in LMS on 127.0.0.1 with latency "
        "added to every AGS request, and check every score arrived exactly once."
    )
    p.add_argument("--students", type=int, default=500, help="learners in the course")
    p.add_argument("--assignments", type=int, default=10, help="graded nbgrader assignments")
    p.add_argument(
        "--delay", type=float, default=0.02, help="seconds the LMS adds to every AGS request"
    )
    p.add_argument(
        "--concurrency",
        default=str(LTIAdvantage().concurrency),
        help="c.LTIAdvantage.concurrency (the ceiling) of ours; a comma-separated list runs "
        "ours once per value (the first is the one compared; default: the shipped default)",
    )
    p.add_argument(
        "--schemes",
        default="http,https",
        help="the LMS over plain http, over https (a private CA made in the run, trusted "
        "through SSL_CERT_FILE), or both, in this order (default: http,https)",
    )
    p.add_argument(
        "--load-delay",
        type=float,
        default=0.002,
        help="the load scenarios: seconds the LMS adds per request in flight (--load-delay "
        "of the built-in LMS), run on the last scheme, adaptive and fixed; 0 skips them",
    )
    p.add_argument(
        "--load-limit",
        type=int,
        default=40,
        help="the load scenarios: the LMS answers 429 beyond this many requests in flight",
    )
    p.add_argument(
        "--sequential-sample",
        type=int,
        default=500,
        help="scores sent in sequential_all, the rest extrapolated from their mean time; 0 "
        "sends them all",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: 20 students x 2 assignments, sequential_all in full (sizes "
        "given as flags still apply)",
    )
    p.add_argument(
        "--timeout", type=float, default=900, help="seconds after which a scenario is abandoned"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "ananke-benchmarks",
        help="where prepared gradebooks are kept between runs",
    )
    p.add_argument("--no-cache", action="store_true", help="build the gradebook afresh, keep none")
    add_output_arguments(
        p, "the LMS's state and log, the course files and registries", "a check failed"
    )
    args = parse_sizes(p, argv, QUICK)
    if not 1 <= args.students <= 100_000:
        p.error("--students must be 1 to 100000")
    if args.assignments < 1:
        p.error("--assignments must be 1 or more")
    if not 0 <= args.delay <= MAX_DELAY:
        p.error(f"--delay must be 0 to {MAX_DELAY} seconds")
    if args.sequential_sample < 0:
        p.error("--sequential-sample must be 0 (all) or more")
    if args.timeout <= 0:
        p.error("--timeout must be more than 0 seconds")
    try:
        args.concurrency = [int(v) for v in str(args.concurrency).split(",") if v.strip()]
    except ValueError:
        p.error("--concurrency takes whole numbers, e.g. 8 or 8,16")
    if not args.concurrency or not all(1 <= c <= 64 for c in args.concurrency):
        p.error("--concurrency must be 1 to 64")
    schemes = [v.strip() for v in str(args.schemes).split(",") if v.strip()]
    if (
        not schemes
        or any(v not in ("http", "https") for v in schemes)
        or len(set(schemes)) < len(schemes)
    ):
        p.error("--schemes takes http, https or both, e.g. http,https")
    args.schemes = schemes
    if not 0 <= args.load_delay <= 1:
        p.error("--load-delay must be 0 to 1 seconds")
    if args.load_limit < 0:
        p.error("--load-limit must be 0 (no 429s) or more")
    if args.no_cache:
        args.cache_dir = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_traffic_local()

    workdir = work_directory(args.workdir, "ananke-bench-grades-")
    started = time.monotonic()
    report = report_header("lti-ags-grade-sync", args, "nbgrader", "aiohttp", "httpx")
    try:
        report.update(asyncio.run(run(args, workdir)))
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        print(
            f"benchmark aborted: {exc or type(exc).__name__} (logs in {workdir})", file=sys.stderr
        )
        return 2
    report["duration_s"] = round(time.monotonic() - started, 1)
    scenarios = report["scenarios"]
    report["ratios"] = ratios(report)
    report["target"] = {}
    for scheme in args.schemes:
        goal = report["ratios"][scheme]["sequential_all_over_ours"]
        report["target"][scheme] = {
            "goal": TARGET_RATIO,
            "compared": "sequential_all / ours, shipped defaults",
            "ratio": goal,
            "met": goal is not None and goal >= TARGET_RATIO,
        }
    # Load scenarios: delivered once, or honestly reported not sent (no duplicate).
    report["every_score_once"] = all(
        s.get("honest", s["delivery"]["ok"]) for s in scenarios.values()
    )
    report["all_ok"] = all(s["ok"] for s in scenarios.values())
    publish(report, render(report), args)
    problems = []
    for name, s in scenarios.items():
        if not s["ok"]:
            detail = {k: s.get(k) for k in ("state", "message", "counts", "line_items")}
            problems.append(f"{name} failed its checks: {json.dumps(detail)}")
            problems.append(f"  delivery: {json.dumps(s['delivery'])}")
    return finish(args, workdir, problems, "state and logs")


if __name__ == "__main__":
    sys.exit(main())
