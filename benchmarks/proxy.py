"""The hub's proxy: the PyPI port we ship against the JupyterHub project's own
configurable-http-proxy (Node.js, from npm), side by side in one run.

Both forward to the same small HTTP server (a separate process) with the same flags
(``--default-target``, no API calls in the timed part). One client process sends
``--requests`` GETs at ``--concurrency`` through each proxy, and directly to the server
as a reference, for a small answer (1 KB, like the hub's pages and API) and a large one
(``--large`` KB, like a notebook download). Reported: requests per second, latency
percentiles, and the npm proxy's throughput as a multiple of the port's (ratios, not
absolute numbers, are what carry over between machines).

    .venv/bin/python benchmarks/proxy.py                    # installs the npm proxy if needed
    .venv/bin/python benchmarks/proxy.py --quick --json proxy.json
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from report import keep_traffic_local, parse_sizes, percentile, report_header, work_directory

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ananke_hub.testlms.demo import free_port  # noqa: E402

CHP_VERSION = "4"


def serve_backend(port: int) -> None:
    """The upstream both proxies forward to: fixed bodies, no work per request."""
    from tornado import ioloop, web

    bodies = {}

    class Body(web.RequestHandler):
        def get(self, kb):
            kb = int(kb)
            if kb not in bodies:
                bodies[kb] = b"x" * (1024 * kb)
            self.set_header("Content-Type", "application/octet-stream")
            self.write(bodies[kb])

    web.Application([(r"/body/(\d+)", Body)]).listen(port, "127.0.0.1")
    ioloop.IOLoop.current().start()


def npm_proxy(workdir: Path, given: str | None) -> Path:
    """The npm configurable-http-proxy: the one given, or installed into the work dir."""
    if given:
        return Path(given)
    prefix = workdir / "npm"
    command = prefix / "node_modules" / ".bin" / "configurable-http-proxy"
    if not command.exists():
        if not shutil.which("npm"):
            raise SystemExit("npm not found: install Node.js (or give --npm-proxy PATH).")
        print(f"installing configurable-http-proxy@{CHP_VERSION} from npm into {prefix} ...")
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(prefix),
                f"configurable-http-proxy@{CHP_VERSION}",
            ],
            check=True,
            capture_output=True,
        )
    return command


async def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def measure(url: str, requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    failures = 0
    queue = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker():
            nonlocal failures
            for _ in queue:
                start = time.perf_counter()
                response = await client.get(url)
                await response.aread()
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200

        await client.get(url)  # warm up the connection and the proxy's route
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "failures": failures,
        "seconds": elapsed,
        "rps": requests / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
    }


async def run(args) -> dict:
    workdir = work_directory(args.workdir, "ananke-proxy-bench-")
    chp = npm_proxy(workdir, args.npm_proxy)
    backend_port = free_port()
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": "benchmark"}
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--backend", str(backend_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    proxies = {
        "pypi": [sys.executable, "-m", "ananke_hub.proxy"],
        "npm": [str(chp)],
    }
    ports = {}
    try:
        for name, command in proxies.items():
            port, api_port = free_port(), free_port()
            log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
            processes.append(
                subprocess.Popen(
                    [
                        *command,
                        "--ip",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--api-ip",
                        "127.0.0.1",
                        "--api-port",
                        str(api_port),
                        "--default-target",
                        f"http://127.0.0.1:{backend_port}",
                        "--log-level",
                        "error",
                    ],
                    env=env,
                    stdout=log,
                    stderr=log,
                    cwd=workdir,
                )
            )
            ports[name] = port
        await wait_port(backend_port)
        for port in ports.values():
            await wait_port(port)
        results = {}
        for size in (1, args.large):
            row = {}
            targets = {"direct": backend_port, **ports}
            for _ in range(args.rounds):  # interleaved rounds: a busy moment hits all
                for name, port in targets.items():
                    url = f"http://127.0.0.1:{port}/body/{size}"
                    got = await measure(url, args.requests, args.concurrency)
                    row.setdefault(name, []).append(got)
            results[f"{size}KB"] = {
                name: max(rounds, key=lambda r: r["rps"])
                | {"rounds_rps": [r["rps"] for r in rounds]}
                for name, rounds in row.items()
            }
        return results
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="best of N interleaved rounds")
    parser.add_argument("--large", type=int, default=1024, help="KB of the large answer")
    parser.add_argument("--npm-proxy", help="path of the npm configurable-http-proxy command")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--quick", action="store_true", help="smoke sizes (flags still win)")
    args = parse_sizes(parser, argv, {"requests": 200, "rounds": 1, "large": 256})
    if args.backend:
        serve_backend(args.backend)
        return 0
    keep_traffic_local()
    results = asyncio.run(run(args))
    report = report_header("proxy", args, "configurable-http-proxy") | {"results": results}
    failed = False
    print(f"{'answer':>8} {'proxy':>7} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for size, row in results.items():
        for name, r in row.items():
            failed |= r["failures"] > 0
            print(f"{size:>8} {name:>7} {r['rps']:9.0f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f}")
        ratio = row["npm"]["rps"] / row["pypi"]["rps"]
        report.setdefault("ratios", {})[size] = ratio
        print(f"{size:>8} npm/pypi throughput: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
