"""Summaries of timings and the table the launch benchmark prints."""

import math

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


def ratio(upstream: float | None, ours: float | None) -> float | None:
    if not upstream or not ours:
        return None
    return round(upstream / ours, 2)


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def launch_table(title: str, scenario: dict) -> list[str]:
    """Rows of one launch scenario, per authenticator: the login part as the client saw it
    (p50/p95/max, and the p50 of its two steps), and the hub's own callback handler time."""
    lines = [title]
    lines.append(
        f"  {'':9} {'ok/n':>7} {'login p50':>10} {'p95':>7} {'max':>7} {'init p50':>9} "
        f"{'callb p50':>10} {'| hub callb p50':>15} {'p95':>6}"
    )
    for name in AUTHENTICATORS:
        s = scenario[name]
        login, init, cb = s["login_ms"], s["initiation_ms"], s["callback_ms"]
        hub_cb = s["hub_handler_ms"]["callback"]
        lines.append(
            f"  {name:9} {s['ok']:>3}/{s['launches']:<3} {_fmt(login['p50']):>10} "
            f"{_fmt(login['p95']):>7} {_fmt(login['max']):>7} {_fmt(init['p50']):>9} "
            f"{_fmt(cb['p50']):>10} {_fmt(hub_cb['p50']):>15} {_fmt(hub_cb['p95']):>6}"
        )
    r = scenario["ratio_upstream_over_ours"]
    lines.append(
        f"  ratio upstream/ours (login): p50 {_fmt(r['p50'], 2)}x, p95 {_fmt(r['p95'], 2)}x"
    )
    if "throughput_per_s" in scenario["upstream"]:
        lines.append(
            "  throughput (launches/s): "
            + ", ".join(f"{n} {_fmt(scenario[n]['throughput_per_s'])}" for n in AUTHENTICATORS)
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
