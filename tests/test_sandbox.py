"""The autograding sandbox's parts, one notebook at a time in this process.

tests/test_autograde_sandbox.py attacks it through real nbgrader runs; here: refusals,
the kernel's view, what is copied into it, and the opt-out.
"""

import json
import logging
import os
import shutil
import sys

import nbformat
import pytest

from ananke_hub.lab.sandbox import bubblewrap, provisioner
from ananke_hub.lab.sandbox.execute import SandboxedExecute

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="needs bubblewrap (apt-get install bubblewrap; scripts/test.sh installs it)",
)


def notebook(source: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source)]
    return nb


def run(source: str, path, **traits) -> str:
    """Execute one cell with nbgrader's sandboxed executor; its text output."""
    executor = SandboxedExecute(timeout=60, **traits)
    nb, _ = executor.preprocess(notebook(source), {"metadata": {"path": str(path)}})
    out = []
    for output in nb.cells[0].outputs:
        out.append(output.get("text") or f"{output.get('ename')}: {output.get('evalue')}")
    return "".join(out)


@pytest.fixture
def clean_probe(monkeypatch):
    monkeypatch.setattr(provisioner, "_probed", {})


def test_without_bubblewrap_autograding_is_refused(tmp_path, monkeypatch, clean_probe):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no prlimit
    monkeypatch.delenv(provisioner.BACKEND_ENV, raising=False)
    with pytest.raises(bubblewrap.SandboxUnavailable) as info:
        run("print('never')", tmp_path)
    message = str(info.value)
    assert "bubblewrap" in message and "apt-get install bubblewrap" in message
    assert "refused rather than run unsandboxed" in message
    assert "ANANKE_AUTOGRADE_SANDBOX=off" in message


def test_a_backend_that_does_not_exist_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(provisioner.BACKEND_ENV, "docker")
    with pytest.raises(bubblewrap.SandboxUnavailable, match="'docker' is not one of auto"):
        run("print('never')", tmp_path)


def test_the_opt_out_runs_unconfined_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(provisioner.BACKEND_ENV, "off")
    (tmp_path / "data.txt").write_text("next to the notebook")
    with caplog.at_level(logging.WARNING):
        out = run("import os\nprint(os.getcwd())", tmp_path)
    assert out.strip() == str(tmp_path)  # the notebook's own directory, not a copy
    assert "Sandbox OFF" in caplog.text and "unconfined" in caplog.text


@needs_bwrap
def test_the_kernel_sees_a_copy_of_its_folder_and_nothing_of_the_grader(
    tmp_path, monkeypatch, clean_probe
):
    monkeypatch.delenv(provisioner.BACKEND_ENV, raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "grader-secret-token")
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n1,2\n")
    secret = tmp_path / "gradebook.db"
    secret.write_text("grades")
    os.symlink(secret, folder / "link-to-gradebook")
    os.mkfifo(folder / "fifo")
    out = run(
        "import json, os\n"
        "print(json.dumps(sorted(os.listdir('.'))))\n"
        "print(open('data.csv').read().splitlines()[1])\n"
        "print('token' if 'JUPYTERHUB_API_TOKEN' in os.environ else 'no token')\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists({str(folder)!r}))\n"
        "open('written.txt', 'w').write('x')\n"
        "print(os.getuid() != 0)\n",
        folder,
    )
    lines = out.splitlines()
    listed = json.loads(lines[0])
    # The data file and the kernel's sockets; no link, no FIFO.
    assert "data.csv" in listed and "link-to-gradebook" not in listed and "fifo" not in listed
    assert lines[1] == "1,2"
    assert lines[2] == "no token"
    assert lines[3] == "False False"  # neither the gradebook nor the real folder
    assert lines[4] == "True"  # never root
    assert not (folder / "written.txt").exists()  # the copy was written, then removed
    assert not any(p.name.startswith("ananke-sandbox-") for p in tmp_path.iterdir())


def test_python_dirs_never_include_the_home_or_the_notebook_folder(tmp_path, monkeypatch):
    home = tmp_path / "grader"
    (home / "lib").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(tmp_path), str(home / "lib"), *sys.path])
    dirs = provisioner._python_dirs([str(home)])
    # tmp_path contains the home: left out; a directory inside the home holds code only.
    assert str(tmp_path) not in dirs
    assert str(home / "lib") in dirs
    assert not any(d == "/usr" or d.startswith("/usr/") for d in dirs)


def test_the_course_directory_is_never_copied_into_the_sandbox(tmp_path, monkeypatch, clean_probe):
    """nbclient runs the kernel in the notebook's folder; if that is the course directory
    (the working directory, with the gradebook) or the home, nothing is copied."""
    monkeypatch.delenv(provisioner.BACKEND_ENV, raising=False)
    monkeypatch.setattr(bubblewrap, "probe", lambda tools, uid: True)
    monkeypatch.setattr(bubblewrap, "find_tools", lambda: bubblewrap.Tools("b", "p", "s"))
    (tmp_path / "gradebook.db").write_text("grades")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(bubblewrap.SandboxUnavailable, match="not copied into the sandbox"):
        run("print('never')", tmp_path)
    with pytest.raises(bubblewrap.SandboxUnavailable, match="not copied into the sandbox"):
        run("print('never')", tmp_path.parent)
    assert not any(p.name.startswith("ananke-sandbox-") for p in tmp_path.iterdir())


def test_the_kernel_environment_is_built_from_nothing_but_the_pass_list(tmp_path, monkeypatch):
    """Both backends (bubblewrap and the systemd broker) give the kernel this environment:
    the locale and library paths of PASS_ENV, a home in the scratch directory, and none
    of the grader's variables (the hub token above all)."""
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "grader-secret")
    monkeypatch.setenv("HOME", "/home/grader")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("TZ", raising=False)
    scratch = str(tmp_path / "scratch")
    env = provisioner.kernel_environment(scratch)
    assert "grader-secret" not in env.values()
    assert set(env) - set(provisioner.PASS_ENV) == {
        "HOME",
        "TMPDIR",
        "USER",
        "PATH",
        "MALLOC_ARENA_MAX",
        "MPLCONFIGDIR",
    }
    assert env["LANG"] == "C.UTF-8" and "TZ" not in env
    assert env["HOME"] == scratch and env["USER"] == "student"
    assert env["TMPDIR"] == bubblewrap.SANDBOX_TMP
    assert env["MPLCONFIGDIR"].startswith(scratch + os.sep)
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
