"""The hub's proxy: the PyPI port of configurable-http-proxy, with two fixes.

Concurrency: the port forwards every request through tornado's ``AsyncHTTPClient``,
whose default ``max_clients`` is 10: ten slow requests (launches waiting on an LMS,
big uploads) would queue every other user's traffic behind them. This entry point
raises the limit before the proxy starts.

WebSocket subprotocols: the port forwards the browser's ``Sec-WebSocket-Protocol`` to
the lab, which picks one (JupyterLab offers ``v1.kernel.websocket.jupyter.org``), but
it never tells the browser which: tornado's ``WebSocketHandler`` selects none unless
``select_subprotocol`` says so. A browser that offered a subprotocol must then fail the
connection (RFC 6455 section 4.1), so every lab's first kernel connection failed and
JupyterLab fell back to a second one. :class:`SubprotocolProxyHandler` answers with the
subprotocol the upstream selected, and forwards the browser's binary frames as binary
(the port sent them as text, which breaks the binary v1 kernel protocol that the
subprotocol selects).

Event streams: the port buffers every answer until the upstream ends it, under tornado's
20 s request timeout. JupyterHub's waiting page follows a start through an event stream
(``/hub/api/users/<name>/server/progress``): the page never saw a progress message and,
for a start longer than 20 s (a class in the start queue), got a 503 instead of its
lab. :meth:`SubprotocolProxyHandler.call_proxy` passes ``text/event-stream`` requests
through as they come, without a time limit.

Forwarded headers: the port looks the client's ``X-Forwarded-*`` headers up by lower-case
names in a dict of the capitalised ones, so it replaced a TLS-terminating front proxy's
``X-Forwarded-Proto: https`` with ``,http`` (and emptied ``X-Forwarded-Host``), and it
took every connection for plain http even where it terminates TLS itself. JupyterHub
then believed the browser spoke http (``uri_scheme = "auto"`` built ``http://`` LTI
redirect URIs, which an LMS refuses). :meth:`SubprotocolProxyHandler._get_proxy_request`
appends this hop's values to the client's as the JupyterHub project's Node.js proxy
does (``https,http``: JupyterHub reads the first, what the browser used). Everything
else is the unchanged upstream command.

We keep the PyPI port rather than the JupyterHub project's Node.js proxy (npm) so that
``pip install`` alone sets up a hub: no Node.js runtime in the images or in CI.
"""

import sys

from configurable_http_proxy import configproxy
from configurable_http_proxy.handlers import ProxyHandler
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders, parse_response_start_line

MAX_CONCURRENT_REQUESTS = 1000
#: The PyPI port has no TLS (its command raises NotImplementedError for --ssl-*): say
#: what to do instead, wherever a configuration asks the hub's proxy for it.
TLS_UNSUPPORTED = (
    "the hub's proxy (the PyPI configurable-http-proxy) cannot terminate TLS, so "
    "c.JupyterHub.ssl_cert and ssl_key cannot be used"
)
TLS_HINT = (
    "remove c.JupyterHub.ssl_cert/ssl_key and terminate TLS in a reverse proxy in front of "
    "the hub (docs/admin/containers.md), which sends X-Forwarded-Proto: https"
)
#: Seconds an event stream may stay open through the proxy (JupyterHub ends a start's
#: progress stream when the start ends, at most Spawner.start_timeout later).
EVENT_STREAM_TIMEOUT = 24 * 3600
#: Headers of the upstream's answer not copied to the client's (tornado frames the body).
_HOP_HEADERS = {"Connection", "Transfer-Encoding", "Content-Length", "Keep-Alive"}


class SubprotocolProxyHandler(ProxyHandler):
    """The upstream handler, answering the client with the upstream's subprotocol."""

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        # The port opens its connection to the upstream (self.ws_client, with the
        # client's headers) before it accepts the client's, so the choice is known.
        upstream = getattr(self, "ws_client", None)
        selected = upstream.selected_subprotocol if upstream is not None else None
        return selected if selected in subprotocols else None

    def on_message(self, message):
        # The port forwards the browser's frames with write_message(message), which sends
        # bytes as a text frame. With the subprotocol selected, JupyterLab speaks the
        # binary v1 kernel protocol: its frames must stay binary or the lab's kernel never
        # connects ("Unknown").
        if self.ws_client:
            prefix = self.target["prefix"] if self.target else ""
            if prefix:
                self.proxy.update_last_activity(prefix)
            self.ws_client.write_message(message, binary=isinstance(message, bytes))

    def _get_proxy_request(self, url) -> HTTPRequest:
        request = super()._get_proxy_request(url)
        headers = HTTPHeaders(self.request.headers)
        for name, value in self.proxy.custom_headers.items():
            headers[name] = value
        if self.proxy.x_forward:
            self._add_forwarded(headers)
        request.headers = headers
        return request

    def _add_forwarded(self, headers: HTTPHeaders) -> None:
        """This hop's X-Forwarded-* values after the client's (HTTPHeaders: any case)."""
        encrypted = self.request.protocol == "https"
        host = headers.get("Host", "")
        port = host.rpartition(":")[2] if ":" in host and not host.endswith("]") else ""
        ours = {
            "For": self.request.remote_ip or "",
            "Port": port if port.isdigit() else ("443" if encrypted else "80"),
            "Proto": "https" if encrypted else "http",
        }
        for key, value in ours.items():
            name = f"X-Forwarded-{key}"
            earlier = headers.get(name, "")
            headers[name] = f"{earlier},{value}" if earlier else value
        headers["X-Forwarded-Host"] = headers.get("X-Forwarded-Host") or host

    async def call_proxy(self, path=None):
        if "text/event-stream" not in self.request.headers.get("Accept", ""):
            return await super().call_proxy(path)
        url = await self.get_target_url(path)
        if url is None:
            return
        request = self._get_proxy_request(url)
        request.request_timeout = EVENT_STREAM_TIMEOUT
        request.header_callback = self._stream_header
        request.streaming_callback = self._stream_chunk
        self._stream_headers = HTTPHeaders()
        self._stream_started = False
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except Exception as err:
            if not self._stream_started:
                await self.handle_proxy_error(503, err)
            return
        if response.code == 599 and not self._stream_started:
            await self.handle_proxy_error(503, response.error)
            return
        self.finish()

    def _stream_header(self, line: str) -> None:
        if line.startswith("HTTP/"):
            start = parse_response_start_line(line.strip())
            self.set_status(start.code, start.reason)
            self._stream_headers = HTTPHeaders()
        elif line.strip():
            self._stream_headers.parse_line(line)
        else:  # the end of the headers: pass them on
            seen = set()
            for name, value in self._stream_headers.get_all():
                if name in _HOP_HEADERS:
                    continue
                # set first (replacing tornado's default Content-Type), then add repeats
                (self.add_header if name in seen else self.set_header)(name, value)
                seen.add(name)

    def _stream_chunk(self, chunk: bytes) -> None:
        self._stream_started = True
        self.write(chunk)
        self.flush()


def install() -> None:
    """Make the port's application use :class:`SubprotocolProxyHandler`.

    ``PythonProxy`` builds its routes from the name ``ProxyHandler`` in its module; the
    check below fails loudly if a release moves it (tests/test_proxy.py runs the real
    proxy, so a release that breaks the fix fails there too).
    """
    if getattr(configproxy, "ProxyHandler", None) not in (ProxyHandler, SubprotocolProxyHandler):
        raise RuntimeError(
            "configurable_http_proxy.configproxy.ProxyHandler is not the handler this fix "
            "expects; check ananke_hub/proxy.py against the installed configurable-http-proxy."
        )
    configproxy.ProxyHandler = SubprotocolProxyHandler


def main() -> int:
    if any(arg.startswith("--ssl") for arg in sys.argv[1:]):
        print(f"ananke_hub.proxy: {TLS_UNSUPPORTED}: {TLS_HINT}.", file=sys.stderr)
        return 2
    AsyncHTTPClient.configure(None, max_clients=MAX_CONCURRENT_REQUESTS)
    install()
    from configurable_http_proxy.cli import main as proxy_main

    return proxy_main()


if __name__ == "__main__":
    sys.exit(main())
