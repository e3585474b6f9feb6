"""The proxy unit (ananke_hub/proxy_unit.py) starts the proxy as JupyterHub would.

The image runs the proxy as jupyterhub-proxy.service; its arguments come from the same
config fragments as the hub's. Here they are compared with the command JupyterHub's own
``ConfigurableHTTPProxy.start`` builds for the same config (its Popen captured), so a
fragment that moves the public port, the hub's address or TLS moves both alike. The hub
surviving a proxy restart in the image is tests/container/test_podman_e2e.py's.
"""

import asyncio
import os
from pathlib import Path

import pytest
from traitlets.config import Config

from ananke_hub import hubconfig, proxy_unit
from ananke_hub.paths import StateLayout


class _Captured(Exception):
    pass


def jupyterhub_proxy_args(config: Config, monkeypatch, tmp_path: Path) -> list[str]:
    """The arguments JupyterHub 6's ConfigurableHTTPProxy.start passes its command."""
    import jupyterhub.proxy
    from jupyterhub.app import JupyterHub

    config = Config(config)
    config.ConfigurableHTTPProxy.pid_file = str(tmp_path / "proxy.pid")
    config.ConfigurableHTTPProxy.auth_token = "x" * 32
    config.ConfigurableHTTPProxy.command = ["PROXY"]
    if "api_url" not in config.ConfigurableHTTPProxy:
        config.ConfigurableHTTPProxy.api_url = proxy_unit.DEFAULT_API_URL
    captured = []

    def popen(cmd, **kwargs):
        captured.append(cmd)
        raise _Captured()

    monkeypatch.setattr(jupyterhub.proxy, "Popen", popen)
    app = JupyterHub(config=config)
    app.init_hub()
    app.init_proxy()
    with pytest.raises(_Captured):
        asyncio.run(app.proxy.start())
    (cmd,) = captured
    assert cmd[0] == "PROXY"
    return cmd[1:]


@pytest.mark.parametrize(
    "settings",
    [
        {},  # JupyterHub's defaults
        {"JupyterHub": {"bind_url": "http://:8000"}},  # the shipped 00_base.py
        {"JupyterHub": {"bind_url": "http://127.0.0.1:9100/teach/"}},
        {"JupyterHub": {"bind_url": "http://:8000", "hub_ip": "0.0.0.0", "hub_port": 9081}},
        {"JupyterHub": {"hub_bind_url": "http://127.0.0.1:9181"}},
        {"JupyterHub": {"hub_connect_url": "http://hub.internal:8081"}},
        {"JupyterHub": {"bind_url": "https://:8443", "ssl_key": "/k.pem", "ssl_cert": "/c.pem"}},
        {"JupyterHub": {"subdomain_host": "https://hub.example.org"}},
        {"ConfigurableHTTPProxy": {"api_url": "http://127.0.0.1:9001", "log_level": "debug"}},
    ],
)
def test_unit_starts_the_proxy_with_jupyterhubs_arguments(settings, monkeypatch, tmp_path):
    config = Config(settings)
    assert proxy_unit.proxy_arguments(config) == jupyterhub_proxy_args(config, monkeypatch, tmp_path)


@pytest.mark.parametrize("name", ["ip", "port", "base_url", "internal_ssl"])
def test_settings_the_unit_cannot_follow_are_refused(name):
    value = {"ip": "127.0.0.1", "port": 9000, "base_url": "/x/", "internal_ssl": True}[name]
    with pytest.raises(proxy_unit.ProxyConfigError, match=f"c.JupyterHub.{name}.*bind_url"):
        proxy_unit.proxy_arguments(Config({"JupyterHub": {name: value}}))


def test_unix_socket_is_refused():
    config = Config({"ConfigurableHTTPProxy": {"api_url": "http+unix://%2Ftmp%2Fp.sock"}})
    with pytest.raises(proxy_unit.ProxyConfigError, match="TCP only"):
        proxy_unit.proxy_arguments(config)


def config_dir(tmp_path: Path) -> Path:
    """A fragment directory the hub's config accepts here (tests may run as root)."""
    cfg_dir = tmp_path / "config.d"
    cfg_dir.mkdir()
    (cfg_dir / "00_base.py").write_text(
        'c.JupyterHub.bind_url = "http://127.0.0.1:8000"\n'
        "c.AnankeLocalSpawner.allow_root = True\n"
    )
    return cfg_dir


def test_hub_in_unit_mode_leaves_the_proxy_and_shares_the_token(tmp_path, monkeypatch):
    monkeypatch.setenv(proxy_unit.PROXY_UNIT_ENV, "1")
    monkeypatch.delenv("CONFIGPROXY_AUTH_TOKEN", raising=False)
    layout = StateLayout(tmp_path / "state")
    c = Config()
    hubconfig.configure(c, config_dir(tmp_path), layout)
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.ConfigurableHTTPProxy.api_url == proxy_unit.DEFAULT_API_URL
    assert c.JupyterHub.last_activity_interval == proxy_unit.ROUTE_CHECK_INTERVAL
    token_file = layout.proxy_auth_token
    assert os.environ["CONFIGPROXY_AUTH_TOKEN"] == token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600
    # Not in the config (whose changes JupyterHub logs), only in the environment.
    assert "auth_token" not in c.ConfigurableHTTPProxy


def test_hub_without_the_unit_starts_its_proxy(tmp_path, monkeypatch):
    monkeypatch.delenv(proxy_unit.PROXY_UNIT_ENV, raising=False)
    c = Config()
    hubconfig.configure(c, config_dir(tmp_path), StateLayout(tmp_path / "state"))
    assert "should_start" not in c.ConfigurableHTTPProxy
    assert not StateLayout(tmp_path / "state").proxy_auth_token.exists()
