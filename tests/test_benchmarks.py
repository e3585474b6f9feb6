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


def run_quick(
    script: Path, tmp_path: Path, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a benchmark at its --quick size; its output and its JSON report."""
    out = tmp_path / f"{script.stem}.json"
    command = [sys.executable, str(script), "--quick", *extra, "--json", str(out)]
    proc = subprocess.run(
        [*command, "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def refused(script: Path, *args: str) -> str:
    """Run a benchmark with bad arguments: it must exit with 2; what it said."""
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    return proc.stderr


@pytest.mark.slow
def test_launch_benchmark_quick(tmp_path):
    proc, report = run_quick(BENCHMARK, tmp_path)
    assert "ratio upstream/ours (login)" in proc.stdout
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
    assert "--rounds must be 1 or more" in refused(BENCHMARK, "--rounds", "0")


PROVISION_BENCHMARK = BENCHMARK.parent / "provision.py"
PROVISION_STACKS = ("provisioning", "baseline")


@pytest.mark.slow
def test_provision_benchmark_quick(tmp_path):
    proc, report = run_quick(PROVISION_BENCHMARK, tmp_path)
    assert "zero lost or duplicated records: yes" in proc.stdout
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
    assert "--students must be 1 or more" in refused(PROVISION_BENCHMARK, "--students", "0")


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


GRADE_SYNC_BENCHMARK = BENCHMARK.parent / "grade_sync.py"
GRADE_SYNC_SCENARIOS = {
    "ours",
    "resync",
    "sequential_total",
    "sequential_all",
    "https_ours",
    "https_resync",
    "https_sequential_all",
    "load_adaptive",
    "load_fixed",
}


@pytest.mark.slow
def test_grade_sync_benchmark_quick(tmp_path):
    proc, report = run_quick(GRADE_SYNC_BENCHMARK, tmp_path, "--no-cache")
    assert "Every score delivered exactly once (or reported not sent): yes" in proc.stdout
    assert report["every_score_once"] is True and report["all_ok"] is True
    # 20 students x (2 assignments + the course total)
    assert report["sizes"] == {"students": 20, "assignments": 2, "scores": 60}
    scenarios = report["scenarios"]
    assert set(scenarios) == GRADE_SYNC_SCENARIOS
    for name, scenario in scenarios.items():
        delivery = scenario["delivery"]
        if name == "load_fixed":  # an LMS refusing through every retry: reported, not sent
            assert scenario["honest"] is True
            continue
        assert delivery["delivered_once"] == delivery["expected"] > 0, name
        for problem in ("missing", "duplicated", "refused", "unexpected"):
            assert delivery[problem] == 0, (name, problem, delivery["examples"])
        assert scenario["ok"] is True, name

    ours = scenarios["ours"]
    assert ours["state"] == "finished" and ours["counts"] == {"sent": 60}
    assert ours["line_items"] == {"created": 2, "problems": []}
    assert ours["delivery"]["expected"] == 60
    assert ours["values"] == {"checked": 60, "wrong": 0, "examples": []}
    # Nothing changed: the second sync sends nothing and the LMS still has each score once.
    assert scenarios["resync"]["counts"] == {"unchanged": 60}
    assert scenarios["sequential_total"]["delivery"]["expected"] == 20
    every = scenarios["sequential_all"]
    assert every["extrapolated"] is False and every["scores_sent"] == every["scores"] == 60
    assert every["line_items_created"] == 2
    assert set(report["ratios"]) == {"http", "https", "load"}
    assert set(report["ratios"]["http"]) == {
        "sequential_all_over_ours",
        "sequential_total_over_ours",
        "requests_per_s_ours_over_sequential",
        "sending_phase_over_sequential_all",
    }
    assert set(report["target"]) == {"http", "https"}
    assert report["target"]["https"]["compared"] == "sequential_all / ours, shipped defaults"
    # https: the LMS's certificate from the run's private CA, trusted via SSL_CERT_FILE
    assert report["lms"]["https"].startswith("https://")
    assert report["tls"]["trusted_via"] == "SSL_CERT_FILE"
    for name in ("ours", "https_ours", "load_adaptive", "load_fixed"):
        s = scenarios[name]
        assert sum(s["counts"].values()) == 60, name
        # kept-alive connections: fewer than requests, never more than the ceiling
        assert 1 <= s["traffic"]["lms_connections"] < s["requests"], name
        assert s["traffic"]["lms_peak_in_flight"] <= s["concurrency"], name
    assert scenarios["load_adaptive"]["adaptive"] is True
    assert scenarios["load_fixed"]["adaptive"] is False


def test_grade_sync_benchmark_refuses_nonsense_sizes():
    assert "--students must be 1 to 100000" in refused(GRADE_SYNC_BENCHMARK, "--students", "0")


def test_grade_sync_delivery_check_finds_missing_duplicated_refused_and_stray(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    from grade_sync import check_delivery

    item, other = "https://lms/item1", "https://lms/item2"

    def post(lineitem, user, accepted=1, refused=None):
        return {
            "lineitem": lineitem,
            "userId": user,
            "accepted": accepted,
            "refused": refused or {},
        }

    expected = {item: {"1", "2", "3", "4"}}
    good = check_delivery([post(item, u) for u in ("1", "2", "3", "4")], expected)
    assert good["ok"] is True and good["delivered_once"] == 4

    bad = check_delivery(
        [
            post(item, "1"),
            post(item, "2", accepted=2),  # sent twice
            post(item, "3", accepted=1, refused={"409": 1}),  # arrived, but also refused once
            post(other, "1"),  # not asked for
        ],  # "4" never arrived
        expected,
    )
    assert bad["ok"] is False
    assert (bad["missing"], bad["duplicated"], bad["refused"], bad["unexpected"]) == (1, 1, 1, 1)
    assert bad["delivered_once"] == 2
    assert bad["examples"]["missing"] == [f"{item} user 4"]
    assert bad["examples"]["duplicated"] == [f"{item} user 2"]


COURSE_MANAGE_BENCHMARK = BENCHMARK.parent / "course_manage.py"


def test_course_manage_benchmark_quick(tmp_path):
    proc, report = run_quick(COURSE_MANAGE_BENCHMARK, tmp_path)
    assert "checks: all passed" in proc.stdout
    assert report["all_ok"] is True
    assert list(report["sizes"]) == ["3x2"]
    result = report["sizes"]["3x2"]
    assert result["size"]["students"] == 3 and result["size"]["assignments"] == 2
    backup = result["backup"]
    # Every file of the course and its exchange is in the backup, nothing left out.
    assert backup["ours"]["files"] == result["size"]["files"] and backup["ours"]["skipped"] == []
    for name in ("ours", "make_archive", "tarfile_level6"):
        assert backup[name]["archive_bytes"] > 0, name
        assert set(backup[name]["memory"]) >= {"peak_rss_mb", "ru_maxrss_mb"}, name
    assert backup["ratio_ours_over_make_archive"] is not None
    imports = result["import"]
    assert imports["from_course"]["ok"] and imports["from_backup"]["ok"]
    assert imports["from_course"]["archive_reads"] == 0
    assert imports["from_backup"]["archive_reads"] >= 1
    assert imports["copytree"]["files"] == imports["tar_extract"]["files"] > 0
    reset = result["reset"]
    assert reset["state"] == "finished" and reset["problems"] == []
    assert list(reset["steps_s"]) == [
        "backup",
        "gradebook",
        "course files",
        "exchange",
        "hub group",
        "registry",
    ]
    assert all(reset["checks"].values()), reset["checks"]


def test_course_manage_benchmark_refuses_nonsense_sizes():
    assert "is not a course size" in refused(COURSE_MANAGE_BENCHMARK, "--sizes", "50")


AUTOGRADE_BENCHMARK = BENCHMARK.parent / "autograde.py"


def test_autograde_benchmark_quick(tmp_path):
    proc, report = run_quick(AUTOGRADE_BENCHMARK, tmp_path)
    assert "overhead sandboxed/unsandboxed" in proc.stdout
    assert report["all_ok"] is True
    result = report["result"]
    for mode in ("sandboxed", "unsandboxed"):
        m = result["modes"][mode]
        assert m["submissions"] == 4 and m["scores_ok"] and m["failed_batches"] == 0, m
        assert m["peak_mb"] > 0 and m["per_submission_s"] > 0
    assert result["ratio_sandboxed_over_unsandboxed"] > 0


def test_autograde_benchmark_refuses_nonsense_sizes():
    assert "--batch must be 1 to --submissions" in refused(
        AUTOGRADE_BENCHMARK, "--submissions", "3", "--batch", "5"
    )


REQUEST_LIMITS_BENCHMARK = BENCHMARK.with_name("request_limits.py")


def test_request_limits_benchmark_refuses_nonsense_sizes():
    assert "--requests must be 1 or more" in refused(REQUEST_LIMITS_BENCHMARK, "--requests", "0")
    assert "--size-mb must be 1 or more" in refused(REQUEST_LIMITS_BENCHMARK, "--size-mb", "0")


@pytest.mark.slow
def test_proxy_benchmark_quick(tmp_path):
    import os
    import shutil

    if not shutil.which("npm"):
        if os.environ.get("CI"):
            pytest.fail("npm is not installed: scripts/test.sh installs it on CI")
        pytest.skip("npm is not installed (apt-get install npm)")
    proxy = BENCHMARK.parent / "proxy.py"
    out = tmp_path / "proxy.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(proxy),
            "--quick",
            "--requests",
            "50",
            "--large",
            "64",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    for size in ("1KB", "64KB"):
        assert set(report["results"][size]) == {"direct", "pypi", "npm"}
        for name, result in report["results"][size].items():
            assert result["requests"] == 50 and result["failures"] == 0, (size, name)
        assert report["ratios"][size] > 0
    assert "npm/pypi throughput" in proc.stdout
