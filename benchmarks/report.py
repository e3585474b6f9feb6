"""Summaries of timings and the tables the benchmarks print."""

import math
import os
import platform
from importlib.metadata import version

AUTHENTICATORS = ("upstream", "ours")


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between the closest ranks; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict:
    """p50, p95, max and mean of ``values`` (ms), rounded to 0.01 ms."""

    def r(x):
        return None if x is None else round(x, 2)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "max": r(max(values, default=None)),
        "mean": r(sum(values) / len(values)) if values else None,
    }


def launch_stats(results: list, hub_times: dict[str, list[float]]) -> dict:
    """Client-side timings of ``results`` (virtual_user.LaunchResult), and the hub's own
    handler times of the same requests."""
    ok = [r for r in results if r.ok]
    return {
        "launches": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error}),
        "login_ms": summary([r.login_ms for r in ok]),
        "initiation_ms": summary([r.initiation_ms for r in ok]),
        "callback_ms": summary([r.callback_ms for r in ok]),
        "hub_handler_ms": {step: summary(times) for step, times in hub_times.items()},
        "samples": [
            {
                "sub": r.sub,
                "ok": r.ok,
                "initiation_ms": None if r.initiation_ms is None else round(r.initiation_ms, 2),
                "callback_ms": None if r.callback_ms is None else round(r.callback_ms, 2),
            }
            for r in results
        ],
    }


def ratio(upstream: float | None, ours: float | None) -> float | None:
    if not upstream or not ours:
        return None
    return round(upstream / ours, 2)


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def launch_table(
    title: str,
    scenario: dict,
    names: tuple[str, ...] = AUTHENTICATORS,
    ratio_key: str = "ratio_upstream_over_ours",
    ratio_label: str = "ratio upstream/ours (login)",
) -> list[str]:
    """Rows of one launch scenario, per stack in ``names``: the login part as the client saw
    it (p50/p95/max, and the p50 of its two steps), and the hub's own callback handler time."""
    width = max(9, *(len(n) for n in names))
    lines = [title]
    lines.append(
        f"  {'':{width}} {'ok/n':>7} {'login p50':>10} {'p95':>7} {'max':>7} {'init p50':>9} "
        f"{'callb p50':>10} {'| hub callb p50':>15} {'p95':>6}"
    )
    for name in names:
        s = scenario[name]
        login, init, cb = s["login_ms"], s["initiation_ms"], s["callback_ms"]
        hub_cb = s["hub_handler_ms"]["callback"]
        lines.append(
            f"  {name:{width}} {s['ok']:>3}/{s['launches']:<3} {_fmt(login['p50']):>10} "
            f"{_fmt(login['p95']):>7} {_fmt(login['max']):>7} {_fmt(init['p50']):>9} "
            f"{_fmt(cb['p50']):>10} {_fmt(hub_cb['p50']):>15} {_fmt(hub_cb['p95']):>6}"
        )
    r = scenario[ratio_key]
    lines.append(f"  {ratio_label}: p50 {_fmt(r['p50'], 2)}x, p95 {_fmt(r['p95'], 2)}x")
    if "throughput_per_s" in scenario[names[0]]:
        lines.append(
            "  throughput (launches/s): "
            + ", ".join(f"{n} {_fmt(scenario[n]['throughput_per_s'])}" for n in names)
        )
    return lines


def slow_table(title: str, scenario: dict) -> list[str]:
    """Rows of the slow-keyset scenario: both health probes and the launches, per authenticator."""
    lines = [title]
    lines.append(
        f"  {'':9} {'probe':6} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}   "
        f"{'ok/n':>7} {'login p50':>10} {'max':>8} {'wall s':>7}"
    )
    for name in AUTHENTICATORS:
        s = scenario[name]
        login = s["login_ms"]
        for i, probe in enumerate(("hub", "proxy")):
            p = s["probes"][probe]
            row = (
                f"  {name if i == 0 else '':9} {probe:6} {p['n']:>4} {_fmt(p['p50']):>8} "
                f"{_fmt(p['p95']):>8} {_fmt(p['max']):>8}"
            )
            if i == 0:
                row += (
                    f"   {s['ok']:>3}/{s['launches']:<3} {_fmt(login['p50']):>10} "
                    f"{_fmt(login['max']):>8} {_fmt(s['wall_s'], 2):>7}"
                )
            lines.append(row)
    for probe, r in scenario["probe_ratio_upstream_over_ours"].items():
        lines.append(
            f"  /hub/health via {probe}, ratio upstream/ours: p50 {_fmt(r['p50'], 2)}x, "
            f"p95 {_fmt(r['p95'], 2)}x, max {_fmt(r['max'], 2)}x"
        )
    return lines


def environment(*packages: str) -> dict:
    """The machine and the versions that matter for the numbers (plus ``packages``)."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    for key, dist in (
        ("jupyterhub", "jupyterhub"),
        ("ltiauthenticator", "jupyterhub-ltiauthenticator"),
        ("pyjwt", "PyJWT"),
        *((p, p) for p in packages),
    ):
        env[key] = version(dist)
    return env


# --- what every benchmark's command line does first ------------------------------------------


def parse_sizes(parser, argv, quick: dict):
    """Parse ``argv``; with --quick, ``quick`` gives smaller defaults (flags still win)."""
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def keep_traffic_local() -> None:
    """Keep the benchmark's HTTP on 127.0.0.1 whatever proxy variables say (urllib, as
    upstream ltiauthenticator uses it, honours them)."""
    no_proxy = [v for v in (os.environ.get("no_proxy"), "127.0.0.1", "localhost") if v]
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = ",".join(no_proxy)


def work_directory(given, prefix: str):
    """The benchmark's work directory: the one given, or a new temporary one."""
    import tempfile
    from pathlib import Path

    workdir = given or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def report_header(name: str, args, *packages: str) -> dict:
    """The first keys of a benchmark's JSON report: what ran, when, with what."""
    from datetime import UTC, datetime
    from pathlib import Path

    return {
        "benchmark": name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(*packages),
    }


# --- what every benchmark's command line and ending share --------------------------------


def add_output_arguments(parser, workdir_holds: str, kept_when: str) -> None:
    """--json and --workdir, the same in every benchmark."""
    from pathlib import Path

    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument(
        "--workdir",
        type=Path,
        help=f"directory for {workdir_holds} (kept); default: a temporary one, removed "
        f"unless {kept_when}",
    )


def publish(report: dict, text: str, args) -> None:
    """Print the rendered report and its total time; write the JSON file (--json)."""
    import json

    print()
    print(text)
    print(f"Total {report['duration_s']} s.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"All numbers in {args.json}")


def finish(args, workdir, problems: list[str], kept: str) -> int:
    """The exit status: 1 with ``problems`` on stderr and the work directory kept (what
    it holds: ``kept``); else 0, and a temporary work directory removed."""
    import shutil
    import sys

    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{kept} kept in {workdir}", file=sys.stderr)
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
