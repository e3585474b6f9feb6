"""The hub's proxy: the PyPI port of configurable-http-proxy, with room for concurrency.

The port forwards every request through tornado's ``AsyncHTTPClient``, whose default
``max_clients`` is 10: ten slow requests (launches waiting on an LMS, big uploads)
would queue every other user's traffic behind them. This entry point raises the limit
before the proxy starts; everything else is the unchanged upstream command.
"""

import sys

from tornado.httpclient import AsyncHTTPClient

MAX_CONCURRENT_REQUESTS = 1000


def main() -> int:
    AsyncHTTPClient.configure(None, max_clients=MAX_CONCURRENT_REQUESTS)
    from configurable_http_proxy.cli import main as proxy_main

    return proxy_main()


if __name__ == "__main__":
    sys.exit(main())
