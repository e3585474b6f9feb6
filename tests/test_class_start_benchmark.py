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
