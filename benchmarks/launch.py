"""Benchmark: the login part of an LTI 1.3 launch, upstream ltiauthenticator vs Ananke's.

    .venv/bin/python benchmarks/launch.py [--json results.json] [--quick]

Both authenticators run in the same run, each in its own demo stack (built-in LMS,
JupyterHub with its proxy, Kore) on 127.0.0.1; the upstream numbers are the baseline.
See benchmarks/README.md for what each scenario measures.
"""

import argparse
import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import httpx
from hub_log import HubLog
from report import (
    AUTHENTICATORS,
    add_output_arguments,
    finish,
    keep_traffic_local,
    launch_stats,
    launch_table,
    parse_sizes,
    publish,
    ratio,
    report_header,
    slow_table,
    summary,
    work_directory,
)
from virtual_user import LaunchDriver, LaunchResult, bench_user

from ananke_hub.testlms.demo import DemoStack

UPSTREAM_CLASS = "ltiauthenticator.lti13.auth.LTI13Authenticator"
OURS_CLASS = "ananke_hub.auth.AnankeLTI13Authenticator"  # the shipped config's "ananke-lti13"
AUTHENTICATOR_CLASSES = {"upstream": UPSTREAM_CLASS, "ours": OURS_CLASS}
#: Sizes of --quick: a smoke test of every scenario, not a measurement.
QUICK = dict(users=2, sequential=2, concurrency=2, rounds=1, slow_launches=2, jwks_delay=0.2)


# --- stacks ---------------------------------------------------------------------------------


def upstream_config(stack: DemoStack) -> dict:
    """Plain ltiauthenticator, registered with the demo LMS: the baseline."""
    reg = stack.registration()
    client_ids = reg["client_id"]
    client_ids = [client_ids] if isinstance(client_ids, str) else list(client_ids)
    return {
        "JupyterHub": {"authenticator_class": UPSTREAM_CLASS},
        "LTI13Authenticator": {
            "issuer": reg["issuer"],
            "client_id": client_ids,
            "authorize_url": reg["authorize_url"],
            "jwks_endpoint": reg["jwks_url"],
            "username_key": "sub",
        },
        # Upstream returns no groups or roles for the hub to manage.
        "Authenticator": {"allow_all": True, "manage_groups": False, "manage_roles": False},
    }


#: Set by --no-courses: ours as a plain LTI login, without course provisioning.
OURS_LOGIN_ONLY = {"AnankeLTI13Authenticator": {"provision_courses": False}}


def make_stack(name: str, root: Path, platform_args=(), ours_config=None) -> DemoStack:
    stack = DemoStack(root / name, platform_args=platform_args)
    # registration() needs the platform's port, chosen by the constructor: set after it.
    if name == "upstream":
        stack.extra_config = upstream_config(stack)
    elif ours_config:
        stack.extra_config = ours_config
    return stack  # otherwise "ours" is the shipped config as it is


async def start_stacks(exits: AsyncExitStack, stacks: list[DemoStack]) -> None:
    for stack in stacks:
        exits.push_async_callback(stack.stop)
    await asyncio.gather(*(stack.start() for stack in stacks))


def jwks_fetches(stack: DemoStack) -> int:
    """How often the built-in LMS served /jwks so far (it logs one line per request)."""
    log = stack.log_dir / "platform.log"
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "GET /jwks" in line)


# --- scenarios ------------------------------------------------------------------------------


async def sequential(
    drivers: dict[str, LaunchDriver], launches: int, users: int
) -> dict[str, list[LaunchResult]]:
    """``launches`` launches one after the other on each stack, each with a fresh cookie jar.

    The stacks take turns launch by launch (who goes first alternates), so a machine that
    gets busier or quieter during the run affects both alike.
    """
    results: dict[str, list[LaunchResult]] = {name: [] for name in drivers}
    names = list(drivers)
    for i in range(launches):
        for name in names if i % 2 == 0 else names[::-1]:
            async with drivers[name].new_client() as client:
                results[name].append(await drivers[name].launch(client, bench_user(i % users)))
    return results


async def simultaneous(
    driver: LaunchDriver, count: int, timeout: float
) -> tuple[list[LaunchResult], float]:
    """``count`` distinct users launching at the same moment; returns results and wall time."""
    clients = [driver.new_client() for _ in range(count)]  # built before the clock starts
    go = asyncio.Event()

    async def one(i: int, client: httpx.AsyncClient) -> LaunchResult:
        await go.wait()
        return await driver.launch(client, bench_user(i))

    try:
        tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(clients)]
        await asyncio.sleep(0)  # every task waits at the start line
        started = time.perf_counter()
        go.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        return results, time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()


async def probe_health(
    driver: LaunchDriver, url: str, stop: asyncio.Event, interval: float, timeout: float
) -> dict:
    """GET ``url`` one request after the other until ``stop``; a long wait means the
    server (or something in front of it) was busy meanwhile."""
    samples: list[float] = []
    failures = 0
    async with driver.new_client() as client:
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = (await client.get(url)).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                samples.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return {
        "url": url,
        **summary(samples),
        "failures": failures,
        "samples_ms": [round(x, 2) for x in samples],
    }


async def with_health_probes(
    driver: LaunchDriver, launches: int, interval: float, timeout: float
) -> dict:
    """Simultaneous launches while two probes ask for /hub/health: one at the hub's own
    server (is its event loop free?), one through the proxy (what users see)."""
    stop = asyncio.Event()
    probes = {
        "hub": driver.hub_server_url + "/hub/health",
        "proxy": driver.proxy_url + "/hub/health",
    }
    tasks = {
        name: asyncio.create_task(probe_health(driver, url, stop, interval, timeout))
        for name, url in probes.items()
    }
    try:
        results, wall = await simultaneous(driver, launches, timeout)
    finally:
        stop.set()
        await asyncio.gather(*tasks.values())
    return {
        "results": results,
        "wall_s": round(wall, 3),
        "probes": {name: task.result() for name, task in tasks.items()},
    }


def compare(description: str, per_auth: dict, **extra) -> dict:
    scenario = {"description": description, **extra, **per_auth}
    up, ours = per_auth["upstream"]["login_ms"], per_auth["ours"]["login_ms"]
    scenario["ratio_upstream_over_ours"] = {
        q: ratio(up[q], ours[q]) for q in ("p50", "p95", "max", "mean")
    }
    return scenario


#: Seconds to wait after a scenario before reading the hub's CPU time: work a launch
#: leaves for after its login (ours: the gradebook enrolment, batched over
#: c.CourseProvisioner.enrolment_batch_window, 1 s) is counted with its scenario.
CPU_SETTLE_S = 1.5


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Target:
    """One authenticator's stack, with its launch driver, its hub's log and CPU time."""

    def __init__(self, name: str, stack: DemoStack, users: int, direct: bool):
        self.name = name
        self.stack = stack
        self.driver = LaunchDriver(stack, users, direct=direct)
        self.hub_log = HubLog(stack.log_dir / "jupyterhub.log")
        self.hub_pid = stack.processes["jupyterhub"].pid
        self._cpu_mark = 0.0

    def mark(self) -> None:
        self.hub_log.mark()
        self._cpu_mark = process_cpu_s(self.hub_pid)

    async def stats(self, results: list[LaunchResult], settle: bool = True) -> dict:
        """Stats of ``results``, with the hub's times logged since :meth:`mark` and the
        hub process's CPU time per launch since then."""
        hub_times = await self.hub_log.since_mark(sum(r.ok for r in results))
        if settle:
            await asyncio.sleep(CPU_SETTLE_S)
        stats = launch_stats(results, hub_times)
        cpu_ms = (process_cpu_s(self.hub_pid) - self._cpu_mark) * 1000
        stats["hub_cpu_ms_per_launch"] = round(cpu_ms / max(1, len(results)), 1)
        return stats


async def all_stats(targets: dict[str, Target], results: dict) -> dict:
    """Every target's stats of its ``results``, read at the same time."""
    stats = await asyncio.gather(*(t.stats(results[n]) for n, t in targets.items()))
    return dict(zip(targets, stats, strict=True))


# --- the run --------------------------------------------------------------------------------


async def fast_scenarios(args, targets: dict[str, Target], users: int) -> dict:
    scenarios = {}
    print(f"First logins of {users} users, one at a time ...", flush=True)
    drivers = {name: t.driver for name, t in targets.items()}
    for t in targets.values():
        t.mark()
    results = await sequential(drivers, users, users)
    per_auth = await all_stats(targets, results)
    scenarios["first_login"] = compare(
        f"{users} users new to the hub log in one after the other (concurrency 1); "
        "also the warm-up: the timed scenarios below are logins of existing users. "
        "Ours fetches the platform keyset on the first launch here.",
        per_auth,
        concurrency=1,
    )

    print(f"Sequential: {args.sequential} launches ...", flush=True)
    for t in targets.values():
        t.mark()
    results = await sequential(drivers, args.sequential, users)
    per_auth = await all_stats(targets, results)
    scenarios["sequential"] = compare(
        f"{args.sequential} launches one after the other (concurrency 1), each with a "
        "fresh cookie jar, by users who logged in before.",
        per_auth,
        concurrency=1,
    )

    print(
        f"Concurrent: {args.rounds} round(s) of {args.concurrency} simultaneous launches ...",
        flush=True,
    )
    results: dict = {n: [] for n in targets}
    walls: dict = {n: [] for n in targets}
    for t in targets.values():
        t.mark()  # one log per hub: rounds of the other hub do not show in it
    for round_no in range(args.rounds):
        # Alternate who goes first, so a drift of the machine hits both alike.
        order = AUTHENTICATORS if round_no % 2 == 0 else AUTHENTICATORS[::-1]
        for name in order:
            got, wall = await simultaneous(
                targets[name].driver, args.concurrency, args.scenario_timeout
            )
            results[name].extend(got)
            walls[name].append(round(wall, 3))
    per_auth = {}
    for name, t in targets.items():
        stats = await t.stats(results[name])
        stats["round_wall_s"] = walls[name]
        stats["throughput_per_s"] = round(len(results[name]) / sum(walls[name]), 1)
        per_auth[name] = stats
    scenarios["concurrent"] = compare(
        f"{args.rounds} round(s) of {args.concurrency} distinct users launching at the "
        "same moment, fresh cookie jars every round (the same users log in again).",
        per_auth,
        concurrency=args.concurrency,
        rounds=args.rounds,
    )
    return scenarios


async def slow_scenario(args, targets: dict[str, Target]) -> dict:
    per_auth = {}
    for name, t in targets.items():
        before = jwks_fetches(t.stack)
        t.mark()
        probed = await with_health_probes(
            t.driver, args.slow_launches, args.probe_interval, args.scenario_timeout
        )
        stats = await t.stats(probed.pop("results"))
        stats.update(probed)
        stats["jwks_fetches"] = jwks_fetches(t.stack) - before
        per_auth[name] = stats
    scenario = compare(
        f"The LMS's /jwks answers after {args.jwks_delay:g} s. On a fresh stack (cold "
        f"keyset cache for both), {args.slow_launches} users launch at the same moment "
        "while two probes request /hub/health one after the other (pause "
        f"{args.probe_interval:g} s): 'hub' at the hub's own server, 'proxy' through the "
        "proxy. Upstream fetches the keyset on every launch, blocking the hub; ours fetches "
        "it once, without blocking, for all launches in flight, then serves it from its cache.",
        per_auth,
        jwks_delay_s=args.jwks_delay,
        concurrency=args.slow_launches,
        keyset_cache="cold at the start for both (fresh stacks)",
    )
    scenario["probe_ratio_upstream_over_ours"] = {
        probe: {
            q: ratio(per_auth["upstream"]["probes"][probe][q], per_auth["ours"]["probes"][probe][q])
            for q in ("p50", "p95", "max")
        }
        for probe in ("hub", "proxy")
    }
    return scenario


async def run(args, workdir: Path) -> dict:
    users = max(args.users, args.concurrency, 0 if args.skip_slow else args.slow_launches)
    fetches = {}
    print("Starting two demo stacks (upstream, ours) ...", flush=True)
    async with AsyncExitStack() as exits:
        ours_config = OURS_LOGIN_ONLY if args.no_courses else None
        stacks = {
            name: make_stack(name, workdir / "fast", ours_config=ours_config)
            for name in AUTHENTICATORS
        }
        await start_stacks(exits, list(stacks.values()))
        targets = {n: Target(n, s, users, args.direct) for n, s in stacks.items()}
        scenarios = await fast_scenarios(args, targets, users)
        fetches["fast_stacks"] = {n: jwks_fetches(s) for n, s in stacks.items()}

    if not args.skip_slow:
        print(
            f"Slow LMS keyset: fresh stacks, /jwks answers after {args.jwks_delay:g} s, "
            f"{args.slow_launches} simultaneous launches with /hub/health probes ...",
            flush=True,
        )
        async with AsyncExitStack() as exits:
            platform_args = [f"--jwks-delay={args.jwks_delay:g}"]
            stacks = {
                n: make_stack(n, workdir / "slow", platform_args, ours_config)
                for n in AUTHENTICATORS
            }
            await start_stacks(exits, list(stacks.values()))
            targets = {n: Target(n, s, users, args.direct) for n, s in stacks.items()}
            scenarios["slow_keyset"] = await slow_scenario(args, targets)

    return {"scenarios": scenarios, "platform_jwks_fetches": fetches}


def render(report: dict) -> str:
    s = report["scenarios"]
    via = "the hub's own server" if report["parameters"]["direct"] else "the proxy"
    lines = [
        f"Login part of an LTI 1.3 launch (login initiation + callback, no spawn), ms; via {via}.",
        "Baseline: upstream ltiauthenticator measured in the same run.",
        "",
    ]
    conc = s["concurrent"]
    for key, title in (
        (
            "first_login",
            f"First login, concurrency 1 ({s['first_login']['upstream']['launches']} new users)",
        ),
        ("sequential", f"Concurrency 1 ({s['sequential']['upstream']['launches']} launches)"),
        ("concurrent", f"Concurrency {conc['concurrency']} ({conc['rounds']} round(s))"),
    ):
        lines += launch_table(title, s[key])
        lines.append(
            "  hub CPU per launch (ms, the hub process, incl. work after the login): "
            + ", ".join(f"{n} {s[key][n].get('hub_cpu_ms_per_launch', '-')}" for n in AUTHENTICATORS)
        )
        lines.append("")
    if "slow_keyset" in s:
        slow = s["slow_keyset"]
        lines += slow_table(
            f"Slow LMS keyset (/jwks after {slow['jwks_delay_s']:g} s), "
            f"{slow['concurrency']} simultaneous launches, keyset cache cold at the start "
            "for both; /hub/health probe latency, ms",
            slow,
        )
        lines.append(
            "  platform /jwks requests during the scenario: "
            + ", ".join(f"{n} {slow[n]['jwks_fetches']}" for n in AUTHENTICATORS)
        )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time the login part of LTI 1.3 launches: upstream ltiauthenticator "
        "vs Ananke's authenticator, each against its own demo stack on 127.0.0.1."
    )
    p.add_argument("--users", type=int, default=50, help="distinct virtual users (subs 1000..)")
    p.add_argument("--sequential", type=int, default=30, help="launches at concurrency 1")
    p.add_argument("--concurrency", type=int, default=50, help="simultaneous launches per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds of simultaneous launches")
    p.add_argument(
        "--slow-launches", type=int, default=10, help="simultaneous launches against the slow LMS"
    )
    p.add_argument(
        "--jwks-delay", type=float, default=1.0, help="seconds the slow LMS's /jwks waits"
    )
    p.add_argument(
        "--probe-interval", type=float, default=0.05, help="seconds between health probes"
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="send launches straight to the hub's own server instead of through the proxy",
    )
    p.add_argument("--skip-slow", action="store_true", help="leave out the slow-keyset scenario")
    p.add_argument(
        "--no-courses",
        action="store_true",
        help="ours as a plain LTI login (provision_courses False), the same work as upstream; "
        "by default ours also creates each launch's course and enrols the student",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: 2 users, 2 launches, concurrency 2, 1 round, 2 slow launches "
        "against a 0.2 s keyset (sizes given as flags still apply)",
    )
    p.add_argument(
        "--scenario-timeout",
        type=float,
        default=300,
        help="seconds after which a round of launches is abandoned",
    )
    add_output_arguments(p, "the stacks' state and logs", "a launch failed")
    args = parse_sizes(p, argv, QUICK)
    for name in ("users", "sequential", "concurrency", "rounds", "slow_launches"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_traffic_local()

    workdir = work_directory(args.workdir, "ananke-bench-")
    started = time.monotonic()
    report = report_header("lti13-launch-login", args)
    report["authenticators"] = AUTHENTICATOR_CLASSES
    try:
        report.update(asyncio.run(run(args, workdir)))
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark aborted: {exc} (logs in {workdir})", file=sys.stderr)
        return 2
    report["duration_s"] = round(time.monotonic() - started, 1)

    failed = sum(sc[n]["failed"] for sc in report["scenarios"].values() for n in AUTHENTICATORS)
    report["all_launches_ok"] = failed == 0
    publish(report, render(report), args)
    problems = []
    if failed:
        problems = [
            f"{name} / {n}: {error}"
            for name, sc in report["scenarios"].items()
            for n in AUTHENTICATORS
            for error in sc[n]["errors"]
        ]
        problems.append(f"{failed} launch(es) failed")
    return finish(args, workdir, problems, "stacks' logs")


if __name__ == "__main__":
    sys.exit(main())
