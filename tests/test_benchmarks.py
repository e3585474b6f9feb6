"""The launch benchmark runs end to end at smoke-test sizes and reports every launch.

No timing is asserted here: the numbers are the benchmark's output, not a test result.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "launch.py"
AUTHENTICATORS = ("upstream", "ours")


@pytest.mark.slow
def test_launch_benchmark_quick(tmp_path):
    out = tmp_path / "launch.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--quick",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio upstream/ours (login)" in proc.stdout

    report = json.loads(out.read_text())
    assert report["all_launches_ok"] is True
    assert report["authenticators"] == {
        "upstream": "ltiauthenticator.lti13.auth.LTI13Authenticator",
        "ours": "ananke_hub.auth.AnankeLTI13Authenticator",
    }
    scenarios = report["scenarios"]
    assert set(scenarios) == {"first_login", "sequential", "concurrent", "slow_keyset"}
    for name, scenario in scenarios.items():
        assert set(scenario["ratio_upstream_over_ours"]) >= {"p50", "p95"}, name
        for auth in AUTHENTICATORS:
            stats = scenario[auth]
            assert stats["launches"] == 2, (name, auth)
            assert stats["ok"] == 2 and stats["failed"] == 0, (name, auth, stats["errors"])
            for step in ("login_ms", "initiation_ms", "callback_ms"):
                assert stats[step]["n"] == 2, (name, auth, step)
                assert set(stats[step]) >= {"p50", "p95", "max"}
            assert all(s["ok"] for s in stats["samples"])
            # every virtual user is its own LMS user
            assert {s["sub"] for s in stats["samples"]} <= {"1000", "1001"}

    slow = scenarios["slow_keyset"]
    assert slow["keyset_cache"].startswith("cold")
    for auth in AUTHENTICATORS:
        for probe in ("hub", "proxy"):
            assert slow[auth]["probes"][probe]["n"] >= 1, (auth, probe)
            assert slow[auth]["probes"][probe]["failures"] == 0, (auth, probe)
    # Upstream fetches the keyset for every launch; ours once for both launches in flight.
    assert slow["upstream"]["jwks_fetches"] == 2
    assert slow["ours"]["jwks_fetches"] == 1


def test_benchmark_refuses_nonsense_sizes():
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--rounds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--rounds must be 1 or more" in proc.stderr
