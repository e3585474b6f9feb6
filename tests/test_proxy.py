"""The hub's proxy (``python -m ananke_hub.proxy``) run as JupyterHub runs it.

A WebSocket through the proxy gets the subprotocol the upstream selected: JupyterLab
offers ``v1.kernel.websocket.jupyter.org`` on every kernel connection, and a browser
fails a connection whose answer names no subprotocol after it offered some.
"""

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys

import pytest
from tornado import web, websocket
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo(websocket.WebSocketHandler):
    """Selects the kernel protocol when offered, as jupyter_server does, and echoes."""

    def select_subprotocol(self, subprotocols):
        return KERNEL_PROTOCOL if KERNEL_PROTOCOL in subprotocols else None

    def on_message(self, message):
        if isinstance(message, bytes):  # a binary frame (the v1 kernel protocol's)
            self.write_message(b"binary:" + message, binary=True)
        else:
            self.write_message(f"echo:{message}")


class Events(web.RequestHandler):
    """An event stream as JupyterHub's progress API sends it: an event, then it stays
    open until the test lets it end."""

    release: asyncio.Event

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.write('data: {"message": "You are number 1 in the queue"}\n\n')
        await self.flush()
        await Events.release.wait()
        self.write('data: {"ready": true}\n\n')


@pytest.fixture
async def upstream():
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/user/u3/lab/ws", Echo), (r"/user/u3/events", Events)]))
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()


@pytest.fixture
async def proxy(upstream):
    port, api_port = free_port(), free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": token}
    argv = [sys.executable, "-m", "ananke_hub.proxy", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--api-ip", "127.0.0.1", "--api-port", str(api_port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = AsyncHTTPClient()
        route = HTTPRequest(
            f"http://127.0.0.1:{api_port}/api/routes/user/u3",
            method="POST",
            headers={"Authorization": f"token {token}"},
            body=json.dumps({"target": upstream}),
        )
        for _ in range(100):  # bounded: about 20 s until the proxy's API answers
            try:
                await client.fetch(route)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("the proxy's API did not answer")
        yield f"ws://127.0.0.1:{port}/user/u3"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_websocket_through_proxy_gets_the_selected_subprotocol(proxy):
    conn = await websocket.websocket_connect(
        f"{proxy}/lab/ws", subprotocols=["unknown.example", KERNEL_PROTOCOL]
    )
    try:
        assert conn.selected_subprotocol == KERNEL_PROTOCOL
        await conn.write_message("hi")
        assert await conn.read_message() == "echo:hi"
    finally:
        conn.close()


async def test_binary_frames_stay_binary_both_ways(proxy):
    """The v1 kernel protocol (selected above) sends binary frames; the port forwarded the
    browser's as text frames, which the lab refuses, so a lab's kernel never connected."""
    conn = await websocket.websocket_connect(f"{proxy}/lab/ws", subprotocols=[KERNEL_PROTOCOL])
    frame = b"\x00\x00\x00\x02\xff\xfe kernel message"  # not UTF-8
    try:
        await conn.write_message(frame, binary=True)
        # Bounded: with the frame sent as text the lab drops it and nothing comes back.
        assert await asyncio.wait_for(conn.read_message(), 20) == b"binary:" + frame
    finally:
        conn.close()


async def test_websocket_without_subprotocol_gets_none(proxy):
    conn = await websocket.websocket_connect(f"{proxy}/lab/ws")
    try:
        assert conn.selected_subprotocol is None
        await conn.write_message("hi")
        assert await conn.read_message() == "echo:hi"
    finally:
        conn.close()


async def test_event_streams_pass_through_as_they_come(proxy):
    # The waiting page's progress events: the first one must reach the browser while
    # the stream is still open (the lab still starting), however long that takes.
    Events.release = asyncio.Event()
    url = proxy.replace("ws://", "http://") + "/events"
    first = asyncio.get_running_loop().create_future()
    chunks = []

    def on_chunk(chunk):
        chunks.append(chunk)
        if not first.done():
            first.set_result(chunk)

    request = HTTPRequest(
        url,
        headers={"Accept": "text/event-stream"},
        streaming_callback=on_chunk,
        request_timeout=60,
    )
    fetch = asyncio.ensure_future(AsyncHTTPClient().fetch(request, raise_error=False))
    done, _ = await asyncio.wait([first, fetch], return_when=asyncio.FIRST_COMPLETED)
    assert first in done, f"the stream ended before its first event: {fetch.result().code}"
    assert b"number 1 in the queue" in first.result()
    Events.release.set()
    response = await fetch
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert b'"ready": true' in b"".join(chunks)


class Headers(web.RequestHandler):
    """Answers with the request's headers and the protocol JupyterHub believes the
    browser used (``jupyterhub.utils.get_browser_protocol``, what ltiauthenticator's
    ``uri_scheme = "auto"`` builds its LTI redirect URI from)."""

    def get(self):
        from jupyterhub.utils import get_browser_protocol

        headers = {k: v for k, v in self.request.headers.get_all() if k.startswith("X-Forwarded")}
        self.write({"headers": headers, "browser_protocol": get_browser_protocol(self.request)})


def _proxy_to_headers():
    """The hub's proxy in front of :class:`Headers` (as its default target)."""
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/.*", Headers)]))
    server.add_sockets(sockets)
    port, api_port = free_port(), free_port()
    argv = [sys.executable, "-m", "ananke_hub.proxy", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--api-ip", "127.0.0.1", "--api-port", str(api_port)]
    argv += ["--default-target", f"http://127.0.0.1:{sockets[0].getsockname()[1]}"]
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, server, f"http://127.0.0.1:{port}"


async def _fetch_through(url, headers, proc):
    client = AsyncHTTPClient()
    for _ in range(100):  # bounded: about 20 s until the proxy answers
        try:
            response = await client.fetch(
                HTTPRequest(f"{url}/hub/lti13/oauth_login", headers=headers)
            )
            return json.loads(response.body)
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            await asyncio.sleep(0.2)
    pytest.fail("the proxy did not answer within about 20 s")


@pytest.mark.parametrize(
    "sent, browser_protocol, forwarded_proto",
    [
        (
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.edu"},
            "https",
            "https,http",
        ),
        ({}, "http", "http"),
    ],
    ids=["behind-a-tls-front-proxy", "plain-http"],
)
async def test_forwarded_headers_keep_what_the_front_proxy_said(
    sent, browser_protocol, forwarded_proto
):
    """A TLS-terminating reverse proxy in front of the hub says X-Forwarded-Proto: https;
    the hub must still see it (the port replaced it with ',http', so uri_scheme 'auto'
    built http:// redirect URIs an LMS refuses)."""
    proc, server, url = _proxy_to_headers()
    try:
        seen = await _fetch_through(url, sent, proc)
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()
    assert seen["browser_protocol"] == browser_protocol
    assert seen["headers"]["X-Forwarded-Proto"] == forwarded_proto
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["X-Forwarded-Host"] == sent.get(
        "X-Forwarded-Host", url.removeprefix("http://")
    )
