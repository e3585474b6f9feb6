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


PROVISION_BENCHMARK = BENCHMARK.parent / "provision.py"
PROVISION_STACKS = ("provisioning", "baseline")


@pytest.mark.slow
def test_provision_benchmark_quick(tmp_path):
    out = tmp_path / "provision.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROVISION_BENCHMARK),
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
    assert "zero lost or duplicated records: yes" in proc.stdout

    report = json.loads(out.read_text())
    assert report["all_launches_ok"] is True and report["records_ok"] is True
    assert report["stacks"]["baseline"] == {
        "AnankeLTI13Authenticator": {"provision_courses": False}
    }
    scenarios = report["scenarios"]
    assert set(scenarios) == {"first_instructor_launch", "students_first", "students_again"}
    sizes = {"first_instructor_launch": 2, "students_first": 10, "students_again": 10}
    for name, scenario in scenarios.items():
        assert set(scenario["ratio_provisioning_over_baseline"]) >= {"p50", "p95"}, name
        for stack in PROVISION_STACKS:
            stats = scenario[stack]
            assert stats["launches"] == stats["ok"] == sizes[name], (name, stack, stats["errors"])
            for step in ("login_ms", "initiation_ms", "callback_ms"):
                assert stats[step]["n"] == sizes[name]
                assert set(stats[step]) >= {"p50", "p95", "max"}
    instructors = {
        s["sub"] for s in scenarios["first_instructor_launch"]["provisioning"]["samples"]
    }
    assert instructors == {"4000", "4001"}  # each activity created by its own instructor
    students = {str(5000 + i) for i in range(10)}
    for name in ("students_first", "students_again"):
        for stack in PROVISION_STACKS:
            stats = scenarios[name][stack]
            assert {s["sub"] for s in stats["samples"]} == students
            assert {"throughput_per_s", "peak_in_flight", "drain_s"} <= set(stats)
    # The second round finds every student enrolled: nothing to write into the gradebook.
    assert scenarios["students_again"]["gradebook_unchanged"] is True

    records = report["records"]
    for key in ("registry_members", "gradebook_students", "hub_group"):
        check = records[key]
        assert check["expected"] == check["present"] == 10, key
        assert check["missing"] == check["duplicated"] == check["wrong_lms_user_id"] == [], key
    assert records["registry_members"]["in_gradebook_flag"] == 10
    for stack in PROVISION_STACKS:
        assert records["hub_users"][stack]["present"] == 12  # 10 students, 2 instructors
    assert records["courses"] == {"expected": 2, "complete": 2, "incomplete": []}
    assert records["grader_accounts"] == {"expected": 2, "present": 2}


def test_provision_benchmark_refuses_nonsense_sizes():
    proc = subprocess.run(
        [sys.executable, str(PROVISION_BENCHMARK), "--students", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--students must be 1 or more" in proc.stderr


def test_profile_summary_counts_inclusive_time_per_launch(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    from provision import PROFILE_RATE, profile_summary

    raw = tmp_path / "students_first.txt"
    raw.write_text(
        "thread (1): MainThread;run (a.py:1);AnankeCallbackHandler.post (h.py:82);"
        "User.sync_groups (jupyterhub/user.py:331) 10\n"
        "thread (2): registry_0;_worker (t.py:1);CourseRegistry.record_launch (r.py:134);"
        "DefaultDialect.do_commit (d.py:1) 5\n"
        "thread (3): ananke-in-home;Gradebook.__init__ (api.py:1) 3\n"
        "garbage line\n"
    )
    summary = profile_summary(raw, launches=2)
    ms = summary["ms_per_launch"]
    per_sample = 1000 / PROFILE_RATE / 2
    assert summary["samples"] == 18
    assert ms["event loop thread, all"] == round(10 * per_sample, 1)
    assert ms["    JupyterHub User.sync_groups"] == round(10 * per_sample, 1)
    assert ms["  CourseRegistry.record_launch"] == round(5 * per_sample, 1)
    assert ms["SQLite commits, all threads"] == round(5 * per_sample, 1)
    assert ms["gradebook thread (confined to the home), all"] == round(3 * per_sample, 1)
    assert ms["  CourseRegistry.mark_in_gradebook"] == 0
