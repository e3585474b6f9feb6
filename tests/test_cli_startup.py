"""`ananke` starts without the database stack unless a command needs it.

A container admin's `ananke container ...` and a host admin's `ananke host ...` only
build podman arguments and read config files; importing SQLAlchemy, alembic or
JupyterHub for them cost seconds of CPU per command on a host and minutes under the VM
test's emulation (the `ananke lms` decorator imported the registrations at import).
"""

import subprocess
import sys

HEAVY = ("sqlalchemy", "alembic", "jupyterhub", "jsonschema")


def imported_by(statement: str) -> list[str]:
    probe = (
        f"import sys\n{statement}\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_cli_module_imports_no_database_stack():
    assert imported_by("import ananke_hub.cli") == "[]"


def test_container_command_runs_without_the_database_stack(tmp_path):
    statement = (
        "import ananke_hub.cli as cli\n"
        "try:\n"
        f"    cli.main(['container', '--containers-dir', {str(tmp_path)!r}, 'list'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert imported_by(statement) == "[]"
