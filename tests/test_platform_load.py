"""The built-in LMS's options for benchmarks: https with a private CA, and an LMS that
slows down under load and refuses requests beyond a limit, with its counters of
requests in flight, 429s and TCP connections (``/_test/load``)."""

import asyncio
import ssl

import httpx
import pytest
from test_platform import running_platform

from ananke_hub.testlms.tls import private_ca


def test_https_with_a_private_ca(tmp_path):
    tls = private_ca(tmp_path / "tls")
    options = {"certfile": tls.cert_file, "keyfile": tls.key_file}
    with running_platform(tmp_path / "state", flags=["--test-api"], **options) as p:
        assert p.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(tls.ca_file))
        with httpx.Client(base_url=p.url, verify=trusted, trust_env=False) as client:
            assert client.get("/_test/load").status_code == 200
        with (
            httpx.Client(
                base_url=p.url, verify=ssl.create_default_context(), trust_env=False
            ) as client,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            client.get("/_test/load")


def test_a_loaded_lms_refuses_beyond_its_limit_and_counts_connections(tmp_path):
    options = {"load_delay": 0.05, "load_limit": 2}
    with running_platform(tmp_path / "state", flags=["--test-api"], **options) as p:

        async def burst():
            # one client: a keep-alive pool of its own connections
            async with httpx.AsyncClient(base_url=p.url, trust_env=False) as client:
                answers = await asyncio.gather(
                    *(client.get("/ags/ds101/lineitems") for _ in range(8))
                )
                return [a.status_code for a in answers], [
                    a.headers.get("retry-after") for a in answers
                ]

        statuses, retry_after = asyncio.run(burst())
        with httpx.Client(base_url=p.url, trust_env=False) as admin:
            load = admin.get("/_test/load").json()
            # the counters start again with a new setting
            reset = admin.post("/_test/load", json={"per_request": 0.001}).json()
            bad = admin.post("/_test/load", json={"per_request": "fast"})
    refused = [n for n, status in enumerate(statuses) if status == 429]
    assert refused, statuses  # more than 2 at once: refused
    assert all(retry_after[n] == "1" for n in refused)
    assert set(statuses) <= {401, 429}  # the others reached the service (no token: 401)
    assert load["overloaded"] == len(refused) and load["peak"] <= 2
    assert load["served"] == 8 - len(refused)
    assert 1 <= load["connections"] <= 8
    # each request (429s too) names the connection it came on, numbered from 1
    assert len(load["request_connections"]) == 8
    assert set(load["request_connections"]) == set(range(1, load["connections"] + 1))
    assert (load["per_request"], load["limit"]) == (0.05, 2)
    assert reset["overloaded"] == reset["served"] == reset["connections"] == 0
    assert reset["request_connections"] == []
    assert reset["limit"] == 0 and reset["per_request"] == 0.001
    assert bad.status_code == 400 and "per_request must be a number" in bad.text


def test_requests_on_one_kept_alive_connection_are_counted_once(tmp_path):
    with running_platform(tmp_path / "state", flags=["--test-api"]) as p:
        with httpx.Client(base_url=p.url, trust_env=False) as client:
            for _ in range(5):
                client.get("/ags/ds101/lineitems")
            load = client.get("/_test/load").json()
        with httpx.Client(base_url=p.url, trust_env=False) as other:
            other.get("/ags/ds101/lineitems")
            after = other.get("/_test/load").json()
    assert load["served"] == 5 and load["connections"] == 1
    assert after["served"] == 6 and after["connections"] == 2


def test_a_kept_alive_connection_counts_again_after_a_new_setting(tmp_path):
    with (
        running_platform(tmp_path / "state", flags=["--test-api"]) as p,
        httpx.Client(base_url=p.url, trust_env=False) as tool,
        httpx.Client(base_url=p.url, trust_env=False) as admin,
    ):
        tool.get("/ags/ds101/lineitems")  # no token: 401, but it reached the service
        before = admin.get("/_test/load").json()
        admin.post("/_test/load", json={})
        tool.get("/ags/ds101/lineitems")  # the same kept-alive connection
        tool.get("/ags/ds101/lineitems")
        after = admin.get("/_test/load").json()
    assert (before["connections"], before["request_connections"]) == (1, [1])
    assert (after["connections"], after["request_connections"]) == (1, [1, 1])
