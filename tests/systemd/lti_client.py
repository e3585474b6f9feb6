"""HTTP client for the systemd tests, run in the container's network namespace.

The container has only its own loopback, so the test drives it with this host program
started through ``nsenter --net`` (see ``SystemdContainer.run_in_netns``). Each
sub-command prints one JSON document on stdout. The API token comes from the
environment (``ANANKE_TEST_TOKEN``), never from the command line::

    lti_client.py wait-http URL [URL ...]
    lti_client.py launch --platform URL --hub URL --link homework 3 4
    lti_client.py request METHOD URL [--json BODY]
    lti_client.py wait-server --hub URL USER --ready|--stopped
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared helpers

from hubtest import wait_for_lab  # noqa: E402
from lti_browser import LTIBrowser  # noqa: E402

TOKEN_ENV = "ANANKE_TEST_TOKEN"


def _headers() -> dict:
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"token {token}"} if token else {}


async def wait_http(urls: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        for url in urls:
            while True:
                try:
                    resp = await client.get(url)
                    if resp.status_code < 400:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")
                await asyncio.sleep(0.25)
    return {"ok": urls}


async def _launch_one(platform: str, hub: str, sub: str, link: str, timeout: float) -> dict:
    async with LTIBrowser(timeout=60) as browser:
        resp = await browser.launch(platform, sub, link)
        user = f"u{sub}"
        lab = await wait_for_lab(browser, hub, user, timeout=timeout)
        return {"user": user, "launch_status": resp.status_code, "lab_status": lab.status_code,
                "lab_url": str(lab.url), "jupyterlab": "JupyterLab" in lab.text}


async def launch(platform: str, hub: str, link: str, subs: list[str], timeout: float) -> dict:
    results = await asyncio.gather(*(_launch_one(platform, hub, s, link, timeout) for s in subs))
    return {r["user"]: r for r in results}


async def request(method: str, url: str, body: str | None) -> dict:
    async with httpx.AsyncClient(timeout=60) as client:
        headers = _headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        resp = await client.request(method, url, headers=headers, content=body)
    try:
        payload = resp.json()
    except ValueError:
        payload = resp.text
    return {"status": resp.status_code, "body": payload}


async def wait_server(hub: str, user: str, ready: bool, timeout: float) -> dict:
    """Poll the hub's user model until the default server is ready (or gone)."""
    deadline = time.monotonic() + timeout
    model = {}
    async with httpx.AsyncClient(timeout=30, headers=_headers()) as client:
        while time.monotonic() < deadline:
            resp = await client.get(f"{hub}/hub/api/users/{user}")
            resp.raise_for_status()
            model = resp.json()
            server = model.get("servers", {}).get("")
            if ready and server and server.get("ready"):
                return model
            if not ready and not server:
                return model
            await asyncio.sleep(0.5)
    raise SystemExit(f"{user}'s server did not become {'ready' if ready else 'stopped'}: {model}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("wait-http")
    p.add_argument("urls", nargs="+")
    p.add_argument("--timeout", type=float, default=90)
    p = sub.add_parser("launch")
    p.add_argument("--platform", required=True)
    p.add_argument("--hub", required=True)
    p.add_argument("--link", default="homework")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("subs", nargs="+")
    p = sub.add_parser("request")
    p.add_argument("method")
    p.add_argument("url")
    p.add_argument("--json", dest="body")
    p = sub.add_parser("wait-server")
    p.add_argument("--hub", required=True)
    p.add_argument("user")
    state = p.add_mutually_exclusive_group(required=True)
    state.add_argument("--ready", action="store_true")
    state.add_argument("--stopped", action="store_true")
    p.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)

    if args.command == "wait-http":
        result = asyncio.run(wait_http(args.urls, args.timeout))
    elif args.command == "launch":
        result = asyncio.run(launch(args.platform, args.hub, args.link, args.subs, args.timeout))
    elif args.command == "request":
        result = asyncio.run(request(args.method, args.url, args.body))
    else:
        result = asyncio.run(wait_server(args.hub, args.user, args.ready, args.timeout))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
