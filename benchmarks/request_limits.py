"""Benchmark: the hub's memory under oversized posts to the LTI login routes.

    .venv/bin/python benchmarks/request_limits.py [--requests 8 --size-mb 50] [--json out.json]

Anyone may post to ``/hub/lti13/oauth_login`` and ``/hub/lti13/oauth_callback`` without
a cookie. Two stacks run side by side (built-in LMS, JupyterHub with its proxy and
Kore, on free ports): ours as shipped, and in the same run the baseline, upstream
``LTI13Authenticator`` (whose handlers let tornado buffer a body up to its 100 MB
default). Each gets ``--requests`` posts of ``--size-mb`` MB (``--parallel`` at a
time, alternating the two routes, through the proxy as an attacker would send them),
then ordinary login initiations still have to work. Reported per stack: the hub's
resident memory (VmRSS) before and after, its growth, the proxy's, the answers'
status codes, and the ratio of the hub's growth upstream/ours. Ours must stay within
``--bound-mb`` (exit code 1 otherwise).

See benchmarks/README.md.
"""

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from launch import make_stack, start_stacks
from report import (
    add_output_arguments,
    finish,
    keep_traffic_local,
    parse_sizes,
    publish,
    report_header,
    work_directory,
)

from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, DemoStack

STACKS = ("upstream", "ours")
ROUTES = ("oauth_login", "oauth_callback")
#: Sizes of --quick: a smoke test of every step, not a measurement.
QUICK = dict(requests=2, size_mb=1, parallel=2)
MB = 1 << 20


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proxy_pid(stack: DemoStack) -> int:
    return int((stack.layout.root / "jupyterhub-proxy.pid").read_text().strip())


async def login_initiations(stack: DemoStack, n: int) -> list[int]:
    """``n`` ordinary login initiations (a few hundred bytes each): their status codes."""
    data = {
        "iss": stack.platform_url,
        "login_hint": "1000",
        "target_link_uri": f"{stack.hub_url}/hub/",
        "client_id": DEMO_CLIENT_ID,
        "lti_deployment_id": DEMO_DEPLOYMENT_ID,
    }
    # A top-level window (Fetch Metadata): the login starts at once with its redirect.
    async with httpx.AsyncClient(timeout=60, headers={"Sec-Fetch-Dest": "document"}) as http:
        return [
            (await http.post(f"{stack.hub_url}/hub/lti13/oauth_login", data=data)).status_code
            for _ in range(n)
        ]


async def oversized_posts(stack: DemoStack, args, body: bytes) -> list[str]:
    """The oversized posts; per request its status code, or the error that ended it."""
    semaphore = asyncio.Semaphore(args.parallel)

    base = f"http://127.0.0.1:{stack.ports.hub_api}" if args.direct else stack.hub_url

    async def one(i: int) -> str:
        route = ROUTES[i % len(ROUTES)]
        async with semaphore, httpx.AsyncClient(timeout=args.request_timeout) as http:
            try:
                resp = await http.post(
                    f"{base}/hub/lti13/{route}",
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                return str(resp.status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

    return list(await asyncio.gather(*(one(i) for i in range(args.requests))))


async def measure(name: str, stack: DemoStack, args, body: bytes) -> dict:
    hub = stack.processes["jupyterhub"].pid
    proxy = proxy_pid(stack)
    warm = await login_initiations(stack, 5)  # the hub's first requests allocate too
    before = {"hub": rss_mb(hub), "proxy": rss_mb(proxy)}
    started = time.monotonic()
    statuses = await oversized_posts(stack, args, body)
    wall = time.monotonic() - started
    await asyncio.sleep(1)  # let the processes free what they will
    after = {"hub": rss_mb(hub), "proxy": rss_mb(proxy)}
    still = await login_initiations(stack, 5)
    log = (stack.log_dir / "jupyterhub.log").read_text(errors="replace")
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return {
        "rss_before_mb": before,
        "rss_after_mb": after,
        "hub_growth_mb": round(after["hub"] - before["hub"], 1),
        "proxy_growth_mb": round(after["proxy"] - before["proxy"], 1),
        "answers": counts,
        # What the hub itself answered (the proxy answers 503 when the hub closes a
        # connection whose body it still sends).
        "hub_413": len(re.findall(r"\] 413 POST /hub/lti13/oauth_\w+ \(\S*@", log)),
        "wall_s": round(wall, 2),
        "logins_ok_after": sum(s == 302 for s in warm + still) == len(warm) + len(still),
    }


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the hub's proxy and services)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"PPid:\t{pid}\n" in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def stop_leftovers(pids: list[int]) -> None:
    """A hub still busy with a big form when it is stopped is killed; its proxy and
    culler, in sessions of their own, would outlive it."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


async def run(args, workdir: Path) -> dict:
    body = b"a" * (args.size_mb * MB)
    leftovers: list[int] = []
    try:
        async with AsyncExitStack() as exits:
            stacks = {name: make_stack(name, workdir) for name in STACKS}
            await start_stacks(exits, list(stacks.values()))
            for stack in stacks.values():
                leftovers += children(stack.processes["jupyterhub"].pid)
            results = {}
            for name, stack in stacks.items():  # one after the other: the CPU is shared
                results[name] = await measure(name, stack, args, body)
    finally:
        stop_leftovers(leftovers)
    up, ours = results["upstream"]["hub_growth_mb"], results["ours"]["hub_growth_mb"]
    return {
        "stacks": results,
        # Growth below 1 MB counts as 1 MB: the ratio says how much more upstream keeps.
        "hub_growth_ratio_upstream_over_ours": round(max(up, 1.0) / max(ours, 1.0), 1),
    }


def render(report: dict) -> str:
    p = report["parameters"]
    lines = [
        f"{p['requests']} posts of {p['size_mb']} MB to the LTI login routes, "
        f"{p['parallel']} at a time, {'to the hub directly' if p['direct'] else 'through the proxy'}",
        f"  {'':9} {'hub before':>10} {'after':>7} {'growth':>7}   {'proxy before':>12} "
        f"{'after':>7}   answers",
    ]
    for name in STACKS:
        s = report["stacks"][name]
        answers = ", ".join(f"{k} x{v}" for k, v in sorted(s["answers"].items()))
        lines.append(
            f"  {name:9} {s['rss_before_mb']['hub']:>10} {s['rss_after_mb']['hub']:>7} "
            f"{s['hub_growth_mb']:>+7} {s['rss_before_mb']['proxy']:>14} "
            f"{s['rss_after_mb']['proxy']:>7}   {answers}"
        )
    lines.append(
        f"  hub RSS growth, ratio upstream/ours: {report['hub_growth_ratio_upstream_over_ours']}x"
        f" (MB; ours must stay within {p['bound_mb']} MB)"
    )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=8, help="oversized posts per stack (8)")
    p.add_argument("--size-mb", type=int, default=50, help="size of each post in MB (50)")
    p.add_argument("--parallel", type=int, default=4, help="posts at a time (4)")
    p.add_argument(
        "--bound-mb",
        type=float,
        default=20,
        help="how much ours' hub may grow (MB) before the run counts as failed (20)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=120,
        help="seconds a post may take before it counts as ReadTimeout (120): upstream's hub "
        "keeps its CPU busy for a long time parsing a big form",
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="post to the hub's own server instead of through the proxy (which reads a whole "
        "body, up to tornado's 100 MB, before it forwards it)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: 2 posts of 1 MB, 2 at a time (flags given still apply)",
    )
    add_output_arguments(p, "the stacks' state and logs", "ours grew past the bound")
    args = parse_sizes(p, argv, QUICK)
    for name in ("requests", "size_mb", "parallel"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_traffic_local()
    workdir = work_directory(args.workdir, "ananke-bench-limits-")
    started = time.monotonic()
    report = report_header("lti13-request-limits", args)
    try:
        report.update(asyncio.run(run(args, workdir)))
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark aborted: {exc} (logs in {workdir})", file=sys.stderr)
        return 2
    report["duration_s"] = round(time.monotonic() - started, 1)
    ours = report["stacks"]["ours"]
    problems = []
    if ours["hub_growth_mb"] > args.bound_mb:
        problems.append(f"ours' hub grew {ours['hub_growth_mb']} MB (bound {args.bound_mb})")
    if ours["hub_413"] != args.requests:
        problems.append(
            f"ours' hub answered 413 to {ours['hub_413']} of {args.requests} oversized posts"
        )
    if not ours["logins_ok_after"]:
        problems.append("ours' login initiations failed after the oversized posts")
    report["all_ok"] = not problems
    publish(report, render(report), args)
    return finish(args, workdir, problems, "stacks' logs")


if __name__ == "__main__":
    sys.exit(main())
