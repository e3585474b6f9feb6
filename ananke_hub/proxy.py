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
subprotocol the upstream selected. Everything else is the unchanged upstream command.

We keep the PyPI port rather than the JupyterHub project's Node.js proxy (npm) so that
``pip install`` alone sets up a hub: no Node.js runtime in the images or in CI.
"""

import sys

from configurable_http_proxy import configproxy
from configurable_http_proxy.handlers import ProxyHandler
from tornado.httpclient import AsyncHTTPClient

MAX_CONCURRENT_REQUESTS = 1000


class SubprotocolProxyHandler(ProxyHandler):
    """The upstream handler, answering the client with the upstream's subprotocol."""

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        # The port opens its connection to the upstream (self.ws_client, with the
        # client's headers) before it accepts the client's, so the choice is known.
        upstream = getattr(self, "ws_client", None)
        selected = upstream.selected_subprotocol if upstream is not None else None
        return selected if selected in subprotocols else None


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
    AsyncHTTPClient.configure(None, max_clients=MAX_CONCURRENT_REQUESTS)
    install()
    from configurable_http_proxy.cli import main as proxy_main

    return proxy_main()


if __name__ == "__main__":
    sys.exit(main())
