"""Benchmark: nbgrader autograding with student code in the sandbox against without it.

    .venv/bin/python benchmarks/autograde.py [--submissions 100] [--batch 10] [--json out.json]

Two identical courses are made with Ananke's own course code (``ensure_course_files``,
``enrol_students``) and the shipped lab config, each with the same ``--submissions``
submissions of a realistic notebook: a CSV data file read with ``csv``, statistics,
a grade-bucketing function, a small simulation, printed tables, five graded test cells
(with hidden tests), and a wrong answer in every fourth submission. Then real
``nbgrader autograde`` (a new process per batch, as the formgrader's button or the
command line runs it) grades them in batches of ``--batch`` students, the two courses
taking turns batch by batch so that a machine that gets busier hits both alike:

- **sandboxed**: the shipped configuration (``SandboxedExecute`` and the
  ``ananke-sandbox`` provisioner: bubblewrap, IPC transport, limits);
- **unsandboxed**: the same with ``ANANKE_AUTOGRADE_SANDBOX=off`` (nbgrader's kernel as
  the grader's own process): the baseline, measured in the same run.

Reported: seconds per submission (wall time of the batches over the submissions), the
ratio sandboxed/unsandboxed (the goal is under 1.5x), the peak memory of the process
tree of one autograde run (nbgrader, its kernel, and in the sandbox prlimit/bubblewrap),
and a check that both courses got the same, expected scores.

See benchmarks/README.md.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from report import add_output_arguments, finish, parse_sizes, publish, report_header, work_directory

from ananke_hub.courses import nbgrader_setup
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.settings import CourseSettings

REPO = Path(__file__).resolve().parents[1]
LAB_CONFIG = REPO / "ananke_hub" / "lab" / "jupyter"
COURSE_ID = "c-00000000bec4a4c0"
ASSIGNMENT = "ps1"
MODES = ("sandboxed", "unsandboxed")
#: Sizes of --quick: a smoke test of every measurement, not a measurement.
QUICK = dict(submissions=4, batch=2)
POINTS = 5

DATA = "student,hours,score\n" + "".join(
    f"s{i:03d},{(i * 37) % 20 + 1},{(i * 53) % 61 + 40}\n" for i in range(200)
)
CELLS = [
    # (kind, source, points or None)
    ("markdown", "# Problem set 1: study time and exam scores\n\nRead `scores.csv`.", None),
    (
        "code",
        "import csv\nimport random\nimport statistics\n\n"
        "with open('scores.csv') as f:\n    rows = list(csv.DictReader(f))\n"
        "hours = [int(r['hours']) for r in rows]\nscores = [int(r['score']) for r in rows]\n"
        "print(len(rows), 'students')",
        None,
    ),
    (
        "solution",
        "def mean_score(values):\n    ### BEGIN SOLUTION\n    return sum(values) / len(values)\n"
        "    ### END SOLUTION",
        None,
    ),
    (
        "test",
        "assert abs(mean_score(scores) - statistics.mean(scores)) < 1e-9\n"
        "### BEGIN HIDDEN TESTS\nassert mean_score([1, 2, 3]) == 2\n### END HIDDEN TESTS",
        1,
    ),
    (
        "solution",
        "def bucket(score):\n    ### BEGIN SOLUTION\n    if score >= 90:\n        return 'A'\n"
        "    if score >= 75:\n        return 'B'\n    if score >= 60:\n        return 'C'\n"
        "    return 'F'\n    ### END SOLUTION",
        None,
    ),
    (
        "test",
        "assert bucket(95) == 'A' and bucket(80) == 'B'\n### BEGIN HIDDEN TESTS\n"
        "assert bucket(60) == 'C' and bucket(59) == 'F'\n### END HIDDEN TESTS",
        1,
    ),
    (
        "solution",
        "def correlation(xs, ys):\n    ### BEGIN SOLUTION\n    mx, my = statistics.mean(xs), "
        "statistics.mean(ys)\n    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))\n"
        "    sx = sum((x - mx) ** 2 for x in xs) ** 0.5\n"
        "    sy = sum((y - my) ** 2 for y in ys) ** 0.5\n    return cov / (sx * sy)\n"
        "    ### END SOLUTION",
        None,
    ),
    (
        "test",
        "assert abs(correlation(hours, scores) - statistics.correlation(hours, scores)) < 1e-9",
        1,
    ),
    (
        "code",
        "table = {}\nfor s in scores:\n    table[bucket(s)] = table.get(bucket(s), 0) + 1\n"
        "for grade in sorted(table):\n    print(f'{grade}: {table[grade]:4d} ' + '#' * "
        "(table[grade] // 2))",
        None,
    ),
    (
        "solution",
        "def simulate(n, seed):\n    ### BEGIN SOLUTION\n    rng = random.Random(seed)\n"
        "    means = []\n    for _ in range(n):\n"
        "        sample = [rng.choice(scores) for _ in range(50)]\n"
        "        means.append(statistics.mean(sample))\n    return means\n    ### END SOLUTION",
        None,
    ),
    (
        "test",
        "means = simulate(2000, 1)\nassert len(means) == 2000\n"
        "assert abs(statistics.mean(means) - statistics.mean(scores)) < 1",
        1,
    ),
    (
        "test",
        "print(round(statistics.stdev(means), 3))\n### BEGIN HIDDEN TESTS\n"
        "assert simulate(10, 2) == simulate(10, 2)\n### END HIDDEN TESTS",
        1,
    ),
]


def source_notebook() -> str:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    meta = {"schema_version": 3, "task": False}
    for i, (kind, source, points) in enumerate(CELLS):
        nbgrader = {**meta, "grade_id": f"cell{i}", "locked": kind in ("test", "code")}
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
            continue
        nbgrader.update(solution=kind == "solution", grade=kind == "test")
        if points:
            nbgrader["points"] = points
        cell = nbformat.v4.new_code_cell(source)
        if kind != "code":
            cell.metadata["nbgrader"] = nbgrader
        nb.cells.append(cell)
    return nbformat.writes(nb)


def submission(released: str, wrong: bool) -> str:
    """The released notebook with the solutions filled in (the bucketing wrong if asked)."""
    import nbformat

    nb = nbformat.reads(released, as_version=4)
    answers = iter(source for kind, source, _ in CELLS if kind == "solution")
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            answer = next(answers).replace("    ### BEGIN SOLUTION\n", "")
            answer = answer.replace("\n    ### END SOLUTION", "")
            if wrong and "def bucket" in answer:
                answer = answer.replace(">= 75", ">= 85")  # bucket(80) is "C": one test fails
            cell.source = answer
    return nbformat.writes(nb)


class Course:
    def __init__(self, root: Path, mode: str):
        self.mode = mode
        layout = CourseLayout(
            homes_root=str(root / mode / "homes"), exchange_root=str(root / mode / "x")
        )
        self.paths = layout.course(COURSE_ID)
        nbgrader_setup.ensure_course_files(self.paths, COURSE_ID, CourseSettings())
        config = root / mode / "config"
        config.mkdir(parents=True, exist_ok=True)
        # No hub: course membership is not asked (nbgrader's NoAuthPlugin); the rest is
        # the shipped lab config.
        (config / "nbgrader_config.py").write_text(
            'c = get_config()  # noqa\nc.Authenticator.plugin_class = "nbgrader.auth.NoAuthPlugin"\n'
        )
        self.env = {
            **os.environ,
            "HOME": str(self.paths.home),
            "JUPYTER_CONFIG_PATH": os.pathsep.join([str(config), str(LAB_CONFIG)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop("JUPYTERHUB_USER", None)
        if mode == "unsandboxed":
            self.env["ANANKE_AUTOGRADE_SANDBOX"] = "off"

    def nbgrader(self, *argv: str) -> tuple[float, int, str, float]:
        """Run ``nbgrader argv``; wall seconds, exit status, output, peak MB of its tree."""
        import subprocess

        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbgrader", *argv],
            cwd=self.paths.home,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak = PeakMemory(proc.pid)
        out, _ = proc.communicate(timeout=3600)
        peak.stop()
        return time.monotonic() - started, proc.returncode, out, peak.mb


class PeakMemory:
    """The largest sum of RSS over a process and its descendants, sampled every 50 ms."""

    def __init__(self, pid: int):
        self.pid, self.mb = pid, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._done.wait(0.05):
            parents, rss = {}, {}
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                pid = int(entry.name)
                parents[pid] = int(fields[1])
                rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            tree, grew = {self.pid}, True
            while grew:
                more = {p for p, pp in parents.items() if pp in tree} - tree
                tree |= more
                grew = bool(more)
            self.mb = max(self.mb, sum(rss.get(p, 0) for p in tree) / (1 << 20))

    def stop(self):
        self._done.set()
        self._thread.join()


def prepare(root: Path, submissions: int, batch: int) -> tuple[dict[str, Course], list[str]]:
    from nbgrader.api import Gradebook

    # Batch k's students share the prefix b<k>s, so `--student b<k>s*` selects them.
    students = [f"b{i // batch:03d}s{i % batch:03d}" for i in range(submissions)]
    courses = {}
    for mode in MODES:
        course = Course(root, mode)
        home = course.paths.home
        (home / "source" / ASSIGNMENT).mkdir(parents=True, exist_ok=True)
        (home / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").write_text(source_notebook())
        (home / "source" / ASSIGNMENT / "scores.csv").write_text(DATA)
        nbgrader_setup.enrol_students(
            course.paths,
            [nbgrader_setup.StudentRecord(s, s, s, "Student", "") for s in students],
        )
        wall, status, out, _ = course.nbgrader("generate_assignment", ASSIGNMENT, "--force")
        if status:
            raise RuntimeError(f"generate_assignment failed:\n{out}")
        released = (home / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
        for i, student in enumerate(students):
            target = home / "submitted" / student / ASSIGNMENT
            target.mkdir(parents=True)
            (target / f"{ASSIGNMENT}.ipynb").write_text(submission(released, wrong=i % 4 == 3))
            (target / "scores.csv").write_text(DATA)
            (target / "timestamp.txt").write_text("2025-03-14 09:26:53.589793 UTC")
        with Gradebook(course.paths.gradebook_url, COURSE_ID) as gb:
            assert gb.find_assignment(ASSIGNMENT).max_score == POINTS
        courses[mode] = course
    return courses, students


def run(args, root: Path) -> dict:
    from nbgrader.api import Gradebook

    courses, students = prepare(root, args.submissions, args.batch)
    batches = [students[i : i + args.batch] for i in range(0, len(students), args.batch)]
    results = {m: {"wall_s": 0.0, "peak_mb": 0.0, "failed_batches": 0} for m in MODES}
    for k in range(len(batches)):
        # Alternate which course goes first, so neither always gets the warmer machine.
        for mode in MODES if k % 2 == 0 else reversed(MODES):
            pattern = f"b{k:03d}s*"
            wall, status, out, peak = courses[mode].nbgrader(
                "autograde", ASSIGNMENT, "--student", pattern
            )
            r = results[mode]
            r["wall_s"] += wall
            r["peak_mb"] = max(r["peak_mb"], peak)
            if status:
                r["failed_batches"] += 1
                r.setdefault("errors", []).append(out[-3000:])
        print(f"  batch {k + 1}/{len(batches)} done", flush=True)
    expected = {s: (POINTS if i % 4 != 3 else POINTS - 1) for i, s in enumerate(students)}
    for mode in MODES:
        with Gradebook(courses[mode].paths.gradebook_url, COURSE_ID) as gb:
            got = {
                s.student.id: s.score
                for s in gb.assignment_submissions(ASSIGNMENT)
                if s.student.id in expected
            }
        r = results[mode]
        r["submissions"] = len(students)
        r["per_submission_s"] = round(r["wall_s"] / len(students), 3)
        r["wall_s"] = round(r["wall_s"], 2)
        r["peak_mb"] = round(r["peak_mb"], 1)
        r["scores_ok"] = got == {s: float(v) for s, v in expected.items()}
        if not r["scores_ok"]:
            r["wrong_scores"] = {s: got.get(s) for s in expected if got.get(s) != expected[s]}
    return {
        "modes": results,
        "ratio_sandboxed_over_unsandboxed": round(
            results["sandboxed"]["wall_s"] / results["unsandboxed"]["wall_s"], 3
        ),
        "peak_ratio_sandboxed_over_unsandboxed": round(
            results["sandboxed"]["peak_mb"] / max(results["unsandboxed"]["peak_mb"], 1e-9), 3
        ),
    }


def render(report: dict) -> str:
    r = report["result"]
    lines = [
        f"Autograding {r['modes']['sandboxed']['submissions']} submissions "
        f"(batches of {report['parameters']['batch']}, running as "
        f"{'root: throwaway uids' if report['running_as_root'] else 'a user: user namespace'})",
        f"  {'':12} {'s/submission':>13} {'wall s':>8} {'peak MB':>8} {'scores':>7}",
    ]
    for mode in MODES:
        m = r["modes"][mode]
        lines.append(
            f"  {mode:12} {m['per_submission_s']:>13.3f} {m['wall_s']:>8.1f} "
            f"{m['peak_mb']:>8.1f} {'ok' if m['scores_ok'] else 'WRONG':>7}"
        )
    lines.append(
        f"  overhead sandboxed/unsandboxed: {r['ratio_sandboxed_over_unsandboxed']:.2f}x per "
        f"submission (goal < 1.5x), peak memory {r['peak_ratio_sandboxed_over_unsandboxed']:.2f}x"
    )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Autograde submissions with nbgrader, sandboxed and unsandboxed, in the "
        "same run."
    )
    p.add_argument("--submissions", type=int, default=100, help="submissions per course (100)")
    p.add_argument("--batch", type=int, default=10, help="students per autograde run (10)")
    p.add_argument(
        "--quick", action="store_true", help="smoke-test sizes: 4 submissions, batches of 2"
    )
    add_output_arguments(p, "the two courses", "a check failed")
    args = parse_sizes(p, argv, QUICK)
    if not 1 <= args.submissions <= 2000:
        p.error("--submissions must be 1 to 2000")
    if not 1 <= args.batch <= args.submissions:
        p.error("--batch must be 1 to --submissions")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    root = work_directory(args.workdir, "ananke-bench-autograde-")
    started = time.monotonic()
    report = report_header("autograde", args, "nbgrader")
    report["running_as_root"] = os.geteuid() == 0
    try:
        report["result"] = run(args, root)
    except (OSError, RuntimeError) as exc:
        print(f"benchmark aborted: {exc} (files in {root})", file=sys.stderr)
        return 2
    report["duration_s"] = round(time.monotonic() - started, 1)
    modes = report["result"]["modes"]
    problems = [
        f"{mode}: {m['failed_batches']} autograde run(s) failed or scores were wrong"
        for mode, m in modes.items()
        if m["failed_batches"] or not m["scores_ok"]
    ]
    report["all_ok"] = not problems
    publish(report, render(report), args)
    if problems:
        print(json.dumps({m: modes[m].get("errors", [])[:1] for m in modes}, indent=1)[:4000])
    return finish(args, root, problems, "the courses")


if __name__ == "__main__":
    sys.exit(main())
