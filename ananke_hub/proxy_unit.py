"""The proxy as a systemd unit of its own (the image's ``jupyterhub-proxy.service``).

JupyterHub 6.1 starts the proxy as its child and gives it a fixed 10 s (15 s overall) to
answer (``ConfigurableHTTPProxy.start``); no setting raises it. On a slow host (a VM
under software emulation, an overloaded machine) the proxy's Python start takes longer,
the hub exits, systemd restarts the hub, which starts a new proxy: a loop. In the image
the proxy is therefore a unit of its own, started before the hub and restarted by
systemd on its own; the hub runs with ``ConfigurableHTTPProxy.should_start = False``
(JupyterHub's documented "externally managed proxy") and waits for its API with
JupyterHub's 30 s back-off, which a restart of the hub alone then cures.

Both read the API token from the state directory (``StateLayout.proxy_auth_token``,
created once by the boot unit, 0600) and the proxy's addresses from the same config
fragments: :func:`proxy_arguments` builds the arguments JupyterHub's own start would
pass (tests/test_proxy_unit.py compares them). When the proxy restarts it has no routes;
the hub adds them back on its next ``check_routes`` (in ``update_last_activity``, every
``JupyterHub.last_activity_interval``, which the hub's config shortens in this mode).

Without systemd (the DemoStack, ``ananke demo``, the tests' hubs) nothing changes: the
hub starts the proxy itself.
"""

import os
import socket
import sys
from urllib.parse import urlparse

from .fragments import load_fragments
from .paths import StateLayout, config_dir
from .persist import read_or_create_secret

#: Set to "1" in jupyterhub.service's environment: the hub leaves the proxy to its unit.
PROXY_UNIT_ENV = "ANANKE_PROXY_UNIT"
#: JupyterHub's default proxy API address, used by both units unless a fragment sets
#: c.ConfigurableHTTPProxy.api_url.
DEFAULT_API_URL = "http://127.0.0.1:8001"
#: Seconds between the hub's route checks in this mode (JupyterHub's default is 300):
#: after a proxy restart, the longest time until every route is back.
ROUTE_CHECK_INTERVAL = 30


class ProxyConfigError(ValueError):
    """A hub setting the proxy unit cannot follow."""


def proxy_unit_enabled(environ=os.environ) -> bool:
    return environ.get(PROXY_UNIT_ENV) == "1"


def _setting(config, section: str, name: str, default=None):
    sect = config.get(section)
    if sect is not None and name in sect:
        return sect[name]
    return default


def api_url(config) -> str:
    return (_setting(config, "ConfigurableHTTPProxy", "api_url")
            or _setting(config, "Proxy", "api_url") or DEFAULT_API_URL)  # fmt: skip


def _host_port(url: str, what: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ProxyConfigError(
            f"{what} {url!r}: the proxy unit listens on TCP only (http:// or https://). "
            "Use a host and port, or run the hub without the proxy unit."
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname or "", port


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def proxy_arguments(config) -> list[str]:
    """configurable-http-proxy's arguments for the hub that ``config`` describes."""
    for name in ("ip", "port", "base_url", "internal_ssl"):
        if _setting(config, "JupyterHub", name):
            raise ProxyConfigError(
                f"c.JupyterHub.{name} is set: the proxy unit does not follow it. Put the "
                "public address and path in c.JupyterHub.bind_url instead "
                "(internal_ssl is not supported with the proxy unit)."
            )
    ssl_cert = _setting(config, "JupyterHub", "ssl_cert", "")
    ssl_key = _setting(config, "JupyterHub", "ssl_key", "")
    bind_url = _setting(config, "JupyterHub", "bind_url") or (
        ("https" if ssl_cert else "http") + "://:8000"
    )
    ip, port = _host_port(bind_url, "c.JupyterHub.bind_url")
    api_ip, api_port = _host_port(api_url(config), "c.ConfigurableHTTPProxy.api_url")
    # The hub's own URL, as JupyterHub's init_hub makes it: its prefix is base_url/hub/.
    base_url = urlparse(bind_url).path or "/"
    hub_prefix = _join(base_url, "hub/")
    hub_connect = _setting(config, "JupyterHub", "hub_connect_url")
    hub_bind = _setting(config, "JupyterHub", "hub_bind_url")
    if hub_connect or hub_bind:
        parsed = urlparse(hub_connect or hub_bind)
        hub_url = f"{parsed.scheme}://{parsed.netloc}{hub_prefix}"
    else:
        hub_ip = _setting(config, "JupyterHub", "hub_connect_ip") or _setting(
            config, "JupyterHub", "hub_ip", "127.0.0.1")  # fmt: skip
        hub_port = _setting(config, "JupyterHub", "hub_port", 8081)
        if hub_ip in ("", "0.0.0.0", "::"):  # noqa: S104 (as jupyterhub.objects.Server connects)
            hub_ip = socket.gethostname()
        hub_url = f"http://{hub_ip}:{hub_port}{hub_prefix}"
    args = [
        "--ip", ip, "--port", str(port),
        "--api-ip", api_ip, "--api-port", str(api_port),
        "--error-target", _join(hub_url, "error"),
        "--log-level", _setting(config, "ConfigurableHTTPProxy", "log_level", "info"),
    ]  # fmt: skip
    if _setting(config, "JupyterHub", "subdomain_host"):
        args.append("--host-routing")
    if ssl_key:
        args += ["--ssl-key", ssl_key]
    if ssl_cert:
        args += ["--ssl-cert", ssl_cert]
    return args


def hub_settings(c, layout: StateLayout) -> None:
    """The hub's side: leave the proxy to its unit, share its token, re-add routes soon."""
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = DEFAULT_API_URL
    c.JupyterHub.last_activity_interval = ROUTE_CHECK_INTERVAL
    # Read by JupyterHub's ConfigurableHTTPProxy.auth_token default; spawners and
    # services do not inherit it (not in Spawner.env_keep), as with the crypt key.
    os.environ["CONFIGPROXY_AUTH_TOKEN"] = read_or_create_secret(layout.proxy_auth_token)


def main() -> int:
    try:
        args = proxy_arguments(load_fragments(config_dir()).config)
    except Exception as exc:  # a fragment that does not load, or a setting we refuse
        print(f"ananke proxy unit: {exc}", file=sys.stderr)
        return 1
    token = read_or_create_secret(StateLayout.from_env().proxy_auth_token)
    # The token goes through the environment (configurable-http-proxy reads
    # CONFIGPROXY_AUTH_TOKEN), never argv, which every local user can read.
    os.environ["CONFIGPROXY_AUTH_TOKEN"] = token
    from . import proxy

    sys.argv = ["configurable-http-proxy", *args]
    return proxy.main()


if __name__ == "__main__":
    sys.exit(main())
