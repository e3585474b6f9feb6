"""benchmarks/class_start.py runs end to end at smoke-test size and reports every student.

No timing is asserted: the numbers are the benchmark's output, not a test result.
"""

from pathlib import Path

import pytest
from test_benchmarks import refused, run_quick

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "class_start.py"


@pytest.mark.slow
def test_class_start_benchmark_quick(tmp_path):
    proc, report = run_quick(BENCHMARK, tmp_path, "--only", "ours")
    ours = report["classes"]["ours"]
    assert ours["students"] == 3 and ours["ok"] == 3, ours["errors"]
    assert ours["click_to_lab_ms"]["n"] == 3
    assert ours["labs_running"] == 3
    assert all(s["ok"] and s["user"].startswith("u") for s in ours["samples"])
    assert "A lecture starts: 3 students" in proc.stdout


def test_class_start_benchmark_refuses_nonsense_sizes():
    assert "--students must be 1 or more" in refused(BENCHMARK, "--students", "0")


def test_the_systemd_variant_has_no_upstream_stack():
    assert "--spawner systemd runs ours only" in refused(
        BENCHMARK, "--spawner", "systemd", "--only", "upstream"
    )


def test_a_student_waits_longer_than_the_hub_may_take_to_start_a_lab(monkeypatch):
    """The hub's start_timeout starts at the spawn request, after the login: a student who
    gives up at the same number of seconds from the click is counted as failed although
    the hub still delivers the lab (two of 60 at N=60 on a loaded machine)."""
    from ananke_hub.fragments import load_fragments
    from ananke_hub.paths import SHIPPED_CONFIG_DIR

    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    from class_start import parse_args

    start_timeout = load_fragments(SHIPPED_CONFIG_DIR).config.Spawner.start_timeout
    args = parse_args([])
    assert args.timeout >= start_timeout + 60
    assert parse_args(["--timeout", "30"]).timeout == 30
