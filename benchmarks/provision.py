"""Benchmark: what course provisioning adds to the login part of an LTI 1.3 launch.

    .venv/bin/python benchmarks/provision.py [--json results.json] [--quick]

Two demo stacks on 127.0.0.1 in the same run: ``provisioning`` (the shipped config:
every launch records its course and member, the first launch of an activity creates
the course, a new student is enrolled in the gradebook) and ``baseline`` (the same
authenticator with ``provision_courses = False``: a plain LTI login). Scenarios:

A. first instructor launch of new activities, one after the other (course creation);
B. students launching one course, arrivals spread over a time window (open loop),
   then the same students again (nothing new to write into the gradebook).

Afterwards every student must be in the course registry, the course's nbgrader
gradebook and its hub group exactly once, with ``lms_user_id`` = ``sub``. See
benchmarks/README.md.
"""

import argparse
import asyncio
import random
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
from hub_log import HubLog
from report import (
    add_output_arguments,
    finish,
    keep_traffic_local,
    launch_stats,
    launch_table,
    parse_sizes,
    publish,
    ratio,
    report_header,
    work_directory,
)
from virtual_user import LaunchDriver, LaunchResult

from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout, grader_username
from ananke_hub.courses.provision import PROVISION_VERSION, learner_group, staff_group
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.roles import Role
from ananke_hub.testlms import constants as C
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, DemoStack
from ananke_hub.testlms.demo_data import Context, Member, ResourceLink, User

PROVISIONING, BASELINE = "provisioning", "baseline"
STACKS = (PROVISIONING, BASELINE)
RATIO_KEY = "ratio_provisioning_over_baseline"
RATIO_LABEL = "cost of provisioning, provisioning/baseline (login)"
#: The baseline: Ananke's authenticator as a plain LTI login (see auth/authenticator.py).
BASELINE_CONFIG = {"AnankeLTI13Authenticator": {"provision_courses": False}}
FIRST_INSTRUCTOR_SUB = 4000
FIRST_STUDENT_SUB = 5000
USERNAME_PREFIX = "u"  # AnankeLTI13Authenticator.username_prefix, shipped default
#: Read-only hub API access for the record check, given to a service of the benchmark.
ADMIN_SERVICE = "bench-admin"
ADMIN_SCOPES = ["list:users", "read:users", "list:groups", "read:groups"]
#: Sizes of --quick: a smoke test of every scenario and check, not a measurement.
QUICK = dict(activities=2, students=10, window=2.0)


# --- the LMS side: activities, instructors, students ---------------------------------------


def activity(i: int) -> ResourceLink:
    return ResourceLink(f"bench-activity-{i:03d}", f"Activity {i}")


def instructor(i: int) -> User:
    sub = str(FIRST_INSTRUCTOR_SUB + i)
    return User(sub, "Bench", f"Instructor {sub}", f"teacher{sub}@example.edu", f"teacher{sub}")


def student(i: int) -> User:
    sub = str(FIRST_STUDENT_SUB + i)
    return User(sub, "Bench", f"Student {sub}", f"student{sub}@example.edu", f"student{sub}")


def username(user: User) -> str:
    return USERNAME_PREFIX + user.sub


def lms_course(activities: int, students: int) -> Context:
    """One LMS course holding every activity: instructor ``i`` teaches it, students learn."""
    return Context(
        id="bench-provision",
        label="BENCHPROV",
        title="Provisioning Benchmark",
        links=tuple(activity(i) for i in range(activities)),
        members=(
            *(Member(instructor(i).sub, (C.ROLE_INSTRUCTOR,)) for i in range(activities)),
            *(Member(student(i).sub, (C.ROLE_LEARNER,)) for i in range(students)),
        ),
    )


def arrival_times(count: int, window: float, seed: int) -> list[float]:
    """``count`` arrival offsets (s), uniform at random over ``window``: a Poisson process
    conditioned on its count. The same seed gives every stack and round the same schedule."""
    rng = random.Random(seed)
    return sorted(rng.uniform(0, window) for _ in range(count))


# --- stacks ---------------------------------------------------------------------------------


class Target:
    """One stack with its launch driver, its hub's log and a read-only admin token."""

    def __init__(self, name: str, root: Path, direct: bool):
        self.name = name
        self.admin_token = secrets.token_hex(24)
        config = {
            "JupyterHub": {
                "services": [{"name": ADMIN_SERVICE, "api_token": self.admin_token}],
                "load_roles": [
                    {"name": ADMIN_SERVICE, "scopes": ADMIN_SCOPES, "services": [ADMIN_SERVICE]}
                ],
            }
        }
        if name == BASELINE:
            config.update(BASELINE_CONFIG)
        self.stack = DemoStack(root / name, extra_config=config)
        self.direct = direct
        self.driver: LaunchDriver | None = None
        self.hub_log = HubLog(self.stack.log_dir / "jupyterhub.log")

    async def start(self) -> None:
        await self.stack.start()
        # The driver reads the ports and the platform's key, known once the stack runs.
        self.driver = LaunchDriver(self.stack, 0, direct=self.direct)

    def course_id(self, link: ResourceLink) -> str:
        return course_id_for(self.stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, link.id)

    def layout(self) -> CourseLayout:
        # Where the shipped config puts courses when the local spawner runs the labs.
        root = self.stack.layout.root
        return CourseLayout(
            homes_root=str(self.stack.layout.local_homes), exchange_root=str(root / "exchange")
        )

    def registry(self) -> CourseRegistry:
        return CourseRegistry(url=f"sqlite:///{self.stack.layout.root / 'courses.sqlite'}")

    async def stats(self, results: list[LaunchResult]) -> dict:
        hub_times = await self.hub_log.since_mark(sum(r.ok for r in results))
        return launch_stats(results, hub_times)

    async def api(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        return await client.get(
            f"{self.driver.proxy_url}/hub/api{path}",
            headers={"Authorization": f"token {self.admin_token}"},
        )


PROFILE_RATE = 250  # py-spy samples per second
#: Frames the profile summary reports (inclusive time; "thread:" = every sample of a thread).
PROFILE_FOCUS = {
    "event loop thread, all": "thread:MainThread",
    "  login callback handler": "AnankeCallbackHandler.post",
    "    JupyterHub User.sync_groups": "User.sync_groups",
    "    JupyterHub User.sync_roles": "User.sync_roles",
    "    JupyterHub User.save_auth_state": "User.save_auth_state",
    "    CourseProvisioner.provision (in loop)": "CourseProvisioner.provision",
    "registry threads, all": "thread:registry",
    "  CourseRegistry.unchanged_launch": "CourseRegistry.unchanged_launch",
    "  CourseRegistry.record_launch": "CourseRegistry.record_launch",
    "  CourseRegistry.mark_in_gradebook": "CourseRegistry.mark_in_gradebook",
    "  CourseRegistry.memberships": "CourseRegistry.memberships",
    "  ensure_course_files": "ensure_course_files",
    "    _new_gradebook (nbgrader creates it)": "_new_gradebook",
    "gradebook thread (confined to the home), all": "thread:ananke-in-home",
    "  Gradebook.__init__ (every open)": "Gradebook.__init__",
    "  Gradebook.update_or_create_student": "Gradebook.update_or_create_student",
    "SQLite commits, all threads": "DefaultDialect.do_commit",
}


def profile_summary(path: Path, launches: int) -> dict:
    """CPU time (ms per launch) of the :data:`PROFILE_FOCUS` frames in a py-spy raw file
    (one ``thread;frame;frame... count`` line per distinct stack). Idle threads are not
    sampled, and samples py-spy failed to take are missing: these are lower bounds."""
    samples = dict.fromkeys(PROFILE_FOCUS, 0)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        for label, focus in PROFILE_FOCUS.items():
            if focus.startswith("thread:"):
                hit = focus[len("thread:") :] in frames[0]
            else:
                hit = any(f.startswith(focus + " (") for f in frames[1:])
            if hit:
                samples[label] += int(count)
    per_launch = 1000 / PROFILE_RATE / max(launches, 1)
    return {
        "samples": total,
        "launches": launches,
        "ms_per_launch": {label: round(n * per_launch, 1) for label, n in samples.items()},
    }


@asynccontextmanager
async def profiled(target: Target, name: str, profile_dir: Path | None):
    """Sample the stack's hub with py-spy meanwhile (``--profile``): every thread, where
    it spends CPU time, in py-spy's raw (collapsed stack) format."""
    if profile_dir is None or target.name != PROVISIONING:
        yield
        return
    bindir = str(Path(sys.executable).parent)
    py_spy = shutil.which("py-spy", path=bindir) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    with open(profile_dir / f"{name}.py-spy.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(target.stack.processes["jupyterhub"].pid),
            "--rate",
            str(PROFILE_RATE),
            "--threads",
            "--nonblocking",  # the hub is not paused per sample: less skew in the timings
            "--format",
            "raw",
            "--output",
            str(profile_dir / f"{name}.txt"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    await asyncio.sleep(1)  # py-spy attaches
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- scenarios ------------------------------------------------------------------------------


async def instructor_launches(
    targets: dict[str, Target], course: Context, activities: int
) -> dict[str, list[LaunchResult]]:
    """Instructor ``i`` launches activity ``i`` first, one launch after the other. The
    stacks take turns launch by launch, so a drift of the machine hits both alike."""
    results: dict[str, list[LaunchResult]] = {name: [] for name in targets}
    names = list(targets)
    for i in range(activities):
        for name in names if i % 2 == 0 else names[::-1]:
            driver = targets[name].driver
            async with driver.new_client() as client:
                result = await driver.launch(
                    client, instructor(i), link=activity(i), context=course
                )
            results[name].append(result)
    return results


async def arrivals(
    driver: LaunchDriver,
    users: list[User],
    link: ResourceLink,
    course: Context,
    schedule: list[float],
    timeout: float,
) -> dict:
    """User ``k`` launches at ``schedule[k]`` seconds after the start, whatever the hub's
    answers to earlier launches (open loop): the hub sees the load an LMS would send."""
    clients = [driver.new_client() for _ in users]  # built before the clock starts
    loop = asyncio.get_running_loop()
    in_flight = peak = 0
    done_at: list[float] = []

    async def one(k: int) -> LaunchResult:
        nonlocal in_flight, peak
        await asyncio.sleep(max(0.0, start + schedule[k] - loop.time()))
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await driver.launch(clients[k], users[k], link=link, context=course)
        finally:
            in_flight -= 1
            done_at.append(loop.time() - start)

    try:
        start = loop.time()
        tasks = [asyncio.create_task(one(k)) for k in range(len(users))]
        results = await asyncio.wait_for(asyncio.gather(*tasks), schedule[-1] + timeout)
    finally:
        for client in clients:
            await client.aclose()
    wall = max(done_at)
    return {
        "results": results,
        "wall_s": round(wall, 3),
        "window_s": round(schedule[-1], 3),
        # after the last arrival, how long the hub took to answer everything in flight
        "drain_s": round(wall - schedule[-1], 3),
        "peak_in_flight": peak,
        "throughput_per_s": round(sum(r.ok for r in results) / wall, 2),
        "offered_per_s": round(len(users) / max(schedule[-1], 1e-9), 2),
    }


def compare(description: str, per_stack: dict, **extra) -> dict:
    scenario = {"description": description, **extra, **per_stack}
    prov, base = per_stack[PROVISIONING]["login_ms"], per_stack[BASELINE]["login_ms"]
    scenario[RATIO_KEY] = {q: ratio(prov[q], base[q]) for q in ("p50", "p95", "max", "mean")}
    return scenario


def gradebook_state(target: Target, course_id: str) -> tuple[int, int] | None:
    """(mtime_ns, size) of the course's gradebook: did a round write into it?"""
    try:
        st = target.layout().course(course_id).gradebook.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


async def student_round(
    args, targets: dict[str, Target], order: tuple[str, ...], course: Context, schedule, key: str
) -> dict:
    users = [student(i) for i in range(args.students)]
    link = activity(0)
    per_stack = {}
    for name in order:
        target = targets[name]
        target.hub_log.mark()
        async with profiled(target, key, args.profile):
            run = await arrivals(
                target.driver, users, link, course, schedule, args.scenario_timeout
            )
        stats = await target.stats(run.pop("results"))
        stats.update(run)
        per_stack[name] = stats
    return {name: per_stack[name] for name in STACKS}


async def scenarios(args, targets: dict[str, Target]) -> dict:
    course = lms_course(args.activities, args.students)
    out = {}
    print(
        f"A: first instructor launch of {args.activities} new activities, one at a time ...",
        flush=True,
    )
    for t in targets.values():
        t.hub_log.mark()
    async with profiled(targets[PROVISIONING], "first_instructor_launch", args.profile):
        results = await instructor_launches(targets, course, args.activities)
    per_stack = {name: await targets[name].stats(results[name]) for name in STACKS}
    out["first_instructor_launch"] = compare(
        f"{args.activities} new activities, each launched once by its own instructor (new "
        "to the hub), one launch after the other. Provisioning creates the course: registry "
        "records, grader account, course directory, nbgrader gradebook, exchange directories.",
        per_stack,
        activities=args.activities,
        concurrency=1,
    )

    schedule = arrival_times(args.students, args.window, args.seed)
    cid = targets[PROVISIONING].course_id(activity(0))
    print(
        f"B1: {args.students} students launch activity 0 for the first time, arrivals over "
        f"{args.window:g} s (each stack in turn) ...",
        flush=True,
    )
    out["students_first"] = compare(
        f"{args.students} distinct students (new to the hub and the course) launch the course "
        f"of activity 0, created in A; arrivals uniform at random over {args.window:g} s "
        f"(seed {args.seed}), each launch starts on time whatever the earlier ones do. "
        "Provisioning records each member and enrols them in the gradebook.",
        await student_round(
            args, targets, (PROVISIONING, BASELINE), course, schedule, "students_first"
        ),
        students=args.students,
        window_s=args.window,
        seed=args.seed,
        course_id=cid,
    )

    before = gradebook_state(targets[PROVISIONING], cid)
    print(f"B2: the same {args.students} students launch again ...", flush=True)
    out["students_again"] = compare(
        "The same students launch the same course again, on the same arrival schedule: "
        "existing, unchanged members (no gradebook write is needed).",
        await student_round(
            args, targets, (BASELINE, PROVISIONING), course, schedule, "students_again"
        ),
        students=args.students,
        window_s=args.window,
        seed=args.seed,
        course_id=cid,
    )
    after = gradebook_state(targets[PROVISIONING], cid)
    out["students_again"]["gradebook_unchanged"] = before is not None and before == after
    return out


# --- zero lost records ----------------------------------------------------------------------


def count_check(expected: dict[str, str], found: list[tuple[str, str]]) -> dict:
    """``found`` (name, lms_user_id) pairs against ``expected`` name -> lms_user_id: who is
    missing, who is there more than once, whose LMS user id is wrong, who is unexpected."""
    counts = Counter(name for name, _ in found)
    ids: dict[str, set[str]] = {}
    for name, lms_id in found:
        ids.setdefault(name, set()).add(lms_id)
    missing = sorted(n for n in expected if counts[n] == 0)
    duplicated = sorted(n for n in expected if counts[n] > 1)
    wrong_id = sorted(n for n in expected if counts[n] and ids[n] != {expected[n]})
    return {
        "expected": len(expected),
        "present": sum(1 for n in expected if counts[n]),
        "missing": missing,
        "duplicated": duplicated,
        "wrong_lms_user_id": wrong_id,
        "unexpected": sorted(set(counts) - set(expected)),
        "ok": not (missing or duplicated or wrong_id),
    }


def registry_members(target: Target, course_id: str) -> list:
    registry = target.registry()
    try:
        return registry.members(course_id)
    finally:
        registry.close()


def gradebook_students(target: Target, course_id: str) -> list[tuple[str, str]]:
    from nbgrader.api import Gradebook  # seconds to import: only for the check

    # course_id: the gradebook's own course, so opening it adds no default course.
    with Gradebook(target.layout().course(course_id).gradebook_url, course_id) as gb:
        return [(s.id, s.lms_user_id) for s in gb.students]


def courses_complete(target: Target, activities: int) -> dict:
    """Every course of scenario A: in the registry as provisioned, with its instructor,
    and on disk (course config, gradebook, exchange inbound)."""
    registry = target.registry()
    incomplete = []
    try:
        for i in range(activities):
            cid = target.course_id(activity(i))
            course = registry.get(cid)
            members = {m.username: m.role for m in registry.members(cid)} if course else {}
            paths = target.layout().course(cid)
            if not (
                course
                and course.provisioned >= PROVISION_VERSION
                and members.get(username(instructor(i))) == str(Role.INSTRUCTOR)
                and paths.nbgrader_config.is_file()
                and paths.gradebook.is_file()
                and paths.inbound.is_dir()
            ):
                incomplete.append(cid)
    finally:
        registry.close()
    return {
        "expected": activities,
        "complete": activities - len(incomplete),
        "incomplete": incomplete,
    }


async def hub_users(target: Target, client: httpx.AsyncClient) -> list[str]:
    names, offset = [], 0
    while True:  # pages of at most JupyterHub's api_page_max_limit (200)
        resp = await target.api(client, f"/users?offset={offset}&limit=200")
        resp.raise_for_status()
        page = resp.json()
        names += [u["name"] for u in page]
        if not page:
            return names
        offset += len(page)


async def hub_group(target: Target, client: httpx.AsyncClient, group: str) -> list[str]:
    resp = await target.api(client, f"/groups/{group}")
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return list(resp.json()["users"])


async def check_records(args, targets: dict[str, Target]) -> dict:
    """Every launcher is recorded exactly once, with lms_user_id = sub."""
    students = {username(student(i)): student(i).sub for i in range(args.students)}
    instructors = {username(instructor(i)): instructor(i).sub for i in range(args.activities)}
    prov = targets[PROVISIONING]
    cid = prov.course_id(activity(0))
    records: dict = {"course_id": cid}

    members = await asyncio.to_thread(registry_members, prov, cid)
    learners = [(m.username, m.lms_user_id) for m in members if m.role == str(Role.LEARNER)]
    records["registry_members"] = count_check(students, learners)
    records["registry_members"]["in_gradebook_flag"] = sum(
        1 for m in members if m.role == str(Role.LEARNER) and m.in_gradebook
    )
    records["gradebook_students"] = count_check(
        students, await asyncio.to_thread(gradebook_students, prov, cid)
    )
    async with prov.driver.new_client() as client:
        group = await hub_group(prov, client, learner_group(cid))
        records["hub_group"] = {
            "group": learner_group(cid),
            # the hub's group lists names only: the LMS id is the name's suffix
            **count_check(students, [(n, n[len(USERNAME_PREFIX) :]) for n in group]),
        }
        staff_ok = 0
        for i in range(args.activities):
            cid_i = prov.course_id(activity(i))
            staff = await hub_group(prov, client, staff_group(cid_i))
            # The instructor and the course's grader account (nbgrader lists the grader's
            # course from this group: the formgrader's Collect needs it).
            staff_ok += sorted(staff) == sorted([username(instructor(i)), grader_username(cid_i)])
        records["staff_groups"] = {"expected": args.activities, "ok": staff_ok}
        graders = {grader_username(prov.course_id(activity(i))) for i in range(args.activities)}
        records["grader_accounts"] = {
            "expected": len(graders),
            "present": len(graders & set(await hub_users(prov, client))),
        }
    # On both stacks, every launcher is a hub user (graders are the hub's own accounts).
    hub = {}
    people = {**students, **instructors}
    for name, target in targets.items():
        async with target.driver.new_client() as client:
            names = [n for n in await hub_users(target, client) if n not in graders]
        hub[name] = count_check(people, [(n, n[len(USERNAME_PREFIX) :]) for n in names])
    records["hub_users"] = hub
    records["courses"] = await asyncio.to_thread(courses_complete, prov, args.activities)
    records["ok"] = bool(
        records["registry_members"]["ok"]
        and records["gradebook_students"]["ok"]
        and records["hub_group"]["ok"]
        and all(h["ok"] for h in hub.values())
        and records["staff_groups"]["ok"] == args.activities
        and records["grader_accounts"]["present"] == len(graders)
        and records["courses"]["complete"] == args.activities
    )
    return records


# --- the run --------------------------------------------------------------------------------


async def run(args, workdir: Path) -> dict:
    print("Starting two demo stacks (provisioning, baseline) ...", flush=True)
    async with AsyncExitStack() as exits:
        targets = {name: Target(name, workdir, args.direct) for name in STACKS}
        for t in targets.values():
            exits.push_async_callback(t.stack.stop)
        await asyncio.gather(*(t.start() for t in targets.values()))
        out = {"scenarios": await scenarios(args, targets)}
        if args.profile:
            out["profile"] = {
                key: profile_summary(args.profile / f"{key}.txt", sc[PROVISIONING]["launches"])
                for key, sc in out["scenarios"].items()
            }
        print("Checking records: registry, gradebook, hub groups and users ...", flush=True)
        out["records"] = await check_records(args, targets)
        return out


def render(report: dict) -> str:
    s = report["scenarios"]
    p = report["parameters"]
    via = "the hub's own server" if p["direct"] else "the proxy"
    lines = [
        "Login part of an LTI 1.3 launch (login initiation + callback, no spawn) with course "
        f"provisioning, ms; via {via}.",
        "Baseline: the same launches on a stack with provision_courses = False, same run.",
        "",
    ]
    a = s["first_instructor_launch"]
    titles = {
        "first_instructor_launch": (
            f"A. First instructor launch: course creation ({a['activities']} new activities, "
            "one at a time)"
        ),
        "students_first": (
            f"B1. {p['students']} students, first launch, arrivals over {p['window']:g} s"
        ),
        "students_again": f"B2. The same {p['students']} students again (existing members)",
    }
    for key, title in titles.items():
        sc = s[key]
        lines += launch_table(title, sc, STACKS, RATIO_KEY, RATIO_LABEL)
        if "peak_in_flight" in sc[PROVISIONING]:
            lines.append(
                "  peak launches in flight / drain after last arrival (s): "
                + ", ".join(
                    f"{n} {sc[n]['peak_in_flight']} / {sc[n]['drain_s']:.2f}" for n in STACKS
                )
            )
        if "gradebook_unchanged" in sc:
            unchanged = "yes" if sc["gradebook_unchanged"] else "NO"
            lines.append(f"  gradebook file untouched during this round: {unchanged}")
        lines.append("")

    r = report["records"]
    lines.append(
        f"Records after the run (course {r['course_id']}; each student exactly once, "
        "lms_user_id = sub):"
    )
    for key, label in (
        ("registry_members", "registry members (learners)"),
        ("gradebook_students", "nbgrader gradebook students"),
        ("hub_group", f"hub group {r['hub_group']['group']}"),
    ):
        c = r[key]
        lines.append(
            f"  {label:44} {c['present']:>4}/{c['expected']:<4} missing {len(c['missing'])}, "
            f"duplicated {len(c['duplicated'])}, wrong lms_user_id "
            f"{len(c['wrong_lms_user_id'])}, unexpected {len(c['unexpected'])}"
        )
    for name, c in r["hub_users"].items():
        lines.append(
            f"  {'hub users (' + name + ')':44} {c['present']:>4}/{c['expected']:<4} "
            f"missing {len(c['missing'])}"
        )
    lines.append(
        f"  {'courses of A complete (registry + disk)':44} "
        f"{r['courses']['complete']:>4}/{r['courses']['expected']:<4} "
        f"grader accounts {r['grader_accounts']['present']}/{r['grader_accounts']['expected']}, "
        f"staff groups {r['staff_groups']['ok']}/{r['staff_groups']['expected']}"
    )
    lines.append(f"  zero lost or duplicated records: {'yes' if r['ok'] else 'NO'}")
    if "profile" in report:
        prof = report["profile"]
        lines += [
            "",
            f"Where the provisioning hub's CPU went, ms per launch (py-spy, {PROFILE_RATE} Hz, "
            "inclusive; lower bounds):",
            f"  {'':46}" + "".join(f"{k:>10}" for k in ("A", "B1", "B2")),
        ]
        for label in PROFILE_FOCUS:
            values = [prof[key]["ms_per_launch"][label] for key in titles]
            lines.append(f"  {label:46}" + "".join(f"{v:>10.1f}" for v in values))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time the login part of LTI 1.3 launches with course provisioning "
        "(course creation, student enrolment) against a plain LTI login, each on its own "
        "demo stack on 127.0.0.1, and check that no record is lost."
    )
    p.add_argument(
        "--activities",
        type=int,
        default=20,
        help="new activities, each launched once by its own instructor (scenario A)",
    )
    p.add_argument("--students", type=int, default=200, help="distinct students (subs 5000..) in B")
    p.add_argument(
        "--window", type=float, default=60.0, help="seconds over which the students arrive"
    )
    p.add_argument("--seed", type=int, default=3, help="seed of the arrival schedule")
    p.add_argument(
        "--direct",
        action="store_true",
        help="send launches straight to the hub's own server instead of through the proxy",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: 2 activities, 10 students over 2 s (sizes given as flags "
        "still apply)",
    )
    p.add_argument(
        "--scenario-timeout",
        type=float,
        default=300,
        help="seconds after the last arrival at which a round of launches is abandoned",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the provisioning hub with py-spy during each scenario and write its "
        "stacks (raw format, one file per scenario) into DIR; the timings of such a run "
        "carry the sampling's overhead",
    )
    add_output_arguments(p, "the stacks' state and logs", "a launch failed or a record was lost")
    args = parse_sizes(p, argv, QUICK)
    for name in ("activities", "students"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be 1 or more")
    if args.window <= 0:
        p.error("--window must be more than 0 seconds")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_traffic_local()

    workdir = work_directory(args.workdir, "ananke-bench-provision-")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = report_header("lti13-launch-provisioning", args, "nbgrader")
    report["stacks"] = {
        PROVISIONING: "shipped configuration (course provisioning on)",
        BASELINE: BASELINE_CONFIG,
    }
    try:
        report.update(asyncio.run(run(args, workdir)))
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark aborted: {exc} (logs in {workdir})", file=sys.stderr)
        return 2
    report["duration_s"] = round(time.monotonic() - started, 1)

    failed = sum(sc[n]["failed"] for sc in report["scenarios"].values() for n in STACKS)
    report["all_launches_ok"] = failed == 0
    report["records_ok"] = report["records"]["ok"]
    publish(report, render(report), args)
    if args.profile:
        print(f"py-spy stacks of the provisioning hub in {args.profile}")
    problems = []
    if failed or not report["records_ok"]:
        problems = [
            f"{name} / {n}: {error}"
            for name, sc in report["scenarios"].items()
            for n in STACKS
            for error in sc[n]["errors"]
        ]
        if failed:
            problems.append(f"{failed} launch(es) failed")
        if not report["records_ok"]:
            problems.append("records lost or duplicated: see 'records' in the output")
    return finish(args, workdir, problems, "stacks' logs")


if __name__ == "__main__":
    sys.exit(main())
